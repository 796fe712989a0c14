"""Token-level distillation losses against a teacher distribution recorded offline as sparse top-K.

The teacher is known at each position only through K (token id, log-probability) slots plus a tail
bucket, the log of the mass outside them (``cotfactory.distributions``). Every divergence here is
therefore taken on K+1 buckets — the K recorded tokens and one "everything else" event — on both
sides: a truncated teacher is never read as a full distribution, and the student's mass outside
the K tokens is counted, not dropped. Merging tokens into one bucket never increases a divergence,
so each divergence is a lower bound on its full-vocabulary value, exact when the tail is empty.
(TRL's experimental ``DistillationTrainer`` appends the same bucket, ``_add_tail_bucket``.)

Conventions, shared by every kind and mirrored by the slow reference in the tests:

* ``teacher_ids`` are in the student's vocabulary; -1 marks an empty slot (a teacher token with no
  student counterpart, or fewer than K recorded). Slots sharing a student id pool their mass into
  one bucket. An unmapped slot's mass joins the tail:
  ``tail = logsumexp(teacher_tail, logprobs of the -1 slots)``, so an unrecorded (padding) slot
  must carry -inf. The teacher's K+1 buckets are then renormalised (a no-op up to float16 rounding
  of the recorded values); buckets holding a total mass more than ``_MASS_SLACK`` away from 1 are
  a ``DataError`` rather than silently rescaled.
* A row whose slots are all -1 has no teacher distribution: only cross-entropy applies there.
* A log-probability of -inf (an empty tail, a student tail when the K ids cover the vocabulary)
  becomes ``_LOG_FLOOR`` = log of the smallest normal float32, so 0·log 0 terms vanish and a
  reverse KL against a teacher's empty tail is a large finite penalty with finite gradients,
  instead of inf/NaN.
* The distillation term is a mean over positions with a teacher distribution (0 if none); the
  cross-entropy a mean over all N positions, at temperature 1. For every kind but "ce",
  ``loss == alpha * parts["distill"] + (1 - alpha) * parts["ce"]``.

``generalized_jsd`` at the end is the same divergence as ``jsd`` on full vocabularies, for a live
teacher whose every logit is at hand (``--distill gkd``, cotfactory.students.on_policy).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cotfactory.errors import ConfigError, DataError

KINDS = ("ce", "kd", "slim", "reverse-kl", "jsd")

_LOG_FLOOR = math.log(torch.finfo(torch.float32).tiny)  # ≈ -87.3: stands in for log 0
_MASS_SLACK = 0.02  # the recorder's float16 logprobs sum to 1 within ~0.05% (K=20, V=32k, measured)


@dataclass(frozen=True)
class _Buckets:
    """Teacher and student over each position's K+1 buckets (K slots, then the tail)."""

    teacher: torch.Tensor  # (N, K+1) log p_T: teacher softened at T, renormalised, -inf floored
    student: torch.Tensor  # (N, K+1) log q_T: the student's softmax(logits / T) summed per bucket
    present: torch.Tensor  # (N, K+1) float: 1 where the bucket exists (a mapped slot, or the tail)
    has_teacher: torch.Tensor  # (N,) bool: the position has at least one mapped slot
    teacher_gold: torch.Tensor  # (N,) teacher log-prob (T=1) of the label; -inf when not recorded
    student_gold: torch.Tensor  # (N,) student log-prob (T=1) of the label


