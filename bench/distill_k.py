"""Which K to record: how much of the teacher's distribution the top K hold, against what K costs.

SmolLM2-135M (the embedded teacher) writes zero-shot-cot rationales for GSM8K train problems with
`generate --logprobs 64`; from those records, for each K the mean probability mass outside the top K
(the tail bucket), the share of positions where the tail holds more than 5 %, and the bytes per
token of a record at that K (6·K + 8), against fp32 full-vocabulary logits (49,152 · 4 bytes).

    python bench/distill_k.py [--problems 16] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
KS = (1, 2, 5, 10, 20, 32, 64)
VOCABULARY = 49_152


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from cotfactory.distributions import bytes_per_token
    from cotfactory.store import Store

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        started = time.perf_counter()
        command = [
            sys.executable, "-m", "cotfactory", "generate", "--input", str(ROOT / "data/gsm8k/train_sample.jsonl"),
            "--format", "gsm8k", "--limit", str(args.problems), "--teacher", "hf", "--temperatures", "0.7",
            "--max-tokens", str(args.max_tokens), "--logprobs", str(max(KS)), "--out", str(run),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        with Store.in_run(run) as store:
            records = [d for _, d in store.distributions()]
    logprobs = np.concatenate([d.top_logprobs.astype(np.float64) for d in records])  # (tokens, 64), descending
    tail = np.exp(np.concatenate([d.tail.astype(np.float64) for d in records]))
    chosen_rank = np.concatenate([_rank(d) for d in records])
    print(
        f"SmolLM2-135M teacher, {len(records)} rationales, {len(logprobs)} tokens, temperature 0.7 "
        f"({time.perf_counter() - started:.0f} s)"
    )
    probabilities = np.exp(logprobs)
    for k in KS:
        outside = probabilities[:, k:].sum(axis=1) + tail
        print(
            f"K={k:>2}: mass outside the top K mean {outside.mean():.3f} (median {np.median(outside):.3f}); "
            f"positions with > 5 % outside {np.mean(outside > 0.05):.0%}; sampled token inside the top K "
            f"{np.mean(chosen_rank < k):.1%}; {bytes_per_token(k):>4} bytes/token = "
            f"{bytes_per_token(k) / (VOCABULARY * 4):.4f} x fp32 full logits"
        )


def _rank(record: object) -> np.ndarray:
    """Each token's rank among its position's recorded top K (K when outside)."""
    ids, top = record.token_ids[:, None], record.top_ids  # type: ignore[attr-defined]
    hit = top == ids
    return np.where(hit.any(axis=1), hit.argmax(axis=1), top.shape[1])


if __name__ == "__main__":
    main()
