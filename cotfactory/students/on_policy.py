"""On-policy distillation with a live local teacher: ``train-student --distill gkd`` (GKD, Agarwal et al. 2024).

A student trained only on the teacher's sequences never sees its own mistakes; at inference it
writes from its own prefixes. GKD closes that gap: with probability λ (``--lmbda``) a batch's
completions are replaced by ones the current student samples from the batch's prompts, and either
way the live teacher scores prompt + completion with full logits and the loss is the generalized
JSD(β) between the two next-token distributions on every completion token
(``distill_losses.generalized_jsd``: β = 0 forward KL, β = 1 reverse KL — MiniLLM's objective
without its policy gradient). With probability 1 − λ the batch keeps its teacher-written
completions (supervised KD on the teacher's text, with the teacher's full distribution).

* The loss is the JSD alone, as in GKD and TRL: no cross-entropy term (on the student's own samples it
  would reinforce them), so ``--distill-alpha`` does not apply; ``--distill-temperature`` softens both
  sides (no T² factor, as TRL). Each example's loss is its mean over completion tokens, and tasks and
  their weights combine as for every other loss.
* Prompt = every token before a row's first label (source, demonstrations, method context): the
  same split as the masks, so prompts never carry loss and a method's context is not re-sampled.
* Sampling: pure ancestral sampling at ``--on-policy-temperature`` (default 1, top-k and top-p off:
  the student's own distribution, which the on-policy objective is defined on), at most
  ``--on-policy-tokens`` new tokens (default ``--max-target-length``), cut after the first EOS (the
  EOS kept, as the teacher-written targets keep theirs), in eval mode (no dropout).
* Determinism: the coin and the sampling seed come from (``--seed``, global step, micro-batch),
  not from the global RNG, which is left untouched; a run resumed from a checkpoint draws the same
  coins and the same completions as the uninterrupted run.
* The teacher is loaded once, in eval mode with gradients off, on ``--teacher-device``, and runs in
  ``torch.inference_mode``; its outputs are cloned out of inference mode before they meet the
  student's graph. Under torchrun one process holds it and scores every process's batches
  (cotfactory.students.shared_teacher); each process still samples its own completions.

Why not TRL's ``GKDTrainer`` (trl 1.16, ``trl.experimental.gkd``): it subclasses ``SFTTrainer``, and its
sampling reads ``prompts`` / ``prompt_attention_mask`` from each batch, which its default collator
(``DataCollatorForChatML``) builds from a conversational "messages" dataset with the chat template;
our methods' (source, target, task, weight) examples, multitask weights, epoch-seeded length grouping,
logits_to_keep and masks would have to be rebuilt around it, or the Trainer subclass that already has
them kept beside it. Its λ coin is Python's global ``random.random()`` and its sampling the global
torch RNG (restored on resume only as a whole). The loss itself is a few lines: kept to TRL's
convention, and compared with ``GKDTrainer.generalized_jsd_loss`` in the tests when trl is installed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cotfactory.errors import ConfigError
from cotfactory.students.distill_losses import generalized_jsd
from cotfactory.students.features import IGNORE
from cotfactory.students.init_from_teacher import layer_outputs


@dataclass(frozen=True)
class OnPolicy:
    """``--distill gkd``'s settings."""

    lmbda: float = 0.5
    beta: float = 0.5
    temperature: float = 1.0  # softens both sides of the divergence (--distill-temperature)
    sample_temperature: float = 1.0  # of the student's own completions (--on-policy-temperature)
    max_new_tokens: int = 256
    seed: int = 42

    def draws_on_policy(self, step: int, micro: int) -> bool:
        """The coin of micro-batch ``micro`` of optimizer step ``step``: True with probability λ."""
        return random.Random(f"gkd-coin:{self.seed}:{step}:{micro}").random() < self.lmbda

    def sampling_seed(self, step: int, micro: int) -> int:
        digest = hashlib.sha256(f"gkd-sample:{self.seed}:{step}:{micro}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ------------------------------------------------------------------------------------------------ teacher


class LiveTeacher:
    """A causal LM scoring the student's token sequences: full logits, optionally layer outputs."""

    def __init__(self, model: Any, name: str):
        self.model = model.eval().requires_grad_(False)
        self.name = name

    @classmethod
    def load(cls, spec: str, device: str, student_tokenizer: Any, student: Any, weights: bool = True) -> LiveTeacher:
        """The teacher at ``spec`` (folder, hub id, .gguf, 'embedded'), refused before its weights are read
        when its tokenizer differs from the student's, and after when its logits are another width.
        ``weights=False``: its architecture only, on the meta device (the ranks that do not hold a shared
        teacher: cotfactory.students.shared_teacher), checked the same way."""
        from cotfactory.model_loading import load_causal_lm, load_tokenizer, resolve_model_path
        from cotfactory.students.token_alignment import VocabularyMismatch, same_vocabulary, tokenizer_name

        location = resolve_model_path(spec)
        tokenizer = load_tokenizer(location)
        if not same_vocabulary(tokenizer, student_tokenizer):
            raise VocabularyMismatch(
                f"teacher tokenizer '{tokenizer_name(tokenizer)}' ({len(tokenizer)} tokens) and student tokenizer "
                f"'{tokenizer_name(student_tokenizer)}' ({len(student_tokenizer)} tokens) differ: a live teacher "
                "reads the student's token ids and gkd compares full next-token distributions, so they need the "
                "same vocabulary"
            )
        model = load_causal_lm(location, device) if weights else _without_weights(location)
        widths = (model.get_output_embeddings().weight.shape[0], student.get_output_embeddings().weight.shape[0])
        if widths[0] != widths[1]:
            raise ConfigError(
                f"teacher '{spec}' scores {widths[0]} tokens and the student {widths[1]}: same tokenizer, but the "
                "logits must have the same width too"
            )
        return cls(model, spec)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int, layers: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the last ``logits_to_keep`` positions' logits, the outputs of decoder ``layers``), on the
        inputs' device, as ordinary tensors (cloned out of inference mode)."""
        with torch.inference_mode():
            if layers:
                with layer_outputs(self.model, layers) as states:
                    logits = self._forward(input_ids, attention_mask, logits_to_keep)
            else:
                logits, states = self._forward(input_ids, attention_mask, logits_to_keep), []
        home = input_ids.device
        return logits.to(home).clone(), [state.to(home).clone() for state in states]

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
        device = self.device
        output = self.model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), logits_to_keep=keep
        )
        return output.logits


