"""Training progress as one rich bar — steps, loss, tokens/s, ETA — in place of the Trainer's tqdm
bar and the raw ``{'loss': …}`` dicts it prints beside it."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback


class RichTrainingProgress(TrainerCallback):
    """``trainer`` is set once the trainer exists: its ``tokens_seen`` gives tokens/s."""

    def __init__(self, console: Console, description: str):
        self.console = console
        self.description = description
        self.trainer: Any = None
        self._progress: Progress | None = None
        self._task: Any = None
        self._started = 0.0
        self._tokens_at_start = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]:.0f} tok/s"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = self._progress.add_task(self.description, total=state.max_steps, loss="…", tps=0.0)
        self._progress.update(self._task, completed=state.global_step)  # a resumed run starts part-way
        self._progress.start()
        self._started = time.monotonic()
        self._tokens_at_start = self._tokens()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            elapsed = max(time.monotonic() - self._started, 1e-9)
            tokens = self._tokens() - self._tokens_at_start
            self._progress.update(self._task, completed=state.global_step, tps=tokens / elapsed)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self._progress is not None and logs and "loss" in logs:
            self._progress.update(self._task, loss=f"{float(logs['loss']):.4f}")

    def _tokens(self) -> int:
        return int(getattr(self.trainer, "tokens_seen", 0))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
