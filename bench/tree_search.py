"""Step-level tree search (`generate --search tree`, PathFinder) against self-consistency at equal teacher tokens.

synthetic — bench/distill_synthetic.py's chained sums ("What is 30 + 40 - 20?"), its data and helpers
imported, not copied. A `scratch:llama-small` teacher is trained on gold rationales for only
`--teacher-steps` steps (default 400, where it still slips: a teacher that is always right leaves nothing
to search for); its greedy held-out accuracy is printed. On `--problems` held-out problems:

- self-consistency: `generate` at T (default 0.7) with 16 seeds; for n in 1, 2, 4, 8, 16, the majority
  answer of the first n samples (ties: the earliest), and the tokens those n samples took;
- tree: `generate --search tree` (beam W, branch B, max depth D, steps ending at "."; T the same): the
  answer of the rank-0 candidate (the one most like the others), and the tree's tokens (every step drawn,
  repeats and pruned branches included: the `tree_tokens` the run records).

svamp — the embedded SmolLM2-135M-Instruct (or --model) on SVAMP's first --problems problems, zero-shot-cot,
steps ending at a newline; self-consistency up to --samples samples.

Prints each arm's accuracy with a 95 % Wilson interval and its mean teacher tokens per problem, the
self-consistency accuracy interpolated at the tree's tokens, and paired McNemar p values against the
self-consistency arms just below and above the tree's tokens. The teacher does not change between arms,
and neither do T or the problems.

    python bench/tree_search.py [synthetic] [--teacher-steps 400] [--problems 100] [--beam 4] [--branch 3]
                                [--max-depth 6] [--temperature 0.7] [--keep DIR]
    python bench/tree_search.py svamp [--problems 30] [--samples 8] [--max-tokens 160] [--beam 4] ...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import distill_synthetic as synthetic  # noqa: E402
from helpers import read_jsonl  # noqa: E402

from cotfactory.stats import format_accuracy, mcnemar_p  # noqa: E402

SC_SIZES = (1, 2, 4, 8, 16)
SVAMP = ROOT.parent / "shared" / "data" / "svamp" / "SVAMP.json"


def generate(model: Path | None, data: tuple[str, ...], run: Path, temperature: float, *extra: str) -> float:
    """`cotfactory generate` into ``run``; seconds taken."""
    started = time.perf_counter()
    synthetic.cli(
        "generate",
        *data,
        *("--teacher", "hf", *(("--model", model) if model else ()), "--device", "cpu"),
        *("--temperatures", str(temperature), "--out", run),
        *extra,
    )
    return time.perf_counter() - started


def right(row: dict) -> bool:
    from cotfactory.answers import answers_match
    from cotfactory.records import Problem

    problem = Problem(id=row["problem_id"], question=row["question"], gold=row["gold"], answer_type="number")
    return row["answer"] is not None and answers_match(row["answer"], row["gold"], problem)


def self_consistency(run: Path, sizes: tuple[int, ...]) -> dict[int, tuple[dict[str, bool], float, float]]:
    """n → (problem → the majority answer of its first n samples right, mean tokens per problem, share of
    problems with some right sample among them); a tie goes to the answer reached first."""
    by_problem: dict[str, list[dict]] = {}
    for row in read_jsonl(run / "samples.jsonl"):
        by_problem.setdefault(row["problem_id"], []).append(row)
    result = {}
    for n in sizes:
        correct, tokens, covered = {}, 0, 0
        for problem, rows in by_problem.items():
            first = sorted(rows, key=lambda r: r["seed"])[:n]
            covered += any(right(r) for r in first)
            answered = [r for r in first if r["answer"] is not None]
            votes = Counter(r["answer"] for r in answered)
            winner = next((r for r in answered if votes[r["answer"]] == max(votes.values())), None)
            correct[problem] = winner is not None and right(winner)
            tokens += sum(r["completion_tokens"] for r in first)
        result[n] = (correct, tokens / len(by_problem), covered / len(by_problem))
    return result


def tree(run: Path) -> tuple[dict[str, dict[str, bool]], float, dict[str, float]]:
    """(selection → problem → right, mean tree tokens per problem, mean tree statistics). Selections: the
    rank-0 candidate (most like the others: what the tree stores first), the best-scored candidate (mean
    token log-probability), the majority answer over the candidates, and "some candidate" (what a
    correctness filter can keep)."""
    trees: dict[str, list[dict]] = {}
    for row in read_jsonl(run / "samples.jsonl"):
        row["tree"] = json.loads(row["metadata"])["tree"]
        trees.setdefault(row["problem_id"], []).append(row)
    chosen: dict[str, dict[str, bool]] = {"rank 0": {}, "best score": {}, "majority": {}, "some candidate": {}}
    tokens, stats = 0, Counter()
    for problem, rows in trees.items():
        kept = sorted((r for r in rows if r["error"] is None), key=lambda r: r["tree"]["rank"])
        tokens += rows[0]["tree"]["tree_tokens"]
        stats.update({k: rows[0]["tree"][k] for k in ("candidates", "draws", "repeats", "dropped", "depth")})
        chosen["rank 0"][problem] = bool(kept) and right(kept[0])
        chosen["best score"][problem] = bool(kept) and right(max(kept, key=lambda r: r["tree"]["score"]))
        votes = Counter(r["answer"] for r in kept if r["answer"] is not None)
        winner = next((r for r in kept if r["answer"] is not None and votes[r["answer"]] == max(votes.values())), None)
        chosen["majority"][problem] = winner is not None and right(winner)
        chosen["some candidate"][problem] = any(right(r) for r in kept)
    return chosen, tokens / len(trees), {k: v / len(trees) for k, v in stats.items()}


def compare(sc_run: Path, tree_run: Path, sizes: tuple[int, ...], label: str) -> None:
    sc = self_consistency(sc_run, sizes)
    chosen, tree_tokens, stats = tree(tree_run)
    tree_right = chosen["rank 0"]
    print(f"  {'arm':<40} {'accuracy [95% Wilson]':<32} {'teacher tokens/problem':>22}  some sample right")
    for n, (correct, tokens, covered) in sc.items():
        accuracy = format_accuracy(sum(correct.values()), len(correct))
        print(f"  {f'self-consistency n={n}':<40} {accuracy:<32} {tokens:>22.0f}  {covered:.2f}")
    covered = _accuracy(chosen.pop("some candidate"))
    for selection, correct in chosen.items():
        arm = f"{label}, {selection}"
        accuracy = format_accuracy(sum(correct.values()), len(correct))
        print(f"  {arm:<40} {accuracy:<32} {tree_tokens:>22.0f}  {covered:.2f}")
    print("  tree, per problem: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(stats.items())))
    below = max((n for n, (_, t, _) in sc.items() if t <= tree_tokens), default=None)
    above = min((n for n, (_, t, _) in sc.items() if t >= tree_tokens), default=None)
    if below and above and below != above:
        (rb, tb, _), (ra, ta, _) = sc[below], sc[above]
        share = (tree_tokens - tb) / (ta - tb)
        interpolated = (1 - share) * _accuracy(rb) + share * _accuracy(ra)
        print(f"  self-consistency interpolated at the tree's {tree_tokens:.0f} tokens: {interpolated:.3f}")
    for n in dict.fromkeys(n for n in (below, above) if n):
        only_tree = sum(tree_right[p] and not sc[n][0][p] for p in tree_right)
        only_sc = sum(sc[n][0][p] and not tree_right[p] for p in tree_right)
        p = mcnemar_p(only_tree, only_sc)
        print(
            f"  tree rank 0 vs self-consistency n={n}: McNemar p {p:.2f} (only the tree {only_tree}, only SC {only_sc})"
        )


def both_arms(
    model: Path | None, data: tuple[str, ...], folder: Path, args: argparse.Namespace, samples: int, delimiter: str
) -> tuple[float, float]:
    """Self-consistency's samples (seeds 1…samples) into folder/sc and the trees (seed 1) into
    folder/tree_name; the seconds of each."""
    seeds = [item for seed in range(1, samples + 1) for item in ("--seeds", str(seed))]
    sc_s = generate(model, data, folder / "sc", args.temperature, *seeds)
    tree = (
        *("--search", "tree", "--beam", str(args.beam), "--branch", str(args.branch)),
        *("--max-depth", str(args.max_depth), "--step-delimiter", delimiter, "--seeds", "1"),
    )
    return sc_s, generate(model, data, folder / tree_name(args), args.temperature, *tree)


def tree_name(args: argparse.Namespace) -> str:
    return f"tree-w{args.beam}-b{args.branch}-d{args.max_depth}"


def tree_label(args: argparse.Namespace) -> str:
    return f"tree W={args.beam} B={args.branch} D={args.max_depth}"


def synthetic_run(args: argparse.Namespace) -> None:
    plan = synthetic.Plan(2000, args.teacher_steps, 0, args.problems, 0, ())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        gold, _, test = synthetic.write_data(folder, plan, 0, 10, 99)
        teacher = folder / "teacher"
        if not (teacher / "eval.json").exists():
            _, seconds = synthetic.train(gold, teacher, "scratch:llama-small", plan.teacher_steps, 16, 1e-3, 0)
            print(
                f"teacher: scratch:llama-small, 2000 gold rationales, {plan.teacher_steps} steps x 16: {seconds:.0f} s"
            )
            synthetic.evaluate(teacher, test)
        summary = json.loads((teacher / "eval.json").read_text())
        print(f"teacher held-out accuracy (greedy): {format_accuracy(summary['correct'], summary['total'])}")
        serving = folder / "teacher-hf"
        if not serving.exists():
            synthetic.serving_copy(teacher, folder)
        prompts = folder / "prompts"
        prompts.mkdir(exist_ok=True)
        (prompts / f"{synthetic.TEMPLATE}.yaml").write_text(synthetic.TEMPLATE_YAML)
        data = (
            *("--input", str(test), "--format", "jsonl", "--answer-type", "number", "--max-tokens", "96"),
            *("--prompts-dir", str(prompts), "--template", synthetic.TEMPLATE, "--batch-size", "48"),
        )
        sc_s, tree_s = both_arms(serving, data, folder, args, max(SC_SIZES), ".")
        print(
            f"\n{args.problems} held-out problems, T={args.temperature:g}; "
            f"16 samples {sc_s:.0f} s, trees {tree_s:.0f} s"
        )
        compare(
            folder / "sc", folder / tree_name(args), SC_SIZES, f"tree W={args.beam} B={args.branch} D={args.max_depth}"
        )


def svamp_run(args: argparse.Namespace) -> None:
    """SmolLM2 (or --model) on the first --problems SVAMP problems, zero-shot-cot, steps ending at a newline."""
    sizes = tuple(n for n in SC_SIZES if n <= args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data = (
            *("--input", str(args.input), "--format", "svamp", "--limit", str(args.problems)),
            *("--template", "zero-shot-cot", "--max-tokens", str(args.max_tokens), "--batch-size", "16"),
        )
        model = Path(args.model) if args.model else None
        sc_s, tree_s = both_arms(model, data, folder, args, args.samples, "\n")
        print(
            f"{args.model or 'SmolLM2-135M-Instruct'} on SVAMP's first {args.problems} problems, zero-shot-cot, "
            f"T={args.temperature:g}, max {args.max_tokens} tokens; "
            f"{args.samples} samples {sc_s:.0f} s, trees {tree_s:.0f} s"
        )
        compare(
            folder / "sc", folder / tree_name(args), sizes, f"tree W={args.beam} B={args.branch} D={args.max_depth}"
        )


def _accuracy(correct: dict[str, bool]) -> float:
    return sum(correct.values()) / len(correct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    synthetic_parser = sub.add_parser("synthetic")
    synthetic_parser.add_argument("--teacher-steps", type=int, default=400)
    synthetic_parser.add_argument("--problems", type=int, default=100)
    svamp = sub.add_parser("svamp")
    svamp.add_argument("--model", help="teacher (default: the embedded SmolLM2-135M-Instruct)")
    svamp.add_argument("--input", default=str(SVAMP))
    svamp.add_argument("--problems", type=int, default=30)
    svamp.add_argument("--samples", type=int, default=8, help="self-consistency samples at most")
    svamp.add_argument("--max-tokens", type=int, default=160)
    for each in (synthetic_parser, svamp):
        each.add_argument("--beam", type=int, default=4)
        each.add_argument("--branch", type=int, default=3)
        each.add_argument("--max-depth", type=int, default=6)
        each.add_argument("--temperature", type=float, default=0.7)
        each.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
        each.add_argument("--keep", help="work in this folder and keep it; a teacher or run found there is reused")
    args = parser.parse_args(sys.argv[1:] or ["synthetic"])  # bench/run_all.py runs it bare
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    {"synthetic": synthetic_run, "svamp": svamp_run}[args.what](args)
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
