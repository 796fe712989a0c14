"""``cotfactory ARGS`` with each process's training batches recorded: the entry tests/test_ddp.py gives
torchrun (``python -m torch.distributed.run --nproc_per_node 2 tests/ddp_entry.py train-student …``).

Every batch the collator builds is appended to ``$COTFACTORY_TEST_BATCHES/rank{RANK}.jsonl`` as the
list of its examples' indices (``null`` for a filler row), in the order the process trains on them; every
causal LM whose weights the process reads with ``load_causal_lm`` (a live teacher) to
``$COTFACTORY_TEST_BATCHES/loads-rank{RANK}.jsonl``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # cotfactory from this checkout

from cotfactory.students.features import MultitaskCollator  # noqa: E402
from cotfactory.students.trainer import FILLER  # noqa: E402


def record_batches(folder: Path, rank: str) -> None:
    """Make every MultitaskCollator append its batch's example indices to ``folder/rank{rank}.jsonl``."""
    path = folder / f"rank{rank}.jsonl"
    collate = MultitaskCollator.__call__

    def recording(self: MultitaskCollator, features: list[dict[str, Any]]) -> Any:
        ids = [None if f["task_id"] == FILLER else f["example_index"] for f in features]
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(ids) + "\n")
        return collate(self, features)

    MultitaskCollator.__call__ = recording  # type: ignore[method-assign]


def record_loads(folder: Path, rank: str) -> None:
    """Make ``load_causal_lm`` (what reads a live teacher's weights) append each location it loads to
    ``folder/loads-rank{rank}.jsonl``."""
    from cotfactory import model_loading

    path = folder / f"loads-rank{rank}.jsonl"
    load = model_loading.load_causal_lm

    def recording(location: str, *args: Any, **kwargs: Any) -> Any:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(str(location)) + "\n")
        return load(location, *args, **kwargs)

    model_loading.load_causal_lm = recording


if __name__ == "__main__":
    record_batches(Path(os.environ["COTFACTORY_TEST_BATCHES"]), os.environ.get("RANK", "0"))
    record_loads(Path(os.environ["COTFACTORY_TEST_BATCHES"]), os.environ.get("RANK", "0"))
    from cotfactory.cli import main

    sys.argv[0] = "cotfactory"
    main()