def _without_weights(location: str) -> Any:
    """The causal LM at ``location`` built on the meta device: its config, widths and layers, no memory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(location))


# ------------------------------------------------------------------------------------------------ sampling


def on_policy_batch(
    model: Any, batch: dict[str, torch.Tensor], settings: OnPolicy, seed: int, pad_id: int, eos_ids: Sequence[int]
) -> dict[str, torch.Tensor]:
    """``batch`` with each row's completion replaced by one ``model`` samples from the row's prompt
    (seeded by ``seed``; the global RNG is left as it was). Other fields (task, weight) are kept."""
    input_ids, labels = batch["input_ids"], batch["labels"]
    lengths = prompt_lengths(labels, batch["attention_mask"])
    prompts = [input_ids[row, :length] for row, length in enumerate(lengths)]
    completions = sample(model, prompts, settings, seed, pad_id, eos_ids)
    return {**batch, **repacked(prompts, completions, pad_id)}


def prompt_lengths(labels: torch.Tensor, attention_mask: torch.Tensor) -> list[int]:
    """Tokens before each row's first label (a row without labels: all its tokens)."""
    lengths = []
    for row in range(labels.shape[0]):
        labelled = (labels[row] != IGNORE).nonzero()
        lengths.append(int(labelled[0]) if len(labelled) else int(attention_mask[row].sum()))
    return lengths


def sample(
    model: Any, prompts: list[torch.Tensor], settings: OnPolicy, seed: int, pad_id: int, eos_ids: Sequence[int]
) -> list[torch.Tensor]:
    """One completion per prompt, sampled in eval mode and cut after its first EOS (kept)."""
    from transformers import GenerationConfig

    ids, mask = left_padded(prompts, pad_id)
    device = next(model.parameters()).device
    config = GenerationConfig(
        do_sample=True,
        temperature=settings.sample_temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=settings.max_new_tokens,
        pad_token_id=pad_id,
        eos_token_id=list(eos_ids),
    )
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            output = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
    finally:
        model.train(was_training)
    return [cut_after_eos(row, eos_ids) for row in output[:, ids.shape[1] :]]


def left_padded(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts padded on the left (generation continues every row at the same column)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if len(row):
            ids[index, width - len(row) :] = row
            mask[index, width - len(row) :] = 1
    return ids, mask


def cut_after_eos(completion: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """The completion up to and including its first EOS (the padding generate adds after it dropped)."""
    ends = torch.isin(completion, torch.tensor(list(eos_ids), device=completion.device)).nonzero()
    return completion[: int(ends[0]) + 1] if len(ends) else completion


def repacked(prompts: list[torch.Tensor], completions: list[torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """prompt + completion per row, right-padded as the collator pads (positions start at 0), labels
    on the completion only."""
    rows = [torch.cat([p.cpu(), c.cpu()]) for p, c in zip(prompts, completions, strict=True)]
    width = max(len(row) for row in rows)
    device = prompts[0].device
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE)
    for index, (row, prompt) in enumerate(zip(rows, prompts, strict=True)):
        input_ids[index, : len(row)] = row
        attention_mask[index, : len(row)] = 1
        labels[index, len(prompt) : len(row)] = row[len(prompt) :]
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device), "labels": labels.to(device)}


# ------------------------------------------------------------------------------------------------ loss


def gkd_example_losses(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, settings: OnPolicy
) -> torch.Tensor:
    """Each example's mean generalized JSD(β) over its labelled (completion) tokens: shape (batch,).

    Causal logits at t predict the token at t + 1, so both sides are shifted as the CE is."""
    student_logits, teacher_logits, labels = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    chosen = labels != IGNORE
    per_token = generalized_jsd(student_logits[chosen], teacher_logits[chosen], settings.beta, settings.temperature)
    rows = chosen.nonzero()[:, 0]
    sums = per_token.new_zeros(labels.shape[0]).index_add(0, rows, per_token)
    return sums / chosen.sum(dim=1).clamp_min(1).to(sums.dtype)
