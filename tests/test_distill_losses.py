"""Distillation losses on sparse top-K teacher records, checked against a slow per-position reference.

The reference builds each position's K+1 bucket distributions by hand with ``math`` and applies the
module's documented conventions (unmapped slots join the tail, log 0 read as the float32 floor,
0·log 0 = 0); the fast version must agree to 1e-5 for every kind and several alpha/T/beta.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cotfactory.errors import ConfigError, DataError
from cotfactory.students import distill_losses
from cotfactory.students.distill_losses import KINDS, distillation_loss

LOG_FLOOR = math.log(2.0**-126)  # log of the smallest normal float32: the module's stand-in for log 0
VOCAB = 7


def record_teacher(full_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the recorder stores: top-K ids and logprobs of a real softmax, and the log mass outside."""
    log_probs = torch.log_softmax(full_logits.double(), dim=-1)
    top = log_probs.topk(k, dim=-1)
    tail = torch.logsumexp(log_probs.scatter(1, top.indices, float("-inf")), dim=-1)
    return top.indices, top.values.float(), tail.float()


def toy_batch(seed: int = 0, n: int = 6, k: int = 3):
    """Student logits, labels and teacher records: row 1 has an unmapped slot, row 2 no teacher at all,
    row 4 two slots on one student id; rows 0 and 3 are labelled with a recorded token (SLIM's w > 0)."""
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(n, VOCAB, generator=gen) * 1.5
    ids, logprobs, tail = record_teacher(torch.randn(n, VOCAB, generator=gen) * 2.0, k)
    labels = torch.randint(0, VOCAB, (n,), generator=gen)
    labels[0] = ids[0, 0]
    labels[3] = ids[3, 1]
    ids[1, 1] = -1
    ids[2] = -1
    ids[4, 2] = ids[4, 0]  # two teacher tokens mapped to one student token (vocabularies matched by text)
    return student, labels, ids, logprobs, tail


# ----------------------------------------------------------------------------------------------------------------------
# The slow reference


def safe_log(x: float) -> float:
    return math.log(x) if x > 0 else LOG_FLOOR


def kl(a: list[float], b: list[float]) -> float:
    """KL(a ‖ b) over buckets, 0·log 0 = 0, a bucket with b = 0 read at the floor."""
    return sum(ai * (safe_log(ai) - safe_log(bi)) for ai, bi in zip(a, b, strict=True) if ai > 0)


def reference_loss(kind, logits, labels, ids, logprobs, tails, alpha, temperature, beta) -> tuple[float, float, float]:
    """(loss, ce, distill) by explicit loops over positions, vocabulary and slots."""
    ce_terms, distill_terms = [], []
    for z, label, row_ids, row_lp, tail in zip(
        logits.tolist(), labels.tolist(), ids.tolist(), logprobs.tolist(), tails.tolist(), strict=True
    ):
        full = [math.exp(v) for v in z]
        student_at_1 = [v / sum(full) for v in full]
        ce_terms.append(-math.log(student_at_1[label]))
        mass_of: dict[int, float] = {}  # student id → teacher mass, slots sharing an id pooled
        for i, lp in zip(row_ids, row_lp, strict=True):
            if i >= 0:
                mass_of[i] = mass_of.get(i, 0.0) + math.exp(lp)
        mapped = list(mass_of.items())
        if kind == "ce" or not mapped:
            continue
        # Teacher buckets: the mapped tokens, then the tail plus every unmapped slot's mass.
        tail_mass = math.exp(tail) + sum(math.exp(lp) for i, lp in zip(row_ids, row_lp, strict=True) if i < 0)
        raw = [mass for _, mass in mapped] + [tail_mass]
        softened = [m ** (1 / temperature) for m in raw]
        p = [m / sum(softened) for m in softened]
        # Student buckets: softmax(z / T) at the mapped ids, the rest of the vocabulary summed.
        scaled = [math.exp(v / temperature) for v in z]
        q_full = [v / sum(scaled) for v in scaled]
        support = {i for i, _ in mapped}
        q = [q_full[i] for i, _ in mapped] + [sum(v for j, v in enumerate(q_full) if j not in support)]
        if kind == "kd":
            term = temperature**2 * kl(p, q)
        elif kind == "slim":
            teacher_gold = mass_of.get(label, 0.0)
            weight = 1 - math.exp(-teacher_gold / student_at_1[label])
            term = weight * temperature**2 * kl(p, q)
        elif kind == "reverse-kl" or (kind == "jsd" and beta == 1):
            term = kl(q, p)
        elif kind == "jsd" and beta == 0:
            term = kl(p, q)
        else:
            m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q, strict=True)]
            term = beta * kl(p, m) + (1 - beta) * kl(q, m)
        distill_terms.append(term)
    ce = sum(ce_terms) / len(ce_terms)
    distill = sum(distill_terms) / len(distill_terms) if distill_terms else 0.0
    loss = ce if kind == "ce" else alpha * distill + (1 - alpha) * ce
    return loss, ce, distill