def distillation_loss(
    kind: str,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_tail: torch.Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 1.0,
    beta: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar loss of N labelled positions and its parts ({"ce", "distill"}, and "slim_weight").

    ``student_logits`` (N, V) may be bf16: everything is computed in float32. ``labels`` (N,) are the
    hard targets; ``teacher_ids`` (N, K), ``teacher_logprobs`` (N, K) and ``teacher_tail`` (N,) the
    recorded teacher (temperature 1), ignored by "ce". ``alpha`` weighs the distillation term against
    cross-entropy, ``temperature`` softens both sides of the divergence, ``beta`` is jsd's mixture.
    Kinds: see ``_DIVERGENCES`` and the functions it names.
    """
    _check_settings(kind, alpha, temperature, beta)
    logits = student_logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)
    student_gold = log_probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    ce = -student_gold.sum() / max(len(labels), 1)
    if kind == "ce":
        return ce, {"ce": float(ce.detach())}

    buckets = _buckets(
        logits, log_probs, student_gold, labels, teacher_ids, teacher_logprobs, teacher_tail, temperature
    )
    per_position, extra = _DIVERGENCES[kind](buckets, temperature, beta)
    taught = buckets.has_teacher.float()
    distill = (per_position * taught).sum() / taught.sum().clamp_min(1.0)
    loss = alpha * distill + (1 - alpha) * ce
    return loss, {"ce": float(ce.detach()), "distill": float(distill.detach()), **extra}


def _check_settings(kind: str, alpha: float, temperature: float, beta: float) -> None:
    """Bad settings are the user's to fix, so each is a one-line ConfigError naming the value."""
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown distillation loss '{kind}'{hint}; available: {', '.join(KINDS)}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation alpha must be in [0, 1], got {alpha}")
    if not temperature > 0.0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"jsd beta must be in [0, 1], got {beta}")


def _buckets(
    logits: torch.Tensor,
    log_probs: torch.Tensor,
    student_gold: torch.Tensor,
    labels: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_tail: torch.Tensor,
    temperature: float,
) -> _Buckets:
    """Both sides on the K+1 buckets; the teacher's records checked first (they come from disk)."""
    n, vocab = logits.shape
    if teacher_ids.shape != teacher_logprobs.shape or teacher_ids.shape[0] != n or teacher_tail.shape != (n,):
        raise ValueError(
            f"teacher shapes ids {tuple(teacher_ids.shape)}, logprobs {tuple(teacher_logprobs.shape)}, "
            f"tail {tuple(teacher_tail.shape)} do not fit {n} positions"
        )
    ids = teacher_ids.long()
    if bool((ids >= vocab).any()):
        raise DataError(f"teacher id {int(ids.max())} is outside the student's vocabulary of {vocab}")
    mapped = ids >= 0
    unmapped = teacher_logprobs.float().masked_fill(mapped, float("-inf"))
    valid, lp = _merge_repeats(ids, mapped, teacher_logprobs.float())
    has_teacher = valid.any(dim=1)

    # Teacher: mapped slots as recorded (repeats pooled); the tail takes the unmapped ones' mass too.
    tail = torch.logsumexp(torch.cat([teacher_tail.float().unsqueeze(1), unmapped], dim=1), dim=1, keepdim=True)
    raw = torch.cat([lp.masked_fill(~valid, float("-inf")), tail], dim=1)
    raw = torch.where(has_teacher.unsqueeze(1), raw, 0.0)  # rows without a teacher: finite filler
    _check_mass(raw, has_teacher)
    softened = raw / temperature
    teacher = _floor(softened - torch.logsumexp(softened, dim=1, keepdim=True))

    # Student: softmax(logits / T) at the mapped ids, and the exact mass outside them.
    scaled = log_probs if temperature == 1.0 else torch.log_softmax(logits / temperature, dim=-1)
    slots = scaled.gather(1, ids.clamp_min(0))
    in_support = torch.zeros(n, vocab + 1, dtype=torch.bool, device=logits.device)
    in_support = in_support.scatter_(1, torch.where(valid, ids, vocab), True)[:, :vocab]
    covered = in_support.all(dim=1)  # no token outside the slots: the tail is empty
    outside = scaled.masked_fill(in_support & ~covered.unsqueeze(1), float("-inf"))  # finite rows stay finite
    student_tail = torch.where(covered, float("-inf"), torch.logsumexp(outside, dim=1))
    student = _floor(torch.cat([slots, student_tail.unsqueeze(1)], dim=1))

    gold = valid & (ids == labels.long().unsqueeze(1))
    teacher_gold = torch.logsumexp(lp.masked_fill(~gold, float("-inf")), dim=1)  # repeats merged: ≤ 1 match
    present = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1).float()
    return _Buckets(teacher, student, present, has_teacher, teacher_gold, student_gold)


