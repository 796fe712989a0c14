"""The multitask trainer: transformers' ``Trainer`` with one small change — the loss.

Each example belongs to a task (label, rationale, factual, counterfactual, …) with a weight; the
loss of a batch is Σ_task weight_task · mean(loss of that task's examples), each example's loss the
mean over its target tokens. The order of the examples is drawn per epoch from the seed
(``GlobalOrderSampler``: length-grouped by default); everything else — gradient accumulation,
checkpoints, resume, bf16 — is the stock Trainer's.

Across processes (``torchrun --nproc_per_node N``, DDP), a step is the same as one process's with
``--batch-size`` N times larger: every rank draws the same global order (``GlobalOrderSampler``) and
trains on its share of each global batch, and the loss of a rank's share is scaled by the global
batch's per-task counts (``multitask_loss_across``), so the mean DDP takes over the ranks' gradients
is the gradient of the global batch's loss. A last global batch that does not divide among the ranks
is filled with ``FILLER`` rows (task -1), which count for nothing.

With a live teacher (``LiveTeaching``) two more things happen, both per example like the rest:
``--distill gkd`` replaces some batches' completions with the student's own before the step
(``training_step``) and scores every batch with the teacher's full logits (cotfactory.students.
on_policy); ``--hidden-cosine`` adds the cosine between matched layer outputs (init_from_teacher).
Across processes the teacher is by default held by rank 0 alone and scores every rank's batch in one
forward (shared_teacher): each rank still samples its own completions with its own student.
"""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import get_length_grouped_indices

from cotfactory.students.distill_losses import distillation_loss
from cotfactory.students.features import IGNORE
from cotfactory.students.init_from_teacher import HiddenCosine, layer_outputs
from cotfactory.students.on_policy import LiveTeacher, OnPolicy, gkd_example_losses, on_policy_batch
from cotfactory.students.shared_teacher import SharedTeacher

TEACHER_FIELDS = ("teacher_ids", "teacher_logprobs", "teacher_tail")  # what the collator adds with --distill
FILLER = -1  # the task id of the rows that fill a last global batch across processes: no loss, no count


def example_losses(logits: torch.Tensor, labels: torch.Tensor, causal: bool) -> torch.Tensor:
    """Mean cross-entropy over each example's labelled tokens: shape (batch,)."""
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    mask = (labels != IGNORE).float()
    return (token * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def first_logit_needed(labels: torch.Tensor) -> int:
    """The first position whose logits a causal loss reads: the one before the batch's first label.

    The vocabulary projection and its softmax cost as much as a fifth of a small model's step, and
    most positions are prompt: a label-only example of 70 tokens is scored on its last 3. So the
    model is asked for the logits from here on only (``logits_to_keep``); the loss is the same."""
    labelled = (labels != IGNORE).any(dim=0).nonzero()
    return max(int(labelled[0]) - 1, 0) if len(labelled) else 0


def multitask_loss(
    per_example: torch.Tensor, task_ids: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, dict[int, float]]:
    """Σ over the tasks in the batch of weight · mean example loss; also each task's mean loss."""
    total = per_example.new_zeros(())
    by_task = {}
    for task in task_ids.unique().tolist():
        chosen = task_ids == task
        mean = per_example[chosen].mean()
        total = total + weights[chosen][0] * mean
        by_task[task] = float(mean.detach())
    return total, by_task


def multitask_loss_across(
    per_example: torch.Tensor, task_ids: torch.Tensor, weights: torch.Tensor, tasks: int, world: int
) -> tuple[torch.Tensor, dict[int, float]]:
    """This rank's part of the global batch's ``multitask_loss`` (every rank calls it on its share).

    A task's mean is over the global batch, whose per-task counts and loss sums one all_reduce gives;
    the rank returns ``world · Σ_i weight_i · loss_i / count(task_i)``, so the mean of the ranks'
    losses (and of their gradients, which DDP takes) is the global batch's loss. Also each task's
    mean over the global batch, the same on every rank. Rows of task ``FILLER`` count nothing."""
    import torch.distributed as dist

    real = task_ids != FILLER
    task = torch.where(real, task_ids, 0)
    stats = per_example.new_zeros(2, tasks)
    stats[0].index_add_(0, task[real], per_example.detach()[real])
    stats[1].index_add_(0, task[real], torch.ones_like(per_example)[real])
    dist.all_reduce(stats)
    sums, counts = stats
    coefficient = torch.where(real, weights / counts[task].clamp_min(1.0), 0.0)
    # a share of fillers only still reaches every weight (times 0): DDP waits for every gradient
    loss = world * (coefficient * per_example).sum()
    by_task = {t: float(sums[t] / counts[t]) for t in range(tasks) if counts[t] > 0}
    return loss, by_task


class GlobalOrderSampler(Sampler[int]):
    """The training order of an epoch, drawn from ``seed + epoch`` and the same in every process.

    Length-grouped (transformers' grouping, in megabatches of ``batch_size`` = the global batch of an
    optimizer step) or a plain permutation. The stock samplers shuffle with the global RNG, so a run
    resumed in the middle of epoch 1 or later saw different batches than the uninterrupted run did;
    and the stock length grouping groups per device batch, so N processes drew another order than one.
    Across processes (accelerate deals the order out in per-device batches, round robin) the order is
    padded with ``filler`` to a multiple of ``pad_to`` (the per-device batch times the processes): the
    last global batch then splits evenly instead of wrapping round to the epoch's first examples.
    """

    def __init__(
        self, lengths: list[int], batch_size: int, seed: int, grouped: bool = True, pad_to: int = 1, filler: int = 0
    ):
        self.lengths, self.batch_size, self.seed, self.grouped = lengths, batch_size, seed, grouped
        self.pad_to, self.filler, self.epoch = pad_to, filler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths) + (-len(self.lengths) % self.pad_to)

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.grouped:
            order = get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        else:
            order = torch.randperm(len(self.lengths), generator=generator).tolist()
        return iter(order + [self.filler] * (len(self) - len(order)))


