"""A local transformers causal LM as teacher: batched, length-grouped, per-sample seeds.

Requests are pulled in windows, sorted by prompt length and cut into batches of ``batch_size``
(with one max_tokens and one stop set per batch), so little compute goes to padding. Sampling is
done per row (``sampling.PerRowSampler``): a request gives the same text alone or in a batch of 32.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from cotfactory.config.fields import RUNTIME
from cotfactory.distributions import TokenDistributions
from cotfactory.errors import TeacherError
from cotfactory.model_loading import load_causal_lm, load_tokenizer, model_label, quiet_transformers, resolve_model_path
from cotfactory.records import RenderedPrompt, Request, Sample
from cotfactory.teachers.base import Teacher, TeacherOptions

WINDOW_BATCHES = 8  # batches' worth of requests sorted together by length


class HFOptions(TeacherOptions):
    """A local transformers causal LM (a folder, a hub id, or a .gguf file)."""

    kind: Literal["hf"] = "hf"
    model: str | None = Field(None, description="Path, hub id or .gguf file (default: the embedded SmolLM2).")
    batch_size: int = Field(16, ge=1, description="Sequences decoded together.", json_schema_extra=RUNTIME)
    device: str = Field("auto", description="Device: auto, cpu, cuda, cuda:1, mps.", json_schema_extra=RUNTIME)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype (auto: bfloat16 on GPUs that support it, else float32)."
    )

    gives_logits: ClassVar[bool] = True

    def logprobs_problem(self, k: int) -> str | None:
        return None


class HFTeacher(Teacher[HFOptions]):
    name = "hf"
    Options = HFOptions

    def __init__(self, options: HFOptions, retry_tokens: int = 0):
        super().__init__(options, retry_tokens)
        quiet_transformers()
        self._location = resolve_model_path(options.model)  # checks the model exists; converts GGUF once
        self.tokenizer = load_tokenizer(self._location)
        self.tokenizer.padding_side = "left"
        self._model: Any = None  # loaded on first use: a finished run never pays for it
        self.requests_sent = 0

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_causal_lm(self._location, self.options.device, self.options.dtype)
        return self._model

    @property
    def model_label(self) -> str:
        return model_label(self.options.model)

    def tokenizer_for_distributions(self) -> Any:
        return self.tokenizer

    def check_prompt(self, prompt: RenderedPrompt) -> None:
        if prompt.messages is not None and not self.tokenizer.chat_template:
            raise TeacherError(f"model '{self.model_label}' has no chat template: use a completion-form template")

    def prompt_text(self, prompt: RenderedPrompt) -> str:
        if prompt.text is not None:
            return prompt.text
        return self.tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)

    async def generate(self, requests: Iterator[Request]) -> AsyncIterator[list[Sample]]:
        window = self.options.batch_size * WINDOW_BATCHES
        requests = iter(requests)
        while chunk := list(itertools.islice(requests, window)):
            for batch in self._batches(chunk):
                decode = self.generate_contrastive_batch if _contrastive(batch[0][0]) else self.generate_batch
                # decoding is CPU/GPU bound: run it off the event loop so progress keeps ticking
                yield await asyncio.to_thread(decode, batch)

    def _batches(self, chunk: list[Request]) -> Iterator[list[tuple[Request, list[int]]]]:
        """Group by (decoding kind, max_tokens, stop strings), sort by prompt length, cut into batches."""

        def kind(item: tuple[Request, list[int]]) -> tuple:
            request = item[0]
            return (_contrastive(request), request.max_tokens, tuple(request.prompt.stop))  # type: ignore[union-attr]

        encoded = [(r, self._encode(r.prompt)) for r in chunk]  # type: ignore[arg-type]
        encoded.sort(key=lambda item: (kind(item), len(item[1])))
        size = self.options.batch_size
        for _, group in itertools.groupby(encoded, key=kind):
            members = list(group)
            for start in range(0, len(members), size):
                yield members[start : start + size]

    def _encode(self, prompt: RenderedPrompt) -> list[int]:
        ids = self.tokenizer(self.prompt_text(prompt), add_special_tokens=prompt.text is not None)["input_ids"]
        if ids and ids[-1] == self.tokenizer.eos_token_id:  # a tokenizer that ends every text (ByT5's) must
            ids = ids[:-1]  # not end the prompt: the model would read a finished text, as no student is taught
        return ids

    def generate_batch(self, batch: list[tuple[Request, list[int]]]) -> list[Sample]:
        import torch

        from cotfactory.decoders.per_row_sampling import PerRowSampler

        started = time.monotonic()
        requests = [r for r, _ in batch]
        first = requests[0]
        padded = self.tokenizer.pad({"input_ids": [ids for _, ids in batch]}, return_tensors="pt")
        device = self.model.device
        sampler = PerRowSampler(
            [r.temperature for r in requests], [r.top_p for r in requests], [r.sample_seed for r in requests]
        )
        stop = list(first.prompt.stop) if first.prompt else []
        recorder = TopKRecorder(self.logprobs_k) if self.logprobs_k else None
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=padded["input_ids"].to(device),
                attention_mask=padded["attention_mask"].to(device),
                max_new_tokens=first.max_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=[recorder, sampler] if recorder else [sampler],
                stop_strings=stop or None,
                tokenizer=self.tokenizer if stop else None,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self._eos_ids(),
            )
        self.requests_sent += len(batch)
        latency = time.monotonic() - started
        prompt_width = padded["input_ids"].shape[1]
        samples = [
            self._to_sample(request, len(ids), output[row, prompt_width:].tolist(), stop, latency)
            for row, (request, ids) in enumerate(batch)
        ]
        if recorder is not None:
            for row, sample in enumerate(recorder.finish(output[:, prompt_width:])):
                samples[row].distributions = sample.head(samples[row].completion_tokens)
        return samples

    def generate_contrastive_batch(self, batch: list[tuple[Request, list[int]]]) -> list[Sample]:
        """SCOTT contrastive decoding: each row follows its target context (prompt with the answer it
        must support) and is contrasted against the same prompt with the other answer."""
        from cotfactory.decoders.contrastive import ContrastiveRow, contrastive_generate

        started = time.monotonic()
        rows = [
            ContrastiveRow(
                target_ids=ids,
                contrast_ids=self._encode(request.contrast),  # type: ignore[arg-type]
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.sample_seed,
                max_tokens=request.max_tokens,
                weight=float(request.decoding["weight"]),
                plausibility=request.decoding.get("plausibility"),
            )
            for request, ids in batch
        ]
        stop = list(batch[0][0].prompt.stop) if batch[0][0].prompt else []
        outputs = contrastive_generate(self.model, self.tokenizer, rows, self._eos_ids(), stop or None)
        self.requests_sent += len(batch)
        latency = time.monotonic() - started
        return [
            self._to_sample(request, len(ids), output.token_ids, stop, latency)
            for (request, ids), output in zip(batch, outputs, strict=True)
        ]

    def _eos_ids(self) -> list[int]:
        configured = self.model.generation_config.eos_token_id
        ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def _to_sample(
        self, request: Request, prompt_tokens: int, new_ids: list[int], stop: list[str], latency: float
    ) -> Sample:
        eos = set(self._eos_ids())
        pad = self.tokenizer.pad_token_id
        generated: list[int] = []
        finished = False
        for token in new_ids:
            generated.append(token)
            if token in eos:
                finished = True
                break
        if not finished:  # trailing pads after a stop string belong to no one
            while generated and generated[-1] == pad and pad not in eos:
                generated.pop()
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut != -1:
            text, finished = text[:cut], True
        return Sample(
            request=request,
            text=text.strip(),
            finish_reason="stop" if finished or len(generated) < request.max_tokens else "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(generated),
            latency_s=latency,
            attempts=1,
            sent_seed=request.sample_seed,
            sent_max_tokens=request.max_tokens,
        )


class TopKRecorder:
    """A logits processor that records, at each step, the top-K of the model's own distribution
    (log-softmax of the raw logits: temperature 1, before top-p) and the log-mass outside it, and
    passes the scores on untouched. The chosen token's log-probability is read at the next step, when
    the token is known (and at ``finish`` for the last one)."""

    def __init__(self, k: int):
        self.k = k
        self.steps: list[tuple[Any, Any, Any]] = []  # (top ids, top logprobs, tail) per step, (rows, …)
        self.chosen: list[Any] = []
        self._last: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._last is not None:
            self.chosen.append(self._chosen_logprob(input_ids[:, -1:]))
        logits = scores.float()
        normalizer = torch.logsumexp(logits, dim=-1, keepdim=True)  # two passes over the vocabulary, no copy
        top = logits.topk(self.k, dim=-1)
        top_logprobs = top.values - normalizer
        # the tail: log(1 - mass of the top K); float16 storage makes the lost precision of a tiny tail moot
        tail = torch.log1p(-torch.exp(torch.logsumexp(top_logprobs, dim=-1)).clamp(max=1.0))
        self.steps.append((top.indices.int().cpu(), top_logprobs.cpu(), tail.cpu()))
        self._last = (logits, normalizer)
        return scores

    def _chosen_logprob(self, tokens: Any) -> Any:
        logits, normalizer = self._last
        return (logits.gather(1, tokens.to(logits.device)) - normalizer).squeeze(1)

    def finish(self, generated: Any) -> list[TokenDistributions]:
        """Each row's distributions over every step; ``generated`` is (rows, steps), the new tokens.
        The caller cuts each row to its own tokens."""
        import torch

        self.chosen.append(self._chosen_logprob(generated[:, -1:]))
        ids = torch.stack([s[0] for s in self.steps], dim=1).numpy()
        values = torch.stack([s[1] for s in self.steps], dim=1).numpy()
        tails = torch.stack([s[2] for s in self.steps], dim=1).numpy()
        chosen = torch.stack([c.cpu() for c in self.chosen], dim=1).numpy()
        tokens = generated.cpu().numpy()
        return [
            TokenDistributions.build(tokens[row], chosen[row], ids[row], values[row], tails[row])
            for row in range(ids.shape[0])
        ]


def _contrastive(request: Request) -> bool:
    return request.mode in ("contrastive", "counterfactual")
