"""Answer gain: how much a rationale raises a small LM's belief in the sample's own answer.

score = log p(answer | question, rationale) − log p(answer | question), with plain prompts::

    Q: {question}\\nA: {rationale} The answer is {answer}.
    Q: {question}\\nA: The answer is {answer}.

and log p summed over the tokens of `` {answer}`` (found by character offsets, so the final "." is
not counted even where it would merge). A rationale that explains its answer scores above zero;
one that argues for something else, below. Both prompts of every item go through one right-padded
forward pass per batch; only the answer positions' logits are normalised. A prompt is run once per
batch however many items hold it: the samples of a problem that reach the same answer share their
"without" prompt, so a grid of N samples per problem runs ~N + (distinct answers) rows, not 2N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cotfactory.errors import TeacherError
from cotfactory.model_loading import load_causal_lm, load_tokenizer, model_label, quiet_transformers, resolve_model_path
from cotfactory.records import Problem, lettered_choices
from cotfactory.scorers.base import Score, ScoreItem, Scorer

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig

#: Bump when the prompts change: it is part of the scores' cache key.
PROMPT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Scored:
    """One prompt, tokenised: its ids and which of them are answer tokens."""

    ids: list[int]
    targets: list[bool]

    @property
    def answer_tokens(self) -> int:
        return sum(self.targets)


def question_block(problem: Problem) -> str:
    """The question, with choice problems' options on one line after it: '(a) x (b) y'."""
    if not problem.choices:
        return problem.question
    return f"{problem.question}\n{lettered_choices(problem.choices)}"


def prompts(problem: Problem, rationale: str, answer: str) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """(with, without) prompts, each as (context, " {answer}", ".") so the answer span is known."""
    question = question_block(problem)
    with_rationale = (f"Q: {question}\nA: {rationale} The answer is", f" {answer}", ".")
    without = (f"Q: {question}\nA: The answer is", f" {answer}", ".")
    return with_rationale, without


class AnswerGainScorer(Scorer):
    name = "answer-gain"

    def __init__(self, config: FilterConfig):
        super().__init__(config)
        quiet_transformers()
        self.label = model_label(config.scorer_model)
        location = resolve_model_path(config.scorer_model)
        self.tokenizer = load_tokenizer(location)
        if not self.tokenizer.is_fast:
            raise TeacherError(f"answer-gain model '{self.label}': needs a fast tokenizer (tokenizer.json)")
        self.model = load_causal_lm(location, config.device)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = int(limit) if isinstance(limit, int) and limit > 0 else None
        self.rows_run = 0  # prompts the model ran (identical prompts of a batch once)

    def settings(self) -> dict[str, Any]:
        return {"model": self.label, "format": PROMPT_FORMAT_VERSION}

    def score(self, items: list[ScoreItem]) -> list[Score]:
        results: list[Score] = [(None, {"reason": "no_answer"}) for _ in items]
        todo = [i for i, item in enumerate(items) if item.sample.answer is not None]
        size = self.config.reward_batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            for index, result in zip(chunk, self._score_batch([items[i] for i in chunk]), strict=True):
                results[index] = result
        return results

    def encode(self, parts: tuple[str, str, str]) -> Scored:
        """Token ids of context + answer + ".", marking tokens that overlap the answer's characters."""
        context, answer, end = parts
        text = context + answer + end
        encoded = self.tokenizer(text, return_offsets_mapping=True)
        start, stop = len(context), len(context) + len(answer)
        targets = [stop > lo and hi > start and hi > lo for lo, hi in encoded["offset_mapping"]]
        ids = list(encoded["input_ids"])
        if self.max_length is not None and len(ids) > self.max_length:  # keep the end: the answer is there
            ids, targets = ids[-self.max_length :], targets[-self.max_length :]
        return Scored(ids, targets)

    def _score_batch(self, items: list[ScoreItem]) -> list[Score]:
        rows: list[Scored] = []
        for item in items:
            sample = item.sample
            assert sample.answer is not None
            for parts in prompts(item.problem, sample.rationale or sample.text, sample.answer):
                rows.append(self.encode(parts))
        logps = self.answer_logprobs(rows)
        results: list[Score] = []
        for k in range(len(items)):
            with_, without = logps[2 * k], logps[2 * k + 1]
            details = {"with": with_, "without": without, "answer_tokens": rows[2 * k].answer_tokens}
            results.append((with_ - without, details))
        return results

    def answer_logprobs(self, rows: list[Scored]) -> list[float]:
        """Summed log-probabilities of each row's answer tokens, from one right-padded forward pass over
        the distinct rows."""
        distinct: dict[tuple[tuple[int, ...], tuple[bool, ...]], int] = {}
        index = [distinct.setdefault((tuple(r.ids), tuple(r.targets)), len(distinct)) for r in rows]
        sums = self._forward([Scored(list(ids), list(targets)) for ids, targets in distinct])
        self.rows_run += len(distinct)
        return [sums[i] for i in index]

    def _forward(self, rows: list[Scored]) -> list[float]:
        import torch

        width = max(len(row.ids) for row in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        targets = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, row in enumerate(rows):
            input_ids[r, : len(row.ids)] = torch.tensor(row.ids, dtype=torch.long)
            attention[r, : len(row.ids)] = 1
            targets[r, : len(row.ids)] = torch.tensor(row.targets, dtype=torch.bool)
        device = self.model.device
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            # position p predicts token p+1; the first token is never a target (there is a context)
            wanted = (targets & attention.bool())[:, 1:].to(device)
            row_index, position = wanted.nonzero(as_tuple=True)
            picked = torch.log_softmax(logits[row_index, position].float(), dim=-1)
            token_logps = picked.gather(1, input_ids.to(device)[row_index, position + 1].unsqueeze(1)).squeeze(1)
            sums = torch.zeros(len(rows), dtype=torch.float32, device=device).index_add_(0, row_index, token_logps)
        return [float(value) for value in sums.cpu()]