@dataclass(frozen=True)
class Distillation:
    """How the teacher's recorded distributions enter the loss (``--distill``; see distill_losses)."""

    kind: str = "none"
    alpha: float = 0.5
    temperature: float = 1.0
    beta: float = 0.5


def distilled_example_losses(
    logits: torch.Tensor, labels: torch.Tensor, teacher: dict[str, torch.Tensor], causal: bool, how: Distillation
) -> torch.Tensor:
    """Each example's distillation loss over its labelled tokens (shape (batch,)): the same per-example
    mean as ``example_losses``, so tasks and their weights combine the same way."""
    ids, logprobs, tail = teacher["teacher_ids"], teacher["teacher_logprobs"], teacher["teacher_tail"]
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
        ids, logprobs, tail = ids[:, 1:], logprobs[:, 1:], tail[:, 1:]
    losses = []
    for row in range(labels.shape[0]):
        chosen = labels[row] != IGNORE
        loss, _ = distillation_loss(
            how.kind,
            logits[row][chosen],
            labels[row][chosen],
            ids[row][chosen],
            logprobs[row][chosen],
            tail[row][chosen],
            alpha=how.alpha,
            temperature=how.temperature,
            beta=how.beta,
        )
        losses.append(loss)
    return torch.stack(losses)


@dataclass(frozen=True)
class LiveTeaching:
    """A teacher model run during training (causal students only): gkd's on-policy loss, the hidden cosine."""

    teacher: LiveTeacher | SharedTeacher  # SharedTeacher: one process holds it for all (--teacher-placement)
    on_policy: OnPolicy | None = None  # --distill gkd
    hidden: HiddenCosine | None = None  # --hidden-cosine
    pad_id: int = 0
    eos_ids: tuple[int, ...] = ()