# ----------------------------------------------------------------------------------------------------------------------
# Fast against slow


SETTINGS = [(0.5, 1.0, 0.5), (0.3, 2.0, 0.1), (0.9, 0.7, 0.9), (1.0, 1.0, 0.0), (0.0, 1.5, 1.0), (0.7, 3.0, 0.3)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("alpha", "temperature", "beta"), SETTINGS)
def test_every_kind_matches_the_slow_reference(kind, alpha, temperature, beta):
    for seed in (0, 1):
        batch = toy_batch(seed)
        loss, parts = distillation_loss(kind, *batch, alpha=alpha, temperature=temperature, beta=beta)
        expected, ce, distill = reference_loss(kind, *batch, alpha, temperature, beta)
        assert torch.allclose(loss, torch.tensor(expected), atol=1e-5), (seed, float(loss), expected)
        assert parts["ce"] == pytest.approx(ce, abs=1e-5)
        if kind != "ce":
            assert parts["distill"] == pytest.approx(distill, abs=1e-5)
            assert float(loss) == pytest.approx(alpha * parts["distill"] + (1 - alpha) * parts["ce"], abs=1e-5)


def test_ce_is_plain_cross_entropy_and_ignores_the_teacher():
    student, labels, *_ = toy_batch()
    empty = torch.empty(len(labels), 0)
    loss, parts = distillation_loss("ce", student, labels, empty.long(), empty, torch.zeros(len(labels)))
    assert torch.allclose(loss, F.cross_entropy(student, labels))
    assert set(parts) == {"ce"}


def test_kinds_are_the_registered_divergences_plus_ce():
    assert set(KINDS) == {"ce", *distill_losses._DIVERGENCES}


# ----------------------------------------------------------------------------------------------------------------------
# The buckets


def buckets_of(student, labels, ids, logprobs, tail, temperature=1.0):
    logits = student.float()
    log_probs = torch.log_softmax(logits, dim=-1)
    gold = log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    return distill_losses._buckets(logits, log_probs, gold, labels, ids, logprobs, tail, temperature)


def test_teacher_buckets_of_a_real_softmax_sum_to_one_and_keep_the_recorded_values():
    student, labels, *_ = toy_batch()
    ids, logprobs, tail = record_teacher(torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(2)), 3)
    recorded = logprobs.exp().sum(dim=1) + tail.exp()
    assert torch.allclose(recorded, torch.ones(6), atol=1e-6)
    b = buckets_of(student, labels, ids, logprobs, tail)
    assert torch.allclose((b.teacher.exp() * b.present).sum(dim=1), torch.ones(6), atol=1e-6)
    assert torch.allclose(b.teacher, torch.cat([logprobs, tail.unsqueeze(1)], dim=1), atol=1e-6)
    assert torch.allclose((b.student.exp() * b.present).sum(dim=1), torch.ones(6), atol=1e-6)


