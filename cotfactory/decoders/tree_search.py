"""Step-level tree search over reasoning paths (PathFinder, Golovneva et al. 2023).

A reasoning *step* ends at a delimiter (a newline by default). Depth by depth:

1. every live branch is extended by ``branch`` sampled steps, child ``j`` with its own sampling setting
   (temperatures spread around the request's, top-p alternating with a tighter one: PathFinder's
   "varied decoding");
2. a step nearly identical to an earlier step of its branch (word n-gram similarity ≥ ``repeat``) is
   drawn again with another seed; a child that repeats twice is dropped;
3. the children and the branches already finished compete for a buffer of ``beam`` paths, ranked by
   length-normalized log-probability (the mean log-probability of their tokens under the model at
   temperature 1).

The search stops when no branch in the buffer is live or at ``max_depth`` steps. The buffer's paths are
the candidates, ranked by their summed n-gram similarity to the other candidates (a soft
self-consistency: the path most like the others first). Every candidate is returned with its tree
position, so filters can still choose among them.

The search only says *which* steps to draw (``TreeSearch.pending``) and takes what was drawn
(``TreeSearch.take``): a model, a server or a scripted test stands behind ``draw_steps``, and many
searches advance together in one batch (``run_searches``). Every draw carries its own seed, derived
from the request's seed and the draw's place in the tree, so a search is a pure function of its
prompt, settings and seed, whatever it is batched with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cotfactory.hashing import derive_seed
from cotfactory.records import Request

WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class TreeSettings:
    branch: int = 3  # B: sampled steps per live branch and depth
    beam: int = 4  # W: paths kept after each depth, and the candidates returned
    max_depth: int = 8  # D: steps per path at most
    delimiter: str = "\n"  # a step ends at the first delimiter after some text
    repeat: float = 0.8  # n-gram similarity at which a step counts as a repeat of an earlier one
    step_tokens: int = 64  # tokens of one step at most (a longer step is cut there and the path goes on)

    def as_decoding(self) -> dict[str, object]:
        """The settings as a request's ``decoding`` entries (part of its key)."""
        return {
            "search": "tree",
            "branch": self.branch,
            "beam": self.beam,
            "max_depth": self.max_depth,
            "delimiter": self.delimiter,
            "repeat": self.repeat,
            "step_tokens": self.step_tokens,
        }

    @classmethod
    def from_decoding(cls, decoding: dict[str, object]) -> TreeSettings:
        return cls(
            branch=int(decoding["branch"]),  # type: ignore[call-overload]
            beam=int(decoding["beam"]),  # type: ignore[call-overload]
            max_depth=int(decoding["max_depth"]),  # type: ignore[call-overload]
            delimiter=str(decoding["delimiter"]),
            repeat=float(decoding["repeat"]),  # type: ignore[arg-type]
            step_tokens=int(decoding["step_tokens"]),  # type: ignore[call-overload]
        )


@dataclass(frozen=True)
class Path:
    """A branch of the tree: the steps drawn so far, their tokens and summed log-probability."""

    token_ids: tuple[int, ...] = ()
    steps: tuple[str, ...] = ()
    logprob: float = 0.0
    position: tuple[int, ...] = ()  # the child index taken at each depth
    end: str | None = None  # None: live; "stop": ended (EOS, stop string); "length": out of tokens

    @property
    def score(self) -> float:
        """Length-normalized log-probability."""
        return self.logprob / len(self.token_ids) if self.token_ids else float("-inf")

    @property
    def label(self) -> str:
        """The tree position as text: '0.2.1' is child 0, then its child 2, then that one's child 1."""
        return ".".join(str(i) for i in self.position)


@dataclass(frozen=True)
class StepDraw:
    """One step to draw after the prompt and ``path``."""

    prompt_ids: tuple[int, ...]
    path: Path
    temperature: float
    top_p: float
    seed: int
    max_tokens: int  # what the path has left, at most a step's tokens


@dataclass(frozen=True)
class Step:
    """What was drawn: the step's tokens and text, their summed log-probability and how it ended
    (None: at the delimiter, the path goes on). A server that gives no token ids gives placeholders (only
    their count is used) and ``spent``, the tokens it generated beyond the step (cut at the delimiter
    after it)."""

    token_ids: tuple[int, ...]
    text: str
    logprob: float
    end: str | None = None
    spent: int | None = None  # tokens generated for this step; default len(token_ids)


@dataclass
class Candidate:
    path: Path
    consistency: float  # summed n-gram similarity to the other candidates


@dataclass
class TreeStats:
    tokens: int = 0  # every drawn step's tokens, repeats included
    draws: int = 0
    repeats: int = 0  # steps drawn again for repeating an earlier step of their branch
    dropped: int = 0  # children dropped after repeating twice
    depth: int = 0


DrawSteps = Callable[[Sequence[StepDraw]], list[Step]]