def _merge_repeats(ids: torch.Tensor, mapped: torch.Tensor, lp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid slots, their logprobs) with each student id once: a vocabulary mapped by token text can
    send two teacher tokens to one student token, which then holds both masses (in its first slot)."""
    same = mapped.unsqueeze(2) & mapped.unsqueeze(1) & (ids.unsqueeze(2) == ids.unsqueeze(1))  # (N, K, K)
    earlier = torch.ones_like(same[0]).tril(diagonal=-1)  # [k, j]: slot j comes before slot k
    repeat = (same & earlier).any(dim=2)
    merged = torch.logsumexp(lp.unsqueeze(1).masked_fill(~same, float("-inf")), dim=2)
    return mapped & ~repeat, torch.where(mapped, merged, lp)


def _check_mass(raw: torch.Tensor, has_teacher: torch.Tensor) -> None:
    """The K+1 buckets must hold all of the teacher's mass: a missing tail or a padding slot not at
    -inf would otherwise be renormalised away silently — a truncated distribution read as a full one."""
    mass = torch.logsumexp(raw, dim=1).exp()
    off = has_teacher & ~((mass - 1.0).abs() <= _MASS_SLACK)  # written so that NaN is off too
    if bool(off.any()):
        row = int(off.nonzero()[0])
        raise DataError(
            f"teacher buckets of row {row} hold {float(mass[row]):.4f} of the probability mass, not 1: pass the "
            "tail (log of the mass outside the slots) and give padding slots (id -1) logprob -inf"
        )


def _floor(log_p: torch.Tensor) -> torch.Tensor:
    """-inf → ``_LOG_FLOOR``; finite values (and their gradients) untouched."""
    return torch.where(torch.isneginf(log_p), _LOG_FLOOR, log_p)


def _kl(log_a: torch.Tensor, log_b: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) per position over the present buckets; inputs finite, so every term is."""
    return (present * log_a.exp() * (log_a - log_b)).sum(dim=1)