class MultitaskTrainer(Trainer):
    loss_is_scaled_for_ga = False  # compute_loss returns a batch mean: training_step divides it by the accumulation

    def __init__(
        self,
        *args: Any,
        causal: bool,
        task_names: list[str],
        distillation: Distillation | None = None,
        live: LiveTeaching | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        # The model's forward takes **kwargs, so the Trainer would count label tokens for it
        # (num_items_in_batch) and leave the loss unscaled for gradient accumulation: --grad-accum k gave
        # k times the gradient. Our loss is a batch mean and ignores that count (transformers 4.x reads this).
        self.model_accepts_loss_kwargs = False
        self.lengths: list[int] = self.train_dataset["length"][:]  # a list (a Column reads row by row)
        if self.args.world_size > 1 and self.lengths:  # one FILLER row for GlobalOrderSampler to pad with
            shortest = min(range(len(self.lengths)), key=self.lengths.__getitem__)
            self.train_dataset = self.train_dataset.add_item({**self.train_dataset[shortest], "task_id": FILLER})
        self.causal = causal
        self.task_names = task_names
        self.distillation = distillation or Distillation()
        self.live = live
        self.tokens_seen = 0
        self._task_sums: dict[str, list[float]] = defaultdict(list)
        self._draw_at = (-1, -1)  # (optimizer step, micro-batch) of the last gkd coin
        self._draws: list[bool] = []  # the coins since the last log

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """gkd: with probability λ the batch's completions become the student's own, before the stock step."""
        settings = self.live.on_policy if self.live else None
        if settings is not None:
            step = self.state.global_step
            micro = self._draw_at[1] + 1 if self._draw_at[0] == step else 0
            self._draw_at = (step, micro)
            drawn = settings.draws_on_policy(step, micro)
            self._draws.append(drawn)
            if drawn:
                student = self.accelerator.unwrap_model(model)
                seed = settings.sampling_seed(step, micro) ^ self.args.process_index  # ranks sample apart
                inputs = on_policy_batch(student, inputs, settings, seed, self.live.pad_id, self.live.eos_ids)
        return super().training_step(model, inputs, num_items_in_batch)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Every process draws the same order, grouped by the global batch of an optimizer step."""
        args = self.args
        grouped = getattr(args, "train_sampling_strategy", None) == "group_by_length" or getattr(
            args, "group_by_length", False
        )
        world = max(args.world_size, 1)
        return GlobalOrderSampler(
            self.lengths,
            args.train_batch_size * args.gradient_accumulation_steps * world,
            args.data_seed if args.data_seed is not None else args.seed,
            grouped=grouped,
            pad_to=args.train_batch_size * world if world > 1 else 1,
            filler=len(self.lengths),  # the FILLER row, there when world > 1
        )

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        task_ids, weights, labels = inputs.pop("task_ids"), inputs.pop("weights"), inputs.pop("labels")
        if model.training:  # for the progress bar's tokens/s (not logged: metrics stay timing-free)
            self.tokens_seen += int(inputs["attention_mask"].sum())
        teacher = {name: inputs.pop(name) for name in TEACHER_FIELDS if name in inputs}
        hidden = self.live.hidden if self.live else None
        whole_labels = labels
        with self._student_layers(model, hidden) as student_states:
            if self.causal:
                first = first_logit_needed(labels)
                outputs = model(**inputs, logits_to_keep=labels.shape[1] - first)
                labels = labels[:, first:]
                teacher = {name: value[:, first:] for name, value in teacher.items()}
            else:
                outputs = model(**inputs)
        on_policy = self.live.on_policy if self.live else None
        teacher_logits, teacher_states = self._live_teacher_pass(inputs, labels.shape[1])
        if on_policy is not None:
            per_example = gkd_example_losses(outputs.logits, teacher_logits, labels, on_policy)
        elif teacher and self.distillation.kind != "none":
            per_example = distilled_example_losses(outputs.logits, labels, teacher, self.causal, self.distillation)
        else:
            per_example = example_losses(outputs.logits, labels, self.causal)
        if hidden is not None:
            per_example = per_example + hidden.example_losses(student_states, teacher_states, whole_labels)
        if self.args.world_size > 1:
            loss, by_task = multitask_loss_across(
                per_example, task_ids, weights, len(self.task_names), self.args.world_size
            )
        else:
            loss, by_task = multitask_loss(per_example, task_ids, weights)
        if model.training:
            for task, value in by_task.items():
                self._task_sums[self.task_names[task]].append(value)
        return (loss, outputs) if return_outputs else loss

    def _live_teacher_pass(self, inputs: dict[str, Any], logits_kept: int) -> tuple[Any, list[torch.Tensor]]:
        """The live teacher on the batch: (its last ``logits_kept`` positions' logits for gkd, the layer
        outputs the hidden cosine matches); (None, []) without a live teacher."""
        if self.live is None:
            return None, []
        layers = self.live.hidden.teacher_layers if self.live.hidden else ()
        keep = logits_kept if self.live.on_policy else 1  # the hidden cosine alone reads no logits
        return self.live.teacher.score(inputs["input_ids"], inputs["attention_mask"], keep, layers)

    def _student_layers(self, model: Any, hidden: HiddenCosine | None) -> Any:
        """Captures every student layer's output for the hidden cosine (nothing without it)."""
        if hidden is None:
            return nullcontext([])
        return layer_outputs(self.accelerator.unwrap_model(model), range(len(hidden.teacher_layers)))

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:
            for task, values in self._task_sums.items():
                logs[f"loss_{task}"] = round(sum(values) / len(values), 6)
            self._task_sums.clear()
            if self._draws:  # gkd: the share of micro-batches the student wrote since the last log
                logs["on_policy"] = round(sum(self._draws) / len(self._draws), 4)
                self._draws.clear()
        super().log(logs, *args, **kwargs)


class MetricsFile(TrainerCallback):
    """Appends every log (loss, per-task losses, learning rate) to metrics.jsonl with its step."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")