def ngram_similarity(a: str, b: str, n: int = 2) -> float:
    """Jaccard similarity of the two texts' word n-grams (of words when a text is shorter than n)."""
    grams_a, grams_b = _ngrams(a, n), _ngrams(b, n)
    if not grams_a or not grams_b:
        return 0.0
    return len(grams_a & grams_b) / len(grams_a | grams_b)


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class TreeSearch:
    """One request's tree; ``pending`` → draw them → ``take``, until ``done``."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        settings: TreeSettings,
        temperature: float,
        top_p: float,
        seed: int,
        max_tokens: int,
    ):
        self.prompt_ids = tuple(prompt_ids)
        self.settings = settings
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.max_tokens = max_tokens
        self.buffer: list[Path] = [Path()]
        self.children: list[Path] = []
        self.stats = TreeStats()
        self._pending: list[tuple[Path, int, int]] = self._expand()  # (path, child, attempt)

    @property
    def done(self) -> bool:
        return not self._pending

    def pending(self) -> list[StepDraw]:
        return [self._draw(path, child, attempt) for path, child, attempt in self._pending]

    def take(self, steps: Sequence[Step]) -> None:
        """The steps drawn for ``pending()``, in its order."""
        again: list[tuple[Path, int, int]] = []
        for (path, child, attempt), step in zip(self._pending, steps, strict=True):
            self.stats.tokens += len(step.token_ids) if step.spent is None else step.spent
            self.stats.draws += 1
            if step.text.strip() and any(
                ngram_similarity(step.text, earlier) >= self.settings.repeat for earlier in path.steps
            ):
                if attempt == 0:
                    self.stats.repeats += 1
                    again.append((path, child, 1))
                else:
                    self.stats.dropped += 1
                continue
            self.children.append(self._extend(path, child, step))
        if again:
            self._pending = again
            return
        self._prune()
        self._pending = self._expand()

    def candidates(self) -> list[Candidate]:
        """The buffer's paths, most consistent with the others first (ties: higher score, then position)."""
        texts = [" ".join(p.steps) for p in self.buffer]
        scored = [
            Candidate(path, sum(ngram_similarity(texts[i], texts[j]) for j in range(len(texts)) if j != i))
            for i, path in enumerate(self.buffer)
        ]
        scored.sort(key=lambda c: (-c.consistency, -c.path.score, c.path.position))
        return scored

    def _draw(self, path: Path, child: int, attempt: int) -> StepDraw:
        temperature, top_p = varied_setting(self.temperature, self.top_p, child, self.settings.branch)
        seed = derive_seed(self.seed, "tree", path.position, child, attempt)
        left = self.max_tokens - len(path.token_ids)
        return StepDraw(self.prompt_ids, path, temperature, top_p, seed, min(left, self.settings.step_tokens))

    def _extend(self, path: Path, child: int, step: Step) -> Path:
        tokens = path.token_ids + step.token_ids
        end = step.end
        if end is None and len(tokens) >= self.max_tokens:
            end = "length"
        return Path(tokens, (*path.steps, step.text), path.logprob + step.logprob, (*path.position, child), end)

    def _prune(self) -> None:
        pool = [p for p in self.buffer if p.end is not None] + self.children
        pool.sort(key=lambda p: (-p.score, p.position))
        self.buffer = pool[: self.settings.beam]
        self.children = []
        self.stats.depth += 1

    def _expand(self) -> list[tuple[Path, int, int]]:
        if self.stats.depth >= self.settings.max_depth:
            self.buffer = [p if p.end is not None else _ended(p, "length") for p in self.buffer]
            return []
        return [(p, child, 0) for p in self.buffer if p.end is None for child in range(self.settings.branch)]


def _ended(path: Path, end: str) -> Path:
    return Path(path.token_ids, path.steps, path.logprob, path.position, end)


def varied_setting(temperature: float, top_p: float, child: int, branch: int) -> tuple[float, float]:
    """Child ``j`` of ``branch``: temperatures spread over 0.75–1.25 × the request's, and every odd child
    with top-p 0.9 (or the request's, if tighter)."""
    spread = 0.75 + 0.5 * child / (branch - 1) if branch > 1 else 1.0
    return round(temperature * spread, 4), (min(top_p, 0.9) if child % 2 else top_p)


def run_searches(searches: Sequence[TreeSearch], draw_steps: DrawSteps, max_rows: int) -> None:
    """Advance every search to its end, drawing the steps of all of them together, ``max_rows`` at a time."""
    while live := [s for s in searches if not s.done]:
        wanted = [search.pending() for search in live]
        draws = [draw for drawn in wanted for draw in drawn]
        steps: list[Step] = []
        for start in range(0, len(draws), max_rows):
            steps.extend(draw_steps(draws[start : start + max_rows]))
        for search, drawn in zip(live, wanted, strict=True):
            search.take(steps[: len(drawn)])
            steps = steps[len(drawn) :]


def token_shares(tokens: int, parts: int) -> list[int]:
    """``tokens`` split over ``parts`` as evenly as whole numbers allow, the first parts the larger."""
    return [tokens // parts + (1 if i < tokens % parts else 0) for i in range(parts)]


def tree_key(request: Request, settings_only: bool = False) -> str:
    """The tree a request's candidate belongs to (its key without the rank); or only its search settings."""
    decoding = {k: v for k, v in request.decoding.items() if k != "candidate"}
    if settings_only:
        return str(sorted(decoding.items()))
    return request.model_copy(update={"decoding": decoding}).key


def tree_metadata(candidate: Candidate, rank: int) -> dict[str, object]:
    """What a stored candidate records of its place in the tree."""
    path = candidate.path
    return {
        "position": path.label,
        "rank": rank,
        "score": round(path.score, 6),
        "consistency": round(candidate.consistency, 6),
        "path_tokens": len(path.token_ids),
    }


def tree_stats(search: TreeSearch, candidates: int) -> dict[str, int]:
    """What every request of a tree records of the whole search."""
    stats = search.stats
    return {
        "candidates": candidates,
        "tree_tokens": stats.tokens,
        "draws": stats.draws,
        "repeats": stats.repeats,
        "dropped": stats.dropped,
        "depth": stats.depth,
    }