def test_an_unmapped_slots_mass_goes_to_the_tail():
    student, labels, ids, logprobs, tail = toy_batch()
    b = buckets_of(student, labels, ids, logprobs, tail)
    assert b.present[1].tolist() == [1.0, 0.0, 1.0, 1.0]
    expected_tail = math.log(math.exp(float(tail[1])) + math.exp(float(logprobs[1, 1])))
    assert float(b.teacher[1, -1]) == pytest.approx(expected_tail, abs=1e-6)
    assert float((b.teacher[1].exp() * b.present[1]).sum()) == pytest.approx(1.0, abs=1e-6)
    # The student's tail takes the unmapped token's probability as well.
    q = torch.softmax(student[1], dim=-1)
    outside = [j for j in range(VOCAB) if j not in (int(ids[1, 0]), int(ids[1, 2]))]
    assert float(b.student[1, -1].exp()) == pytest.approx(float(q[outside].sum()), abs=1e-6)


def test_slots_sharing_a_student_id_pool_their_mass():
    student, labels, ids, logprobs, tail = toy_batch()
    b = buckets_of(student, labels, ids, logprobs, tail)
    assert b.present[4].tolist() == [1.0, 1.0, 0.0, 1.0]
    pooled = math.log(math.exp(float(logprobs[4, 0])) + math.exp(float(logprobs[4, 2])))
    assert float(b.teacher[4, 0]) == pytest.approx(pooled, abs=1e-6)
    assert float(b.teacher[4, -1]) == pytest.approx(float(tail[4]), abs=1e-6)  # nothing of it went to the tail
    # The same as a record that held the pooled slot once and padded the other.
    once_ids, once_lp = ids.clone(), logprobs.clone()
    once_ids[4, 2], once_lp[4, 0], once_lp[4, 2] = -1, pooled, float("-inf")
    for kind in ("kd", "slim", "jsd"):
        assert torch.allclose(
            distillation_loss(kind, student, labels, ids, logprobs, tail)[0],
            distillation_loss(kind, student, labels, once_ids, once_lp, tail)[0],
        )


@pytest.mark.parametrize("kind", ["kd", "slim", "reverse-kl", "jsd"])
def test_positions_without_a_teacher_get_cross_entropy_only(kind):
    student, labels, ids, logprobs, tail = toy_batch()
    no_teacher = torch.full_like(ids, -1)
    loss, parts = distillation_loss(kind, student, labels, no_teacher, logprobs, tail, alpha=0.4)
    assert parts["distill"] == 0.0
    assert torch.allclose(loss, 0.6 * F.cross_entropy(student, labels))

    # Mixed batch: a teacherless row's gradient is its (1 - alpha)-weighted cross-entropy gradient alone.
    logits = student.clone().requires_grad_(True)
    loss, _ = distillation_loss(kind, logits, labels, ids, logprobs, tail, alpha=0.4)
    loss.backward()
    row = 2  # all slots -1
    ce_grad = 0.6 / len(labels) * (torch.softmax(student[row], -1) - F.one_hot(labels[row], VOCAB))
    assert torch.allclose(logits.grad[row], ce_grad, atol=1e-6)


