"""A local transformers causal LM as teacher: batched, length-grouped, per-sample seeds.

Requests are pulled in windows, grouped by template and sorted by prompt, and cut into batches of
``batch_size`` (with one max_tokens and one stop set per batch): the samples of one prompt and the
problems of one few-shot template land together, and ``decoders.shared_prefix`` prefills what they
share once. Sampling is done per row (``per_row_sampling``): a request gives the same text alone, in a
batch of 32, shared or not.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from cotfactory.config.fields import RUNTIME
from cotfactory.decoders.tree_search import tree_key
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

    def tree_search_problem(self, chat: bool) -> str | None:
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
        self.prompt_tokens = 0  # Σ prompt tokens of the rows decoded …
        self.prefilled_tokens = 0  # … and those the model actually ran (shared prefixes once)

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
        for chunk in _windows(requests, window):
            trees = [r for r in chunk if r.mode == "tree"]
            for batch in self._batches([r for r in chunk if r.mode != "tree"]):
                decode = self.generate_contrastive_batch if _contrastive(batch[0][0]) else self.generate_batch
                # decoding is CPU/GPU bound: run it off the event loop so progress keeps ticking
                yield await asyncio.to_thread(decode, batch)
            for group in self._tree_groups(trees):
                yield await asyncio.to_thread(self.generate_tree_batch, group)

    def _batches(self, chunk: list[Request]) -> Iterator[list[tuple[Request, list[int]]]]:
        """Group by (decoding kind, max_tokens, stop strings), then template, sort by prompt length and
        tokens (a prompt's samples side by side), cut into batches."""

        def kind(item: tuple[Request, list[int]]) -> tuple:
            request = item[0]
            return (_contrastive(request), request.max_tokens, tuple(request.prompt.stop))  # type: ignore[union-attr]

        encoded = [(r, self._encode(r.prompt)) for r in chunk]  # type: ignore[arg-type]
        encoded.sort(key=lambda item: (kind(item), item[0].template, len(item[1]), item[1]))
        size = self.options.batch_size
        for _, group in itertools.groupby(encoded, key=kind):
            members = list(group)
            for start in range(0, len(members), size):
                yield members[start : start + size]

    def _tree_groups(self, requests: list[Request]) -> Iterator[list[list[Request]]]:
        """Trees (their candidates' requests) grouped by settings and template, a few per batch: enough
        that one depth's draws fill about one batch."""
        trees: dict[str, list[Request]] = {}
        for request in requests:
            trees.setdefault(tree_key(request), []).append(request)

        def kind(members: list[Request]) -> tuple:
            first = members[0]
            return (first.max_tokens, tuple(first.prompt.stop), tree_key(first, settings_only=True), first.template)  # type: ignore[union-attr]

        ordered = sorted(trees.values(), key=kind)
        for _, group in itertools.groupby(ordered, key=kind):
            members = list(group)
            settings = members[0][0].decoding
            per_batch = max(1, -(-self.options.batch_size // (int(settings["beam"]) * int(settings["branch"]))))
            for start in range(0, len(members), per_batch):
                yield members[start : start + per_batch]

    def _encode(self, prompt: RenderedPrompt) -> list[int]:
        ids = self.tokenizer(self.prompt_text(prompt), add_special_tokens=prompt.text is not None)["input_ids"]
        if ids and ids[-1] == self.tokenizer.eos_token_id:  # a tokenizer that ends every text (ByT5's) must
            ids = ids[:-1]  # not end the prompt: the model would read a finished text, as no student is taught
        return ids

    def generate_batch(self, batch: list[tuple[Request, list[int]]]) -> list[Sample]:
        from cotfactory.decoders.model_calls import pad_id, stop_string_check
        from cotfactory.decoders.shared_prefix import SampleRow, sample_rows

        started = time.monotonic()
        rows = [SampleRow(ids, r.temperature, r.top_p, r.sample_seed, r.max_tokens) for r, ids in batch]
        stop = list(batch[0][0].prompt.stop) if batch[0][0].prompt else []
        outputs, sharing = sample_rows(
            self.model,
            rows,
            self._eos_ids(),
            pad_id(self.tokenizer),
            stop_check=stop_string_check(self.tokenizer, stop) if stop else None,
            logprobs_k=self.logprobs_k,
        )
        self.requests_sent += len(batch)
        self.prompt_tokens += sharing.prompt_tokens
        self.prefilled_tokens += sharing.prefilled_tokens
        latency = time.monotonic() - started
        samples = []
        for (request, ids), output in zip(batch, outputs, strict=True):
            sample = self._to_sample(request, len(ids), output.token_ids, stop, latency)
            if output.distributions is not None:
                sample.distributions = output.distributions.head(sample.completion_tokens)
            samples.append(sample)
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

    def generate_tree_batch(self, trees: list[list[Request]]) -> list[Sample]:
        """Step-level tree search (``decoders.tree_search``): each tree's candidates, best first, go to its
        requests by rank; a rank the tree has no candidate for is a failed sample."""
        from cotfactory.decoders.tree_search import (
            TreeSearch,
            TreeSettings,
            run_searches,
            token_shares,
            tree_metadata,
            tree_stats,
        )

        started = time.monotonic()
        first = trees[0][0]
        stop = list(first.prompt.stop) if first.prompt else []
        settings = TreeSettings.from_decoding(first.decoding)
        searches = [
            TreeSearch(self._encode(r.prompt), settings, r.temperature, r.top_p, r.sample_seed, r.max_tokens)  # type: ignore[arg-type]
            for r in (members[0] for members in trees)
        ]
        run_searches(searches, lambda draws: self._draw_steps(draws, settings.delimiter, stop), self.options.batch_size)
        latency = time.monotonic() - started
        samples = []
        for members, search in zip(trees, searches, strict=True):
            candidates = search.candidates()
            shares = token_shares(search.stats.tokens, len(members))
            for request, share in zip(members, shares, strict=True):
                rank = int(request.decoding["candidate"])
                if rank >= len(candidates):
                    sample = Sample(
                        request=request,
                        finish_reason="error",
                        error=f"tree search kept {len(candidates)} candidate(s), none at rank {rank}",
                        prompt_tokens=len(search.prompt_ids),
                        latency_s=latency,
                        sent_seed=request.sample_seed,
                        sent_max_tokens=request.max_tokens,
                    )
                else:
                    path = candidates[rank].path
                    sample = self._to_sample(request, len(search.prompt_ids), list(path.token_ids), stop, latency)
                    if path.end == "length":
                        sample.finish_reason = "length"
                    sample.metadata["tree"] = tree_metadata(candidates[rank], rank)
                sample.completion_tokens = share  # the tree's drawn tokens, spread over its requests
                sample.metadata.setdefault("tree", {}).update(tree_stats(search, len(candidates)))
                samples.append(sample)
        self.requests_sent += sum(len(m) for m in trees)
        return samples

    def _draw_steps(self, draws: Any, delimiter: str, stop: list[str]) -> list[Any]:
        """One step for each draw: sampled until the delimiter follows some text, a stop string, EOS, or
        the path's token limit; with its summed log-probability under the model (temperature 1)."""
        from cotfactory.decoders.model_calls import pad_id
        from cotfactory.decoders.shared_prefix import SampleRow, sample_rows
        from cotfactory.decoders.tree_search import Step

        decode = self.tokenizer.decode

        def step_over(token_ids: Any) -> bool:
            text = decode(list(token_ids), skip_special_tokens=True)
            return delimiter in text.lstrip() or any(s in text for s in stop)

        rows = [
            SampleRow(list(d.prompt_ids + d.path.token_ids), d.temperature, d.top_p, d.seed, d.max_tokens)
            for d in draws
        ]
        eos = set(self._eos_ids())
        outputs, sharing = sample_rows(self.model, rows, list(eos), pad_id(self.tokenizer), step_over, logprobs_k=1)
        self.prompt_tokens += sharing.prompt_tokens
        self.prefilled_tokens += sharing.prefilled_tokens
        steps = []
        for draw, output in zip(draws, outputs, strict=True):
            ids = output.token_ids
            ended = bool(ids) and ids[-1] in eos
            if not ended and stop:
                path_text = decode(list(draw.path.token_ids) + ids, skip_special_tokens=True)
                ended = any(s in path_text for s in stop)
            logprob = float(output.distributions.token_logprobs.astype("float64").sum())
            steps.append(Step(tuple(ids), decode(ids, skip_special_tokens=True), logprob, "stop" if ended else None))
        return steps

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


def _contrastive(request: Request) -> bool:
    return request.mode in ("contrastive", "counterfactual")


def _windows(requests: Iterator[Request], size: int) -> Iterator[list[Request]]:
    """Requests in windows of about ``size``; a tree's candidates are never split over two windows."""
    chunk: list[Request] = []
    for request in requests:
        if len(chunk) >= size and not (request.mode == "tree" and tree_key(request) == tree_key(chunk[-1])):
            yield chunk  # a full window that ended on a tree's request, now known to be its last
            chunk = []
        chunk.append(request)
        if len(chunk) >= size and request.mode != "tree":
            yield chunk
            chunk = []
    if chunk:
        yield chunk