def _hinton_kd(b: _Buckets, temperature: float, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinton et al. 2015: T²·KL(p_T ‖ q_T). The T² keeps the gradient's size, and so alpha's meaning,
    as T moves. Exact at T = 1; for T ≠ 1 the teacher's tail is softened as one event,
    exp(log P_tail / T), while the true softened tail is Σ p_j^(1/T) over the tokens inside it
    (unknown offline) — an underestimate for T > 1. The student side is exact at any T."""
    return temperature**2 * _kl(b.teacher, b.student, b.present), {}


def _slim(b: _Buckets, temperature: float, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """SLIM (Raman, Mani, Liang & Lipton 2023, "For Distillation, Tokens Are Not All You Need",
    NeurIPS 2023 Instruction Workshop, https://openreview.net/forum?id=2fc5GOPYip): sparse top-K
    teacher targets, with the KD term weighted per token by the teacher's confidence in the gold
    token relative to the student's:

        w = 1 - exp(-p_teacher(y) / q_student(y))      (both at T = 1; detached: a weight, not a target)

    near 1 where the teacher backs the label more than the student does, near 0 where it does not;
    w = 0 where the label is not among the recorded slots (the teacher's mass on it is unknown), so
    such a position trains on cross-entropy alone. The per-position term is w · T²·KL(p_T ‖ q_T).

    Sources. The abstract gives the method: the top-5% logits and "a dynamic weighting scheme that
    assigns weights to the KL divergence and cross-entropy loss based on the relative confidence
    between the student and teacher models". The formula could not be read from the paper itself;
    w is as public code computes it (``coef = 1 - exp(-teacher_prob[label] / student_prob[label])``
    times a soft-target cross-entropy, added to the plain CE) and as a third-party toolkit's guide
    reads the paper: its text describes this direction, while its Eq. 4 prints the inverse ratio
    1 - exp(-s/t) and adds the weighted soft cross-entropy over a top-5% teacher to a unit-weight
    CE. Deviations here: (1) a KL on the K+1 buckets (the tail kept, as everywhere here) where the
    paper takes a soft cross-entropy on the top logits — with w detached, KL and soft cross-entropy
    on the same buckets differ by w·H(p), a constant: another value, the same gradient; (2) the
    combination is alpha·term + (1 - alpha)·CE as for every kind, so alpha = 0.5 is the paper's
    CE + w·KD halved."""
    ratio = (b.teacher_gold - b.student_gold).detach().exp()
    weight = -torch.expm1(-ratio)
    taught = b.has_teacher.float()
    mean_weight = float((weight * taught).sum() / taught.sum().clamp_min(1.0))
    return weight * temperature**2 * _kl(b.teacher, b.student, b.present), {"slim_weight": mean_weight}


def _reverse_kl(b: _Buckets, temperature: float, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """KL(q_T ‖ p_T), mode seeking (MiniLLM, Gu et al. 2023, here per token and off-policy)."""
    return _kl(b.student, b.teacher, b.present), {}


def _jsd(b: _Buckets, temperature: float, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Generalized JSD as TRL's ``GKDTrainer.generalized_jsd_loss`` (trl/trainer/gkd_trainer.py)
    defines it (GKD, Agarwal et al. 2024, Eq. 1): m = β·p + (1-β)·q, jsd = β·KL(p ‖ m) +
    (1-β)·KL(q ‖ m); β = 0 is exactly KL(p ‖ q) and β = 1 exactly KL(q ‖ p), special-cased as TRL
    does (the mixed form vanishes there). Like TRL, the temperature softens both sides without a
    T² factor."""
    if beta == 0.0:
        return _kl(b.teacher, b.student, b.present), {}
    if beta == 1.0:
        return _kl(b.student, b.teacher, b.present), {}
    mixture = torch.logaddexp(b.teacher + math.log(beta), b.student + math.log1p(-beta))
    jsd = beta * _kl(b.teacher, mixture, b.present) + (1 - beta) * _kl(b.student, mixture, b.present)
    return jsd, {}


Divergence = Callable[[_Buckets, float, float], tuple[torch.Tensor, dict[str, float]]]

# Per-position distillation term of each kind but "ce": (buckets, temperature, beta) → ((N,), extra parts).
_DIVERGENCES: dict[str, Divergence] = {
    "kd": _hinton_kd,
    "slim": _slim,
    "reverse-kl": _reverse_kl,
    "jsd": _jsd,
}


# ------------------------------------------------------------------------------------- full vocabularies (gkd)


def generalized_jsd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5, temperature: float = 1.0
) -> torch.Tensor:
    """Per-position generalized JSD(β) between full next-token distributions: shape (N,) from (N, V) logits.

    GKD (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from Self-Generated
    Mistakes", Eq. 1) in TRL's convention (``GKDTrainer.generalized_jsd_loss``): with p the teacher and
    q the student, both softmax(logits / T),

        m = β·p + (1 − β)·q,    JSD(β) = β·KL(p ‖ m) + (1 − β)·KL(q ‖ m),

    and the end points special-cased (the mixed form vanishes there): β = 0 is the forward KL(p ‖ q)
    (mean seeking, Hinton's), β = 1 the reverse KL(q ‖ p) (mode seeking: MiniLLM's objective, here
    without its policy gradient). β weighs the teacher in the mixture, so larger β moves toward reverse
    KL. No T² factor, as in TRL. Computed in float32; 0·log 0 = 0 where a side puts no mass on a token.
    """
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"jsd beta must be in [0, 1], got {beta}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if beta == 0.0:
        return _full_kl(log_p, log_q)
    if beta == 1.0:
        return _full_kl(log_q, log_p)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    return beta * _full_kl(log_p, log_m) + (1 - beta) * _full_kl(log_q, log_m)


def _full_kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) over the last dimension; a token where a has no mass (log a = -inf: a teacher that masks
    tokens out of its vocabulary) adds 0, with a finite gradient."""
    empty = torch.isneginf(log_a)
    terms = log_a.exp() * (log_a.masked_fill(empty, 0.0) - log_b.masked_fill(empty, 0.0))
    return terms.sum(dim=-1)