@pytest.mark.parametrize("k", [VOCAB - 1, VOCAB])  # tail one token (exact at any T), or empty (-inf)
@pytest.mark.parametrize("kind", ["kd", "reverse-kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_divergence_is_zero_when_the_student_is_the_teacher(k, kind, temperature):
    full = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(3)) * 2
    ids, logprobs, tail = record_teacher(full, k)
    student = full + 1.7  # the same distribution, shifted logits
    labels = ids[:, 0]
    _, parts = distillation_loss(kind, student, labels, ids, logprobs, tail, temperature=temperature)
    assert parts["distill"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["kd", "slim", "reverse-kl", "jsd"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("k", [3, VOCAB])
def test_gradients_are_finite_with_an_empty_tail(kind, beta, k):
    gen = torch.Generator().manual_seed(4)
    ids, logprobs, _ = record_teacher(torch.randn(5, VOCAB, generator=gen) * 3, k)
    logprobs = torch.log_softmax(logprobs, dim=-1)  # the slots hold all the mass...
    tail = torch.full((5,), float("-inf"))  # ...and the tail is empty, while the student's is not (k = 3)
    logits = (torch.randn(5, VOCAB, generator=gen) * 3).requires_grad_(True)
    loss, parts = distillation_loss(kind, logits, ids[:, 0], ids, logprobs, tail, beta=beta, temperature=2.0)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and math.isfinite(parts["distill"])
    assert torch.isfinite(logits.grad).all()


def test_jsd_endpoints_are_forward_and_reverse_kl():
    batch = toy_batch(5)
    _, kd = distillation_loss("kd", *batch)
    _, reverse = distillation_loss("reverse-kl", *batch)
    _, at_zero = distillation_loss("jsd", *batch, beta=0.0)
    _, at_one = distillation_loss("jsd", *batch, beta=1.0)
    _, mixed = distillation_loss("jsd", *batch, beta=0.5)
    assert at_zero["distill"] == pytest.approx(kd["distill"], abs=1e-6)
    assert at_one["distill"] == pytest.approx(reverse["distill"], abs=1e-6)
    assert 0 < mixed["distill"] < max(kd["distill"], reverse["distill"])


def test_slim_weight_follows_relative_confidence_on_the_gold_token():
    ids = torch.tensor([[0, 1], [0, 1], [0, 1]])
    logprobs = torch.log(torch.tensor([[0.9, 0.05], [0.9, 0.05], [0.9, 0.05]]))
    tail = torch.log(torch.full((3,), 0.05))
    labels = torch.tensor([0, 1, 4])  # teacher confident / teacher doubtful / label not recorded
    student = torch.zeros(3, 5)  # uniform: q(label) = 0.2
    b = buckets_of(student, labels, ids, logprobs, tail)
    weights = -torch.expm1(-(b.teacher_gold - b.student_gold).exp())
    assert weights.tolist() == pytest.approx([1 - math.exp(-4.5), 1 - math.exp(-0.25), 0.0], abs=1e-6)
    _, parts = distillation_loss("slim", student, labels, ids, logprobs, tail)
    assert parts["slim_weight"] == pytest.approx(float(weights.mean()), abs=1e-6)


def test_bf16_logits_are_computed_in_float32():
    student, *rest = toy_batch()
    half = student.bfloat16()
    loss, _ = distillation_loss("jsd", half, *rest)
    expected, _ = distillation_loss("jsd", half.float(), *rest)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, expected)


def test_kd_training_moves_the_student_toward_the_teacher():
    _, labels, ids, logprobs, tail = toy_batch(6)
    logits = torch.nn.Parameter(torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(7)))
    optimizer = torch.optim.Adam([logits], lr=0.1)
    _, before = distillation_loss("kd", logits.detach(), labels, ids, logprobs, tail)
    for _ in range(30):
        optimizer.zero_grad()
        loss, _ = distillation_loss("kd", logits, labels, ids, logprobs, tail, alpha=1.0)
        loss.backward()
        optimizer.step()
    _, after = distillation_loss("kd", logits.detach(), labels, ids, logprobs, tail)
    assert after["distill"] < 0.2 * before["distill"]


# ----------------------------------------------------------------------------------------------------------------------
# Errors a user meets


def test_unknown_kind_and_bad_settings_are_config_errors():
    batch = toy_batch()
    with pytest.raises(ConfigError, match="did you mean 'reverse-kl'"):
        distillation_loss("reverse_kl", *batch)
    for bad in ({"alpha": 1.5}, {"temperature": 0.0}, {"beta": -0.1}):
        with pytest.raises(ConfigError):
            distillation_loss("kd", *batch, **bad)


def test_inconsistent_teacher_records_are_data_errors():
    student, labels, ids, logprobs, tail = toy_batch()
    padded = logprobs.clone()
    padded[1, 1] = 0.0  # a padding slot left at log 1 instead of -inf: the buckets hold ~2
    with pytest.raises(DataError, match="padding slots"):
        distillation_loss("kd", student, labels, ids, padded, tail)
    outside = ids.clone()
    outside[0, 0] = VOCAB
    with pytest.raises(DataError, match="outside the student's vocabulary"):
        distillation_loss("kd", student, labels, outside, logprobs, tail)
