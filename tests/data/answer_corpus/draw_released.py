"""Draw the CANDIDATES of released.jsonl from the real model outputs in ../shared/data.

This script documents and reproduces how the cases were picked; it does not label them. Every
`expected` in released.jsonl was written by hand after reading the text's ending (see SOURCES.md).

    python tests/data/answer_corpus/draw_released.py > /tmp/candidates.jsonl
    python tests/data/answer_corpus/draw_released.py --summary     # category sizes and picks

How: every completion of each source is scanned and put in the FIRST deviation category it matches
(the order below is the priority); each category contributes up to its cap, drawn with
random.Random(13) when it holds more; then a seeded sample of standard completions fills the source's
quota. Each candidate carries `category` and `candidate_shapes` (mechanical guesses, reviewed by hand).

Sources (paths relative to shared/data):
  gsm8k/example_model_solutions.jsonl      GPT-3 6B / 175B solutions of the GSM8K test set
                                           (fields 6b_finetuning, 6b_verification, 175b_finetuning,
                                           175b_verification; line i = line i of gsm8k/test.jsonl)
  cqa_palm/llm/{train,test}_CoT_{i}.json   PaLM-540B on CommonsenseQA (element j of shard i = line
                                           i*1000+j of cqa_palm/cqa_{split}.json)
  esnli_palm/llm/{valid,test}_CoT_{i}.json PaLM-540B on e-SNLI (element j of shard i = line i*5500+j
                                           of esnli_palm/esnli_{split}.json)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

SEED = 13
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
LICENCE = {
    "gsm8k": "MIT (openai/grade-school-math @ 3101c7d5, gsm8k/LICENSE); model output: OpenAI GPT-3, research use",
    "palm": "Apache-2.0 (Distilling Step-by-Step release, google-research/distilling-step-by-step datasets.zip, "
    "as unzipped in maxh119Z/distilling-step-by-step1 @ 5b76a471; {data} MIT); model output: Google PaLM-540B, "
    "research use",
}
VARIANTS = ["6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"]
ESNLI_LABELS = ["entailment", "neutral", "contradiction"]

# ----------------------------------------------------------------------------------------- GSM8K
# (category, cap). A completion belongs to the category that its *_category() function returns (the
# first of its rules that matches); the lists give the caps and the order in which the shared
# random.Random(13) draws.
GSM8K_CATEGORIES = [
    ("no-final-line", 11),  # the text does not end with an "A: ..." line (cut off, answer only)
    ("final-not-number", 5),  # "A: 1/5", "A: 7/14", "A: -1.8 billion", "A: 10+John's age"
    ("thousands-separator", 12),  # "A: 90,000"
    ("negative", 10),  # "A: -10"
    ("restated-different-value", 18),  # the A: value is not among the numbers of the line above
    ("percent", 6),  # the line above holds a percentage ("= 50%"), the A: line is bare
    ("decimal", 12),  # "A: 10.5", "A: 0.54580152671755725"
]
GSM8K_STANDARD = 38


def gsm8k_category(solution: str) -> tuple[str | None, list[str]]:
    lines = solution.rstrip("\n").split("\n")
    last = lines[-1]
    shapes: list[str] = []
    if not last.startswith("A:"):
        return "no-final-line", ["no-statement"]
    body = last[2:].strip()
    if re.search(r"\d/\d", body):
        shapes.append("fraction")
    if re.search(r"\d,\d{3}", body):
        shapes.append("thousands-separator")
    if body.startswith("-"):
        shapes.append("negative")
    if re.search(r"\d\.\d", body):
        shapes.append("decimal")
    if re.search(r"[A-Za-z]", body):
        shapes.append("number-in-words" if re.search(r"illion|hundred|thousand", body) else "words")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", body.replace(",", "")):
        return "final-not-number", shapes
    if "thousands-separator" in shapes:
        return "thousands-separator", shapes
    if "negative" in shapes:
        return "negative", shapes
    value = float(body.replace(",", ""))
    above = re.sub(r"<<.*?>>", "", lines[-2]) if len(lines) > 1 else ""
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", above.replace(",", ""))]
    if numbers and not any(abs(n - value) < 1e-9 for n in numbers):
        return "restated-different-value", [*shapes, "restated-different-value"]
    if re.search(r"\d%", above):
        return "percent", [*shapes, "percent"]
    if "decimal" in shapes:
        return "decimal", shapes
    return None, shapes


def draw_gsm8k(shared: Path, rng: random.Random) -> list[dict]:
    path = shared / "gsm8k" / "example_model_solutions.jsonl"
    records = [json.loads(line) for line in path.open(encoding="utf-8")]
    by_category: dict[str | None, list[tuple[int, str, list[str]]]] = {}
    for index, record in enumerate(records):
        for variant in VARIANTS:
            category, shapes = gsm8k_category(record[variant]["solution"])
            by_category.setdefault(category, []).append((index, variant, shapes))
    picks = _pick(by_category, GSM8K_CATEGORIES, GSM8K_STANDARD, rng)
    out = []
    for category, (index, variant, shapes) in picks:
        record = records[index]
        size, method = variant.split("_")
        gold = record["ground_truth"].rsplit("A:", 1)[1].strip()
        out.append(
            {
                "id": f"gsm8k-gpt3-{size}-{method}-{index}",
                "source": f"GPT-3 {size.upper()} ({method}, Cobbe et al. 2021) — GSM8K test line {index} — "
                f"gsm8k/example_model_solutions.jsonl line {index}, field {variant}.solution — {LICENCE['gsm8k']}",
                "answer_type": "number",
                "question": record["question"],
                "choices": None,
                "gold": gold,
                "text": record[variant]["solution"],
                "category": category or "standard",
                "candidate_shapes": shapes,
                "is_correct": record[variant]["is_correct"],
            }
        )
    return out


# ------------------------------------------------------------------------------------------ CQA
CQA_CATEGORIES = [
    ("no-letter", 3),  # "So the answer is one of these four."
    ("letter-names-other-choice", 5),  # "(e) wait for orders" where "wait for orders" is choice (d)
    # several letters, by shape: "either (c) or (d)."; "(a) x and (c) y."; three or four letters;
    # "either (b) lake or (d) pond."; "(a) ocean or (b) sea."
    ("several-letters-only", 4),
    ("several-letters-and", 4),
    ("several-letters-3+", 4),
    ("several-letters-either", 3),
    ("several-letters-or", 3),
    ("letter-text-differs", 44),  # "(e) ice" where (e) is "water cooler"; "(c) skyscraper" for "skyscaper"
    ("no-final-period", 3),  # "(b) good luck!"
    ("earlier-statement", 8),  # "the closest answer is X. So the answer is (y) Y."
    ("case-differs", 6),  # "(e) French government" for "french government"
    ("hedge", 8),  # closest / most likely / might / could be / all of them / both / none
    ("earlier-statement-differs", 4),  # "the closest answer is to express love. So the answer is (e) express love."
]
CQA_STANDARD = 12
_CQA_HEDGE = re.compile(r"closest|best answer|most likely|probably|might|could be|all of|both|none|neither", re.I)


def cqa_category(completion: str, choices: list[str]) -> tuple[str | None, list[str]]:
    head, *rest = completion.split("\n\nQ:", 1)
    shapes = ["invented-next-turn"] if rest else []
    statement = re.search(r"So the answer is (.*)$", head.strip())
    if not statement:
        return "no-letter", [*shapes, "no-statement"]
    body = statement.group(1)
    letters = re.findall(r"\(([a-e])\)", body)
    if not letters:
        return "no-letter", [*shapes, "text-only"]
    if len(set(letters)) > 1:
        shapes.append("two-letters")
        if not re.sub(r"\([a-e]\)|\b(?:either|or|and)\b|[,.\s]", "", body):
            return "several-letters-only", [*shapes, "letter-only"]
        if re.search(r"\) [^()]* and \(", body):
            return "several-letters-and", shapes
        if len(set(letters)) > 2:
            return "several-letters-3+", shapes
        return ("several-letters-either" if body.startswith("either") else "several-letters-or"), shapes
    named = re.fullmatch(r"\(([a-e])\) (.+?)\.?", body)
    text = named.group(2) if named else body
    index = "abcde".index(letters[0])
    lettered = choices[index] if index < len(choices) else None
    case = lettered is not None and lettered != text and lettered.lower() == text.lower()
    if lettered != text and not case:
        if any(c.lower() == text.lower() for c in choices):
            return "letter-names-other-choice", [*shapes, "letter-text-conflict"]
        return "letter-text-differs", [*shapes, "letter-text-mismatch"]
    if not body.endswith("."):
        return "no-final-period", shapes
    earlier = re.findall(r"answer is (?:\([a-e]\) )?(.+?)\.(?:\s|$)", head)[:-1]
    if any(e.lower() != text.lower() for e in earlier):
        return "earlier-statement-differs", [*shapes, "restated-differently"]
    if earlier:
        return "earlier-statement", [*shapes, "answer-restated"]
    if case:
        return "case-differs", [*shapes, "case"]
    if _CQA_HEDGE.search(head):
        return "hedge", [*shapes, "hedge"]
    return None, shapes


def draw_cqa(shared: Path, rng: random.Random) -> list[dict]:
    by_category: dict[str | None, list[tuple[str, int, int, int, list[str]]]] = {}
    rows: dict[str, list[dict]] = {}
    completions: dict[tuple[str, int], str] = {}
    for split in ("train", "test"):
        rows[split] = [json.loads(line) for line in (shared / "cqa_palm" / f"cqa_{split}.json").open(encoding="utf-8")]
        for shard in range(100):
            path = shared / "cqa_palm" / "llm" / f"{split}_CoT_{shard}.json"
            if not path.exists():
                break
            for element, completion in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                line = shard * 1000 + element
                completions[split, line] = completion
                category, shapes = cqa_category(completion, rows[split][line]["choices"])
                by_category.setdefault(category, []).append((split, line, shard, element, shapes))
    picks = _pick(by_category, CQA_CATEGORIES, CQA_STANDARD, rng)
    out = []
    for category, (split, line, shard, element, shapes) in picks:
        row = rows[split][line]
        out.append(
            {
                "id": f"cqa-palm-{split}-{line}",
                "source": f"PaLM-540B few-shot CoT (Distilling Step-by-Step release) — CommonsenseQA {split} "
                f"line {line} of cqa_palm/cqa_{split}.json — cqa_palm/llm/{split}_CoT_{shard}.json element "
                f"{element} — " + LICENCE["palm"].format(data="CommonsenseQA"),
                "answer_type": "choice",
                "question": row["question"],
                "choices": row["choices"],
                "gold": row["answer"],
                "text": completions[split, line],
                "category": category or "standard",
                "candidate_shapes": shapes,
            }
        )
    return out


# ---------------------------------------------------------------------------------------- e-SNLI
ESNLI_CATEGORIES = [
    ("no-answer-line", 4),  # no "Answer:" line at all (the text runs out)
    ("no-invented-turn", 7),  # no "\n\nPremise:" turn after the answer (ends there, or "\n\nPre")
    ("label-word-in-rationale", 3),  # "so it is not a contradiction." then "Answer: entailment"
    ("hedge-non-neutral", 7),  # "could be" / "not possible" but the label is not neutral
    ("hedge-neutral", 3),  # "it is not clear ..." / "might" then "Answer: neutral"
    ("invented-answer-differs", 12),  # the invented turn ends in an "Answer:" with another label
    ("invented-answer-same", 4),  # the invented turn's "Answer:" repeats the label
]
ESNLI_STANDARD = 12  # invented turn cut off before its answer
_ESNLI_HEDGE = re.compile(r"not possible|cannot be determined|can.t tell|not clear|unclear|might|maybe|could be", re.I)


def esnli_category(completion: str) -> tuple[str | None, list[str]]:
    head, *rest = completion.split("\n\nPremise:", 1)
    shapes = ["invented-next-turn"] if rest else []
    answers = re.findall(r"(?m)^Answer: ?(.*)$", head)
    if not answers:
        return "no-answer-line", [*shapes, "no-statement"]
    if not rest:
        return "no-invented-turn", shapes
    label = answers[-1].strip()
    rationale = head.rsplit("\nAnswer:", 1)[0]
    if re.search(r"entail|neutral|contradict", rationale, re.I):
        return "label-word-in-rationale", [*shapes, "label-word-in-rationale"]
    if _ESNLI_HEDGE.search(rationale):
        return ("hedge-neutral" if label == "neutral" else "hedge-non-neutral"), [*shapes, "hedge"]
    invented = re.findall(r"\nAnswer: ?(\w+)", rest[0])
    if invented:
        same = invented[-1] == label
        return ("invented-answer-same" if same else "invented-answer-differs"), [*shapes, "invented-answer"]
    return None, shapes


def draw_esnli(shared: Path, rng: random.Random) -> list[dict]:
    by_category: dict[str | None, list[tuple[str, int, int, int, list[str]]]] = {}
    rows: dict[str, list[dict]] = {}
    completions: dict[tuple[str, int], str] = {}
    for split in ("valid", "test"):
        path = shared / "esnli_palm" / f"esnli_{split}.json"
        rows[split] = [json.loads(line) for line in path.open(encoding="utf-8")]
        for shard in range(100):
            path = shared / "esnli_palm" / "llm" / f"{split}_CoT_{shard}.json"
            if not path.exists():
                break
            for element, completion in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                line = shard * 5500 + element
                completions[split, line] = completion
                category, shapes = esnli_category(completion)
                by_category.setdefault(category, []).append((split, line, shard, element, shapes))
    picks = _pick(by_category, ESNLI_CATEGORIES, ESNLI_STANDARD, rng)
    out = []
    for category, (split, line, shard, element, shapes) in picks:
        row = rows[split][line]
        out.append(
            {
                "id": f"esnli-palm-{split}-{line}",
                "source": f"PaLM-540B few-shot CoT (Distilling Step-by-Step release) — e-SNLI {split} line {line} "
                f"of esnli_palm/esnli_{split}.json — esnli_palm/llm/{split}_CoT_{shard}.json element {element} — "
                + LICENCE["palm"].format(data="e-SNLI"),
                "answer_type": "choice",
                # as cotfactory.loaders.esnli writes it
                "question": f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}",
                "choices": ESNLI_LABELS,
                "gold": ESNLI_LABELS[int(row["label"])],
                "text": completions[split, line],
                "category": category or "standard",
                "candidate_shapes": shapes,
            }
        )
    return out


# ---------------------------------------------------------------------------------------- common
def _pick(by_category: dict, categories: list[tuple[str, int]], standard: int, rng: random.Random) -> list:
    """Up to `cap` of each deviation category (all when it holds fewer), then `standard` standard ones."""
    picks = []
    for category, cap in categories:
        members = by_category.get(category, [])
        chosen = members if len(members) <= cap else rng.sample(members, cap)
        picks += [(category, member) for member in chosen]
        SUMMARY.append((category, len(members), len(chosen)))
    members = by_category.get(None, [])
    picks += [(None, member) for member in rng.sample(members, standard)]
    SUMMARY.append(("standard", len(members), standard))
    return picks


SUMMARY: list[tuple[str, int, int]] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared/data folder")
    parser.add_argument("--summary", action="store_true", help="print category sizes and picks, not candidates")
    args = parser.parse_args()
    candidates = []
    for name, draw in (("gsm8k", draw_gsm8k), ("cqa", draw_cqa), ("esnli", draw_esnli)):
        SUMMARY.append((f"== {name}", 0, 0))
        candidates += draw(args.shared, random.Random(SEED))
    if args.summary:
        for category, size, chosen in SUMMARY:
            print(f"{category:28} {size:6} {chosen:4}")
        print(Counter(c["answer_type"] for c in candidates), len(candidates))
        return
    for candidate in candidates:
        sys.stdout.write(json.dumps(candidate, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
