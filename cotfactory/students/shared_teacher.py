"""One live teacher for every training process: ``--teacher-placement shared``, the default under torchrun.

Under ``torchrun --nproc_per_node N`` a live ``--teacher`` (gkd, ``--hidden-cosine``) is held by rank 0
alone, on ``--teacher-device``; the other ranks build it without weights (the meta device: its widths and
depth, for the checks and the layer matching) and get its outputs over torch.distributed. Each teacher
pass (``SharedTeacher.score``, the same call as ``LiveTeacher.score``) is five collectives:

1. every rank's (rows, width, logits kept, layers) to every rank: an ``all_gather`` of 4 integers;
2. every rank's input_ids and attention_mask, padded to the largest rows and width: one ``all_gather``
   (token ids are small next to logits);
3. rank 0 scores every rank's true rows in one forward, each right-padded to the common width (which
   changes nothing a causal model computes at the positions before the padding), keeping the logits
   of the last positions that any rank asked for;
4. rank 0 broadcasts the outputs' dtypes and widths (4 integers);
5. rank 0 ``scatter``s to each rank its rows' logits, padded to a common shape, and its rows' layer
   outputs (the hidden cosine) the same way; each rank cuts its own out.

gloo (CPU) and nccl (GPUs) support these four collectives alike.

* Lockstep: every rank calls ``score`` as often as the others, in the same order. The Trainer runs
  the same number of micro-batches on each rank (``GlobalOrderSampler`` pads the last global batch),
  and the loss already meets the other ranks at each one (``multitask_loss_across``).
* Only the scoring is shared: gkd's on-policy completions are sampled before the pass by each rank
  with its own copy of the student (the λ coin, a function of the seed, step and micro-batch, is the
  same on every rank), so what rank 0's teacher scores is what each rank trains on.
* Memory and time: one copy of the teacher instead of N; rank 0 runs it on N times the per-device
  batch, one forward after the other ranks have sent theirs (they wait), and holds N padded shares of
  logits while scattering them. On GPUs, ``--teacher-device cuda:K`` puts it on a GPU no rank trains
  on; ``auto`` puts it beside rank 0's student. ``--teacher-placement per-rank`` gives every rank its
  own copy again (no waiting or traffic, N times the memory).
* ``--init-from-teacher`` builds the student from the teacher's weights, which every rank needs for
  that (the build must be the same everywhere): each reads them, builds, and all but rank 0 free them
  before training.

How others place a distillation teacher across processes: TRL's ``GKDTrainer`` gives every process a
copy (``accelerator.prepare_model(teacher, evaluation_mode=True)``), sharded only under DeepSpeed
ZeRO-3 or FSDP; torchtune's ``knowledge_distillation_distributed`` recipe shards the teacher with
FSDP, so each rank holds 1/N of it and gathers every layer's weights for its own forward; DistillKit
runs an online teacher beside the student in each process, or reads teacher logits captured offline
(as our recorded ``--distill kd|…`` do); ms-swift's GKD can ask a teacher server for top-k logprobs.
One holder inside the process group keeps full logits and layer outputs, needs no sharding engine, and
scores exactly what one process would.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cotfactory.students.on_policy import LiveTeacher

HOLDER = 0  # the rank that holds the teacher
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)  # sent as their index here


class SharedTeacher:
    """``LiveTeacher.score`` across processes: the ``teacher`` lives in rank ``HOLDER`` (None elsewhere)."""

    def __init__(self, teacher: LiveTeacher | None):
        self.teacher = teacher

    def score(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int, layers: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """What ``LiveTeacher.score`` returns for this rank's batch; every rank calls it together."""
        import torch.distributed as dist

        home, holding = input_ids.device, dist.get_rank() == HOLDER
        rows, width = input_ids.shape
        shapes = _all_gathered(torch.tensor([rows, width, logits_to_keep, len(layers)], device=home))
        shapes = [tuple(int(v) for v in shape) for shape in shapes]
        if len({shape[3] for shape in shapes}) > 1:
            raise RuntimeError(f"ranks asked the shared teacher for different numbers of layers: {shapes}")
        most_rows, widest = max(s[0] for s in shapes), max(s[1] for s in shapes)
        batch = torch.zeros((2, most_rows, widest), dtype=torch.long, device=home)
        batch[0, :rows, :width], batch[1, :rows, :width] = input_ids, attention_mask
        batches = _all_gathered(batch)
        logit_shares: list[torch.Tensor] | None = None
        state_shares: list[torch.Tensor] | None = None
        meta = torch.zeros(4, dtype=torch.long, device=home)
        if holding:
            if self.teacher is None:
                raise RuntimeError(f"rank {HOLDER} holds the shared teacher but was given none")
            logit_shares, state_shares = _scored_shares(self.teacher, batches, shapes, layers)
            meta = _meta(logit_shares[0], state_shares[0] if state_shares else None, home)
        dist.broadcast(meta, src=HOLDER)
        logits = torch.empty(
            (most_rows, max(s[2] for s in shapes), int(meta[1])), dtype=DTYPES[int(meta[0])], device=home
        )
        dist.scatter(logits, logit_shares, src=HOLDER)
        states: list[torch.Tensor] = []
        if layers:
            stacked = torch.empty(
                (len(layers), most_rows, widest, int(meta[3])), dtype=DTYPES[int(meta[2])], device=home
            )
            dist.scatter(stacked, state_shares, src=HOLDER)
            states = [state[:rows, :width] for state in stacked]
        return logits[:rows, :logits_to_keep], states


def _all_gathered(tensor: torch.Tensor) -> list[torch.Tensor]:
    import torch.distributed as dist

    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return gathered


def _scored_shares(
    teacher: LiveTeacher, batches: list[torch.Tensor], shapes: list[tuple[int, ...]], layers: Sequence[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The holder's forward over every rank's rows at once; per rank, its logits (most rows × most kept
    positions × vocabulary) and its layer outputs stacked (layers × most rows × widest × hidden), padded
    with zeros to shapes that are the same for every rank, as ``scatter`` needs."""
    widest = batches[0].shape[2]
    ids = torch.cat([batch[0, :rows] for batch, (rows, *_) in zip(batches, shapes, strict=True)])
    mask = torch.cat([batch[1, :rows] for batch, (rows, *_) in zip(batches, shapes, strict=True)])
    # rank r wants the logits of positions [width - kept, width): the last ``keep`` of the padded batch cover all
    keep = max(widest - width + kept for _, width, kept, _ in shapes)
    logits, states = teacher.score(ids, mask, keep, layers)
    most_rows, most_kept = max(s[0] for s in shapes), max(s[2] for s in shapes)
    logit_shares, state_shares, first = [], [], 0
    for rows, width, kept, _ in shapes:
        start = width - kept - (widest - keep)
        share = logits.new_zeros((most_rows, most_kept, logits.shape[2]))
        share[:rows, :kept] = logits[first : first + rows, start : start + kept]
        logit_shares.append(share)
        if layers:
            stacked = torch.stack([state[first : first + rows] for state in states])
            padded = stacked.new_zeros((len(layers), most_rows, widest, stacked.shape[3]))
            padded[:, :rows] = stacked
            state_shares.append(padded)
        first += rows
    return logit_shares, state_shares


def _meta(logits: torch.Tensor, states: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """(logits' dtype, vocabulary, layer outputs' dtype, hidden size): what the receiving ranks allocate."""
    state_dtype, hidden = (DTYPES.index(states.dtype), states.shape[3]) if states is not None else (0, 0)
    return torch.tensor([DTYPES.index(logits.dtype), logits.shape[2], state_dtype, hidden], device=device)
