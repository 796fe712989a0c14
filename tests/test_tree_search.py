"""Step-level tree search (PathFinder): the search on a scripted model, then on a real (tiny) one
through the hf teacher and ``cotfactory generate --search tree``."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from cotfactory.decoders.tree_search import (
    Step,
    StepDraw,
    TreeSearch,
    TreeSettings,
    ngram_similarity,
    run_searches,
    token_shares,
)
from cotfactory.hashing import derive_seed

SEED = 11
Script = Callable[[str, int, int], tuple[str, float, str | None]]  # (path label, child, attempt) → step


def scripted(settings: TreeSettings, script: Script, seed: int = SEED) -> Callable[[Sequence[StepDraw]], list[Step]]:
    """A model that answers each draw from a table: which child and attempt a draw is, is read off its seed."""

    def draw_steps(draws: Sequence[StepDraw]) -> list[Step]:
        steps = []
        for draw in draws:
            child, attempt = next(
                (c, a)
                for c in range(settings.branch)
                for a in (0, 1)
                if derive_seed(seed, "tree", draw.path.position, c, a) == draw.seed
            )
            text, per_token, end = script(draw.path.label, child, attempt)
            tokens = tuple(range(len(text.split())))
            steps.append(Step(tokens, text, per_token * len(tokens), end))
        return steps

    return draw_steps


def search(settings: TreeSettings, script: Script, max_tokens: int = 100) -> TreeSearch:
    tree = TreeSearch((), settings, 0.7, 1.0, SEED, max_tokens)
    run_searches([tree], scripted(settings, script), max_rows=64)
    return tree


def test_the_buffer_keeps_the_best_length_normalized_paths() -> None:
    settings = TreeSettings(branch=3, beam=2, max_depth=2)
    per_token = {"": [-1.0, -0.5, -2.0], "1": [-0.1, -3.0, -0.4], "0": [-0.2, -0.3, -5.0]}

    def script(label: str, child: int, attempt: int) -> tuple[str, float, str | None]:
        return f"step {label or 'root'} child {child}\n", per_token[label][child], None

    tree = search(settings, script)
    # depth 1 keeps children 1 and 0 (-0.5, -1.0), not 2 (-2.0); depth 2 draws 3 children of each
    assert tree.stats.draws == 3 + 6
    # each path's score is its tokens' mean: 4 tokens per step
    scores = {p.label: round(p.score, 3) for p in tree.buffer}
    assert scores == {"1.0": round((-0.5 - 0.1) / 2, 3), "1.2": round((-0.5 - 0.4) / 2, 3)}
    assert all(p.end == "length" for p in tree.buffer)  # cut at max_depth
    assert tree.stats.depth == 2


def test_a_repeated_step_is_drawn_again_and_a_child_repeating_twice_is_dropped() -> None:
    settings = TreeSettings(branch=2, beam=4, max_depth=2)

    def script(label: str, child: int, attempt: int) -> tuple[str, float, str | None]:
        if label == "":
            return f"first we add {child} apples\n", -1.0, None
        if child == 0:  # repeats its parent's step once, then writes a new one
            new = "then we multiply the boxes\n" if attempt else f"first we add {label} apples\n"
            return new, -1.0, None
        return f"First we add {label} apples!\n", -1.0, None  # repeats twice (case and punctuation aside)

    tree = search(settings, script)
    assert tree.stats.repeats == 2 + 2  # both children of both depth-1 paths repeat once
    assert tree.stats.dropped == 2  # child 1 of each repeats again
    assert tree.stats.draws == 2 + 4 + 4
    assert sorted(p.label for p in tree.buffer) == ["0.0", "1.0"]
    assert all(p.steps[1] == "then we multiply the boxes\n" for p in tree.buffer)


def test_finished_paths_stay_in_the_buffer_and_are_not_extended() -> None:
    settings = TreeSettings(branch=2, beam=2, max_depth=3)
    extended: list[str] = []

    def script(label: str, child: int, attempt: int) -> tuple[str, float, str | None]:
        extended.append(label)
        if label == "":
            return (f"the answer is {child}", -0.1, "stop") if child == 0 else ("keep going\n", -1.0, None)
        return f"more work {label} {child} {len(label)}\n", -2.0, None

    tree = search(settings, script)
    assert "0" not in extended  # the finished path is never drawn from
    labels = {p.label: p.end for p in tree.buffer}
    assert labels["0"] == "stop"
    assert len(tree.buffer) == 2 and [p.end for p in tree.buffer].count("length") == 1


def test_a_path_out_of_tokens_ends_and_draws_ask_only_for_what_it_has_left() -> None:
    settings = TreeSettings(branch=1, beam=1, max_depth=5)
    asked: list[int] = []

    def draw_steps(draws: Sequence[StepDraw]) -> list[Step]:
        asked.extend(d.max_tokens for d in draws)
        return [Step(tuple(range(min(4, d.max_tokens))), f"step {len(asked)}\n", -1.0) for d in draws]

    tree = TreeSearch((), settings, 0.7, 1.0, SEED, max_tokens=10)
    run_searches([tree], draw_steps, max_rows=8)
    assert asked == [10, 6, 2]
    assert tree.buffer[0].end == "length" and len(tree.buffer[0].token_ids) == 10


def test_candidates_are_ranked_by_similarity_to_the_others() -> None:
    settings = TreeSettings(branch=3, beam=3, max_depth=1)
    texts = ["so 3 plus 4 makes 7\n", "the sky is blue today\n", "so 3 plus 4 is 7\n"]

    def script(label: str, child: int, attempt: int) -> tuple[str, float, str | None]:
        return texts[child], [-0.1, -0.05, -0.2][child], "stop"

    ranked = search(settings, script).candidates()
    assert [c.path.label for c in ranked] == ["0", "2", "1"]  # the two alike first, the better scored leading
    assert ranked[0].consistency == pytest.approx(
        ngram_similarity(texts[0], texts[2]) + ngram_similarity(texts[0], texts[1])
    )
    assert ranked[2].consistency == 0.0


def test_the_search_is_a_function_of_its_seed_whatever_it_is_batched_with() -> None:
    settings = TreeSettings(branch=3, beam=3, max_depth=4)
    words = ["add", "the", "apples", "then", "multiply", "by", "boxes", "and", "count", "eggs"]

    def draw_steps(draws: Sequence[StepDraw]) -> list[Step]:
        steps = []
        for draw in draws:
            rng = random.Random(draw.seed)
            n = rng.randint(2, 6)
            text = " ".join(rng.choice(words) for _ in range(n)) + "\n"
            steps.append(Step(tuple(range(n)), text, -rng.random() * n, "stop" if rng.random() < 0.2 else None))
        return steps

    def trees(seeds: list[int], max_rows: int) -> list[list[tuple[str, tuple[str, ...]]]]:
        searches = [TreeSearch((), settings, 0.8, 0.95, s, 200) for s in seeds]
        run_searches(searches, draw_steps, max_rows)
        return [[(c.path.label, c.path.steps) for c in t.candidates()] for t in searches]

    alone = trees([5], 1)[0]
    assert trees([1, 5, 9], 7)[1] == alone  # batched with others, cut differently: the same tree
    assert trees([6], 1)[0] != alone
    assert 1 <= len(alone) <= 3


def test_token_shares_add_up() -> None:
    assert token_shares(10, 4) == [3, 3, 2, 2]
    assert sum(token_shares(7, 3)) == 7


# --- a real model -----------------------------------------------------------------------------------


def test_hf_tree_gives_the_same_candidates_alone_or_beside_other_trees(tiny_llama: Path) -> None:
    from cotfactory.teachers.hf import HFOptions, HFTeacher

    teacher = HFTeacher(HFOptions(model=str(tiny_llama), batch_size=5, device="cpu"))
    settings = TreeSettings(branch=2, beam=2, max_depth=3, delimiter=" ")
    prompts = [teacher.tokenizer(q)["input_ids"] for q in ["Tom has 3 apples.", "A box holds 6 eggs. How"]]

    def run(seeds_prompts: list[tuple[int, list[int]]], rows: int) -> list[list[tuple[int, ...]]]:
        searches = [TreeSearch(p, settings, 1.0, 1.0, s, 12) for s, p in seeds_prompts]
        run_searches(searches, lambda draws: teacher._draw_steps(draws, settings.delimiter, []), rows)
        return [[c.path.token_ids for c in t.candidates()] for t in searches]

    alone = run([(3, prompts[0])], 2)[0]
    assert run([(4, prompts[1]), (3, prompts[0])], 5)[1] == alone
    assert alone and all(0 < len(ids) <= 12 for ids in alone)


def _generate(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cotfactory", "generate", *args], capture_output=True, text=True, timeout=300
    )


def test_generate_search_tree_stores_each_candidate_with_its_tree_position(tiny_llama: Path, tmp_path: Path) -> None:
    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "question": q, "answer": a}) + "\n"
            for i, (q, a) in enumerate([("Tom has 3 apples and buys 4. How many?", "7"), ("6 eggs in 5 boxes?", "30")])
        )
    )
    out = tmp_path / "run"
    args = [
        "--input", str(problems), "--answer-type", "number", "--teacher", "hf", "--model", str(tiny_llama),
        "--search", "tree", "--beam", "3", "--branch", "2", "--max-depth", "3", "--step-delimiter", " ",
        "--max-tokens", "16", "--temperatures", "1.0", "--seeds", "0", "--seeds", "1", "--out", str(out),
    ]  # fmt: skip
    first = _generate(args)
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 3  # problems × seeds × beam
    for members in _by_tree(rows).values():
        meta = [json.loads(r["metadata"])["tree"] for r in members]
        assert sorted(m["rank"] for m in meta if "rank" in m) == list(range(meta[0]["candidates"]))
        assert len({m["tree_tokens"] for m in meta}) == 1
        assert sum(r["completion_tokens"] for r in members) == meta[0]["tree_tokens"]  # the tree's spend, shared
        kept = [r for r in members if r["error"] is None]
        assert len({m["position"] for m in meta if "position" in m}) == len(kept)
        assert all(r["mode"] == "tree" for r in members)
    again = _generate(args)
    assert again.returncode == 0
    assert "new this run                 │ 0" in again.stderr
    assert [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()] == rows


def _by_tree(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    trees: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        trees.setdefault((row["problem_id"], row["seed"]), []).append(row)
    return trees


@pytest.mark.parametrize(
    ("teacher", "says"),
    [
        (["--teacher", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"], "completion-form template"),
        (["--teacher", "replay", "--replay", "x.jsonl"], "teacher 'replay' has none"),
    ],
)
def test_search_tree_needs_step_logprobs(tmp_path: Path, teacher: list[str], says: str) -> None:
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"id": "p", "question": "q", "answer": "1"}) + "\n")
    result = _generate(["--input", str(problems), *teacher, "--search", "tree", "--out", str(tmp_path / "run")])
    assert result.returncode == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
