"""Any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama) through the ``openai`` SDK.

The SDK's own retries are off (``max_retries=0``): ``tenacity`` owns retrying, so that every
transient failure — 429 (honouring Retry-After), 5xx, timeouts, dropped connections, bodies that do
not parse — is retried the same way with bounded attempts, and permanent ones (400, 401, 404, …)
become failed samples at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import openai
import orjson
from aiolimiter import AsyncLimiter
from pydantic import Field, field_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from cotfactory.config.fields import RUNTIME
from cotfactory.decoders.tree_search import (
    Step,
    StepDraw,
    TreeSearch,
    TreeSettings,
    token_shares,
    tree_key,
    tree_metadata,
    tree_stats,
)
from cotfactory.distributions import TokenDistributions
from cotfactory.errors import TeacherError
from cotfactory.records import RenderedPrompt, Request, Sample
from cotfactory.teachers.base import Teacher, TeacherOptions
from cotfactory.teachers.openai_transport import Transport

_TRANSIENT_STATUS = {408, 409, 425, 429}
_MAX_RETRY_AFTER = 120.0


class MalformedResponse(Exception):
    """A 200 answer that is not a usable completion (no choices, wrong count, not JSON)."""


#: What one attempt may end in, short of a bug: transient ones are retried, the rest fail the sample.
_FAILURES = (openai.OpenAIError, MalformedResponse, json.JSONDecodeError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500
    return isinstance(
        exc,
        openai.APIConnectionError | openai.APIResponseValidationError | MalformedResponse | json.JSONDecodeError,
    )


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), if it said."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class BackoffWait:
    """Honour Retry-After when given; otherwise exponential backoff with full jitter.

    ``attempts_before``: attempts made before tenacity took over (its attempt 1 is the request's
    attempt ``attempts_before + 1``)."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, attempts_before: int = 0):
        self.base, self.cap, self.attempts_before = base, cap, attempts_before

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self.seconds(exc, self.attempts_before + state.attempt_number)

    def seconds(self, exc: BaseException | None, attempt_number: int) -> float:
        """The wait after the request's attempt ``attempt_number`` failed with ``exc``."""
        asked = retry_after_seconds(exc)
        if asked is not None:
            return min(asked, _MAX_RETRY_AFTER) + random.uniform(0, 0.1)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt_number - 1)))


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        message = exc.message if isinstance(exc.message, str) else str(exc.message)
        return f"HTTP {exc.status_code}: {message}"
    return f"{type(exc).__name__}: {exc}"


class OpenAIOptions(TeacherOptions):
    """Any OpenAI-compatible endpoint, through the ``openai`` SDK."""

    kind: Literal["openai"] = "openai"
    needs: ClassVar[dict[str, str]] = {"model": "the served model's name"}
    model: str | None = Field(None, description="The served model's name.")
    base_url: list[str] = Field([], description="OpenAI-compatible base URL(s); several spread the load.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="Name of the environment variable holding the API key ('' for none)."
    )
    concurrency: int = Field(16, ge=1, le=4096, description="Requests in flight at once.", json_schema_extra=RUNTIME)
    rpm: float | None = Field(None, gt=0, description="Requests-per-minute limit.", json_schema_extra=RUNTIME)
    tpm: float | None = Field(None, gt=0, description="Tokens-per-minute limit.", json_schema_extra=RUNTIME)
    timeout: float = Field(
        120.0, gt=0, description="Seconds before one HTTP attempt times out.", json_schema_extra=RUNTIME
    )
    max_attempts: int = Field(
        6, ge=1, le=50, description="Attempts per request on transient errors.", json_schema_extra=RUNTIME
    )
    use_n: Literal["auto", "always", "never"] = Field(
        "auto", description="Ask for several samples with n>1 (auto: until the server shows it ignores n)."
    )
    tokenizer: str | None = Field(
        None,
        description="The served model's tokenizer (folder, hub id, .gguf): maps --logprobs tokens to ids "
        "(without one the token strings are kept, and students align to them by text with --align).",
    )

    def logprobs_problem(self, k: int) -> str | None:
        return None

    def tree_search_problem(self, chat: bool) -> str | None:
        if chat:
            return (
                "search 'tree' over an OpenAI-compatible endpoint needs a completion-form template (the "
                "completions API continues a partial rationale; the chat API cannot)"
            )
        return None

    @field_validator("api_key_env")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class OpenAITeacher(Teacher[OpenAIOptions]):
    name = "openai"
    Options = OpenAIOptions

    def __init__(self, options: OpenAIOptions, retry_tokens: int = 0):
        super().__init__(options, retry_tokens)
        if not options.base_url and not os.environ.get("OPENAI_BASE_URL"):
            urls = ["https://api.openai.com/v1"]
        else:
            urls = list(options.base_url) or [os.environ["OPENAI_BASE_URL"]]
        self._key = self._read_key(options.api_key_env)
        self.clients = [
            openai.AsyncOpenAI(
                base_url=url,
                api_key=self._key or "no-key",
                max_retries=0,
                timeout=options.timeout,
            )
            for url in urls
        ]
        self.transports = [Transport(client, options.concurrency) for client in self.clients]
        self.base_urls = urls
        self._in_flight = [0] * len(self.clients)
        self._next_client = 0
        self._rpm = AsyncLimiter(options.rpm, 60) if options.rpm else None
        self._tpm = AsyncLimiter(options.tpm, 60) if options.tpm else None
        #: None: not known yet; learnt from the first n>1 call in ``auto`` mode.
        self.n_honoured: bool | None = {"auto": None, "always": True, "never": False}[options.use_n]
        self.requests_sent = 0
        self._token_reader: TokenReader | None = None
        self._step_slots: asyncio.Semaphore | None = None  # tree search: steps in flight, at most --concurrency

    @staticmethod
    def _read_key(variable: str | None) -> str | None:
        if variable is None:
            return None
        value = os.environ.get(variable)
        if not value:
            raise TeacherError(
                f"environment variable {variable} is not set (api_key_env); set it, or pass "
                "--api-key-env '' for a server without keys"
            )
        return value

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def preflight(self) -> None:
        """Every base URL must answer HTTP at all (any status will do: some servers lack /models);
        with --logprobs, every one must return top logprobs for a one-token probe."""
        for client, transport, url in zip(self.clients, self.transports, self.base_urls, strict=True):
            try:
                await client.with_options(timeout=min(self.options.timeout, 10.0)).models.list()
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                raise TeacherError(f"cannot reach base URL {url}: {self.redact(str(exc.__cause__ or exc))}") from None
            except openai.APIStatusError:
                pass
            if self.logprobs_k:
                await self._probe_logprobs(transport, url)
        if self.logprobs_k:
            self._token_reader = TokenReader(self.tokenizer_for_distributions())

    @property
    def records_strings(self) -> bool:
        """--logprobs without a tokenizer: the token strings are recorded, in the run's string vocabulary."""
        return bool(self.logprobs_k) and not self.options.tokenizer

    async def _probe_logprobs(self, transport: Transport, url: str) -> None:
        body = {
            "model": self.options.model,
            "messages": [{"role": "user", "content": "Say yes."}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.logprobs_k,
        }
        try:
            reply = read_reply(await transport.post("/chat/completions", _json_bytes(body)), n=1)
        except _FAILURES as exc:
            raise TeacherError(
                f"{url} refused a --logprobs {self.logprobs_k} probe: {self.redact(describe_error(exc))[:200]}"
            ) from None
        entries = _logprob_entries(reply.choices[0].logprobs)
        if not entries or not entries[0][2]:
            raise TeacherError(
                f"{url} returned no top logprobs for top_logprobs={self.logprobs_k}: it cannot record distributions"
            )

    def tokenizer_for_distributions(self) -> Any:
        from cotfactory.model_loading import load_tokenizer, resolve_model_path

        if self._token_reader is not None:
            return self._token_reader.tokenizer
        if not self.options.tokenizer:
            return None
        return load_tokenizer(resolve_model_path(self.options.tokenizer))

    async def aclose(self) -> None:
        for transport in self.transports:
            await transport.aclose()
        for client in self.clients:
            await client.close()

    # scheduling -------------------------------------------------------------------------------
    def _calls(self, requests: Iterator[Request]) -> Iterator[list[Request]]:
        """Group the samples of one (problem, template, temperature, seed) into one n>1 call
        while the server may honour n; otherwise one call per sample, each with its own seed."""
        group: list[Request] = []
        for request in requests:
            if request.mode == "tree" or (group and group[0].mode == "tree"):  # one call: a tree's candidates
                if group and not (request.mode == "tree" and tree_key(request) == tree_key(group[0])):
                    yield group
                    group = []
                group.append(request)
                continue
            if self.n_honoured is False:
                if group:
                    yield from ([r] for r in group)
                    group = []
                yield [request]
                continue
            if group and not _same_setting(group[0], request):
                yield group
                group = []
            group.append(request)
        if group:
            yield group

    async def generate(self, requests: Iterator[Request]) -> AsyncIterator[list[Sample]]:
        calls = self._calls(requests)
        results: asyncio.Queue[list[Sample] | None] = asyncio.Queue()

        async def worker() -> None:
            try:
                for call in calls:  # shared iterator: each worker takes the next call
                    for samples in await self._run_call(call):
                        await results.put(samples)
            finally:
                await results.put(None)

        workers = [asyncio.create_task(worker()) for _ in range(self.options.concurrency)]
        finished = 0
        try:
            while finished < len(workers):
                item = await results.get()
                if item is None:
                    finished += 1
                else:
                    yield item
            for task in workers:
                task.result()  # surface a worker's bug
        finally:
            for task in workers:
                task.cancel()

    # one call ---------------------------------------------------------------------------------
    async def _run_call(self, group: list[Request]) -> list[list[Sample]]:
        """Samples for a group, as units to commit: the n>1 answer, then fanned-out leftovers."""
        if group[0].mode == "tree":
            return [await self._tree(group)]
        if len(group) == 1 or self.n_honoured is False:
            return [[await self._one(r)] for r in group]
        samples = await self._n_call(group)
        units = [samples]
        for request in group[len(samples) :]:  # the server gave fewer choices than asked
            units.append([await self._one(request)])
        return units

    async def _one(self, request: Request) -> Sample:
        started = time.monotonic()
        reply, attempts, error = await self._send_with_retries(request, 1, request.sample_seed, request.max_tokens)
        if error is not None:
            return self._failed(request, error, attempts, started, request.sample_seed)
        sample = self._to_samples([request], reply, attempts, started, request.sample_seed, request.max_tokens)[0]
        return await self._maybe_retry_length(sample, started)

    async def _n_call(self, group: list[Request]) -> list[Sample]:
        started = time.monotonic()
        seed = group[0].sample_seed
        reply, attempts, error = await self._send_with_retries(group[0], len(group), seed, group[0].max_tokens)
        if error is not None:
            return [self._failed(r, error, attempts, started, seed) for r in group]
        got = len(reply.choices)
        if self.n_honoured is None:
            self.n_honoured = got == len(group)
        samples = self._to_samples(group[:got], reply, attempts, started, seed, group[0].max_tokens)
        return [await self._maybe_retry_length(s, started) for s in samples]

    async def _maybe_retry_length(self, sample: Sample, started: float) -> Sample:
        """On finish_reason 'length', ask once more with a larger max_tokens (up to the cap)."""
        request = sample.request
        bigger = self.retry_tokens
        if sample.finish_reason != "length" or bigger <= request.max_tokens:
            return sample
        reply, attempts, error = await self._send_with_retries(request, 1, request.sample_seed, bigger)
        if error is not None:  # keep the truncated sample rather than lose it
            sample.metadata["length_retry_error"] = error
            sample.attempts += attempts
            return sample
        retried = self._to_samples([request], reply, attempts, started, request.sample_seed, bigger)[0]
        retried.attempts += sample.attempts
        retried.prompt_tokens += sample.prompt_tokens
        retried.completion_tokens += sample.completion_tokens
        retried.metadata["length_retried"] = True
        return retried

    async def _send_with_retries(
        self, request: Request, n: int, seed: int, max_tokens: int, logprobs: int = 0
    ) -> tuple[Reply | None, int, str | None]:
        """(reply, attempts, error): error is set when the request failed for good.

        The first attempt runs bare and tenacity takes over only after a transient failure, with the
        same stop and waits as if it had run from the start: its set-up and iteration cost ~40 µs of
        client CPU per request, a few per cent of it (bench/generate_api.py), for nothing when the
        first attempt succeeds."""
        attempts = 1
        try:
            try:
                return await self._send(request, n, seed, max_tokens, logprobs), attempts, None
            except _FAILURES as exc:
                if not is_transient(exc) or self.options.max_attempts == 1:
                    raise
                await asyncio.sleep(BackoffWait().seconds(exc, attempt_number=1))
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_transient),
                stop=stop_after_attempt(self.options.max_attempts - attempts),
                wait=BackoffWait(attempts_before=attempts),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    reply = await self._send(request, n, seed, max_tokens, logprobs)
            return reply, attempts, None
        except _FAILURES as exc:
            suffix = f" (after {attempts} attempts)" if is_transient(exc) else ""
            # redact before cutting: a cut through the key would leave part of it unredacted
            return None, attempts, self.redact(describe_error(exc))[:500] + suffix

    # step-level tree search ------------------------------------------------------------------
    async def _tree(self, group: list[Request]) -> list[Sample]:
        """One tree (``decoders.tree_search``) over the completions API: each step is a completion of the
        prompt plus the path so far, with the logprob of every token; a failed step fails the tree."""
        started = time.monotonic()
        first = group[0]
        settings = TreeSettings.from_decoding(first.decoding)
        search = TreeSearch((), settings, first.temperature, first.top_p, first.sample_seed, first.max_tokens)
        attempts = prompt_tokens = 0
        while not search.done:
            drawn = await asyncio.gather(*(self._step(first, draw, settings.delimiter) for draw in search.pending()))
            failed = next((error for _, _, error, _ in drawn if error is not None), None)
            attempts += sum(a for _, a, _, _ in drawn)
            prompt_tokens += sum(p for _, _, _, p in drawn)
            if failed is not None:
                return [self._failed(r, failed, attempts, started, r.sample_seed) for r in group]
            search.take([step for step, _, _, _ in drawn])  # type: ignore[misc]
        candidates = search.candidates()
        samples = []
        for request, share in zip(group, token_shares(search.stats.tokens, len(group)), strict=True):
            rank = int(request.decoding["candidate"])
            if rank >= len(candidates):
                sample = self._failed(
                    request, f"tree search kept {len(candidates)} candidate(s), none at rank {rank}", 0, started, 0
                )
            else:
                path = candidates[rank].path
                sample = Sample(
                    request=request,
                    text="".join(path.steps).strip(),
                    finish_reason="length" if path.end == "length" else "stop",
                    latency_s=time.monotonic() - started,
                    sent_seed=request.sample_seed,
                    sent_max_tokens=request.max_tokens,
                    metadata={"tree": tree_metadata(candidates[rank], rank)},
                )
            sample.attempts = attempts if rank == 0 else 0
            sample.prompt_tokens = prompt_tokens if rank == 0 else 0  # every step re-sends the prompt: billed once
            sample.completion_tokens = share
            sample.metadata.setdefault("tree", {}).update(tree_stats(search, len(candidates)))
            samples.append(sample)
        return samples

    async def _step(self, request: Request, draw: StepDraw, delimiter: str) -> tuple[Step | None, int, str | None, int]:
        """(the step, attempts, error, prompt tokens): a completion of the prompt and the path, cut after the
        first delimiter that follows some text (tokens past it are spent, not kept)."""
        prompt = request.prompt
        assert prompt is not None and prompt.text is not None, "tree search takes completion-form prompts"
        continued = RenderedPrompt(text=prompt.text + "".join(draw.path.steps), stop=prompt.stop)
        step_request = request.model_copy(
            update={"prompt": continued, "top_p": draw.top_p, "temperature": draw.temperature}
        )
        if self._step_slots is None:  # a tree's draws share --concurrency with every other tree's
            self._step_slots = asyncio.Semaphore(self.options.concurrency)
        async with self._step_slots:
            reply, attempts, error = await self._send_with_retries(
                step_request, 1, draw.seed, draw.max_tokens, logprobs=1
            )
        if error is not None or reply is None:
            return None, attempts, error, 0
        choice = reply.choices[0]
        entries = _logprob_entries(choice.logprobs)
        if not entries and choice.text:
            return None, attempts, "tree search: the server returned no logprobs for a step", reply.prompt_tokens
        text, logprob, kept = "", 0.0, 0
        for token, token_logprob, _ in entries or []:
            text += token
            logprob += token_logprob
            kept += 1
            if delimiter in text.lstrip():
                break
        cut_at_delimiter = delimiter in text.lstrip()
        end = None if cut_at_delimiter or choice.finish_reason == "length" else "stop"  # EOS or a stop string
        spent = max(reply.completion_tokens, kept)
        return Step(tuple([0] * kept), text, logprob, end, spent), attempts, None, reply.prompt_tokens

    async def _send(self, request: Request, n: int, seed: int, max_tokens: int, logprobs: int = 0) -> Reply:
        """``logprobs``: top-K logprobs for this call (default: the run's --logprobs)."""
        prompt = request.prompt
        assert prompt is not None, "requests reach a teacher with their rendered prompt"
        if self._rpm:
            await self._rpm.acquire(1)
        if self._tpm:
            await self._tpm.acquire(min(self._tpm.max_rate, prompt.char_length() / 4 + max_tokens * n))
        index = self._pick_client()
        self._in_flight[index] += 1
        self.requests_sent += 1
        args: dict[str, Any] = {
            "model": request.model,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": seed,
            "max_tokens": max_tokens,
        }
        if n > 1:
            args["n"] = n
        if prompt.stop:
            args["stop"] = prompt.stop[:4]
        chat = prompt.messages is not None
        if k := logprobs or self.logprobs_k:  # the chat API takes a flag and a count; the completions API a count
            args.update({"logprobs": True, "top_logprobs": k} if chat else {"logprobs": k})
        body = {**args, "messages": prompt.messages} if chat else {**args, "prompt": prompt.text}
        try:
            raw = await self.transports[index].post("/chat/completions" if chat else "/completions", _json_bytes(body))
        finally:
            self._in_flight[index] -= 1
        return read_reply(raw, n)

    def _pick_client(self) -> int:
        """The replica with the fewest requests in flight (round robin among ties)."""
        count = len(self.clients)
        start = self._next_client
        self._next_client = (start + 1) % count
        order = [(start + i) % count for i in range(count)]
        return min(order, key=lambda j: self._in_flight[j])

    # building samples -------------------------------------------------------------------------
    def _to_samples(
        self, requests: list[Request], reply: Reply, attempts: int, started: float, seed: int, max_tokens: int
    ) -> list[Sample]:
        choices = sorted(reply.choices, key=lambda c: c.index)[: len(requests)]
        completion_tokens = _split_tokens(reply.completion_tokens, [c.text for c in choices])
        latency = time.monotonic() - started
        samples = [
            Sample(
                request=request,
                text=choice.text,
                finish_reason="length" if choice.finish_reason == "length" else "stop",
                prompt_tokens=reply.prompt_tokens if i == 0 else 0,  # billed once for an n>1 call
                completion_tokens=completion_tokens[i],
                latency_s=latency,
                attempts=attempts,
                sent_seed=seed,
                sent_max_tokens=max_tokens,
                metadata={"n": len(requests)} if len(requests) > 1 else {},
            )
            for i, (request, choice) in enumerate(zip(requests, choices, strict=True))
        ]
        if self._token_reader is not None:
            for sample, choice in zip(samples, choices, strict=True):
                entries = _logprob_entries(choice.logprobs)
                if entries:
                    sample.distributions, unmapped = self._token_reader.read(entries, self.logprobs_k)
                    if unmapped:
                        sample.metadata["logprob_tokens_unmapped"] = unmapped
        return samples

    @staticmethod
    def _failed(request: Request, error: str, attempts: int, started: float, seed: int) -> Sample:
        return Sample(
            request=request,
            finish_reason="error",
            error=error,
            attempts=attempts,
            latency_s=time.monotonic() - started,
            sent_seed=seed,
        )


def _same_setting(a: Request, b: Request) -> bool:
    return (a.problem_id, a.template_hash, a.temperature, a.seed, a.max_tokens) == (
        b.problem_id,
        b.template_hash,
        b.temperature,
        b.seed,
        b.max_tokens,
    ) and a.prompt is b.prompt


@dataclass(frozen=True, slots=True)
class Choice:
    """The fields of one reply choice that a sample is built from."""

    index: int
    text: str
    finish_reason: Any
    logprobs: Any  # the choice's raw ``logprobs`` object (chat or completions shape), or None


@dataclass(frozen=True, slots=True)
class Reply:
    """A usable completion: 1..n choices with text, and the usage counts."""

    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int


def _json_bytes(body: dict[str, Any]) -> bytes:
    """The body as the SDK would serialise it (compact, UTF-8), by orjson; the stdlib for what orjson
    refuses (an integer beyond 64 bits: a seed the server then rejects with a 400, as before)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def read_reply(raw: bytes, n: int) -> Reply:
    """The reply's choices and usage, or MalformedResponse (a 200 without 1..n choices with text)."""
    data = orjson.loads(raw)  # not JSON: orjson.JSONDecodeError, a json.JSONDecodeError (transient)
    found = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(found, list) or not 1 <= len(found) <= n:
        count = len(found) if isinstance(found, list) else "no"
        raise MalformedResponse(f"asked for {n} choice(s), got {count}")
    choices = []
    for choice in found:
        if not isinstance(choice, dict):
            raise MalformedResponse("a choice is not an object")
        message = choice.get("message")
        if message is not None:  # chat; a null content (a refusal, a tool call) is an empty text
            text = message.get("content") if isinstance(message, dict) else None
            text = "" if text is None else text
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            raise MalformedResponse("a choice has no text")
        index = choice.get("index")
        choices.append(
            Choice(index if isinstance(index, int) else 0, text, choice.get("finish_reason"), choice.get("logprobs"))
        )
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return Reply(choices, _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))


def _count(value: Any) -> int:
    """A usage count as a non-negative int (0 when absent or not a number)."""
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def _logprob_entries(found: Any) -> list[tuple[str, float, dict[str, float]]] | None:
    """(token, logprob, {top token: logprob}) per generated token, from a chat choice's ``logprobs``
    (``content``) or a completions choice's (``tokens`` / ``token_logprobs`` / ``top_logprobs``)."""
    if not isinstance(found, dict):
        return None
    content = found.get("content")
    if content is not None:
        return [
            (
                entry["token"],
                entry["logprob"],
                {top["token"]: top["logprob"] for top in entry.get("top_logprobs") or []},
            )
            for entry in content
        ]
    tokens = found.get("tokens")
    if tokens is None:
        return None
    tops = found.get("top_logprobs") or [{}] * len(tokens)
    return [
        (token, logprob, dict(top or {}))
        for token, logprob, top in zip(tokens, found.get("token_logprobs") or [], tops, strict=False)
    ]


class TokenReader:
    """Token strings of an API reply → ids of the served model's tokenizer, by their decoded text; with
    no tokenizer, → positions in the reply's own list of strings (``TokenDistributions.strings``), which
    the store turns into ids of the run's string vocabulary.

    A string that no single token decodes to (a piece of a multi-byte character the server decoded
    alone) maps to -1: training counts its mass in the tail bucket."""

    def __init__(self, tokenizer: Any | None):
        self.tokenizer = tokenizer
        self.ids: dict[str, int] = {}
        for token_id in range(len(tokenizer) if tokenizer is not None else 0):
            text = tokenizer.decode([token_id])
            if text and "\ufffd" not in text:
                self.ids.setdefault(text, token_id)

    def read(self, entries: list[tuple[str, float, dict[str, float]]], k: int) -> tuple[TokenDistributions, int]:
        """The reply's distributions, and how many of its strings mapped to no id."""
        unmapped = 0
        strings: dict[str, int] | None = None if self.tokenizer is not None else {}

        def to_id(text: str) -> int:
            nonlocal unmapped
            if strings is not None:
                return strings.setdefault(text, len(strings))
            found = self.ids.get(text, -1)
            unmapped += found < 0
            return found

        token_ids, token_logprobs, top_ids, top_logprobs = [], [], [], []
        for token, logprob, top in entries:
            token_ids.append(to_id(token))
            token_logprobs.append(logprob)
            best = sorted(top.items(), key=lambda item: -item[1])[:k]  # llama.cpp adds the chosen token
            best += [("", float("-inf"))] * (k - len(best))
            top_ids.append([to_id(text) if text else -1 for text, _ in best])
            top_logprobs.append([value for _, value in best])
        own = tuple(strings) if strings is not None else None
        return TokenDistributions.build(token_ids, token_logprobs, top_ids, top_logprobs, strings=own), unmapped


def _split_tokens(total: int, texts: list[str]) -> list[int]:
    """Share an n>1 call's completion tokens among its choices by length, summing exactly."""
    if len(texts) == 1:
        return [total]
    lengths = [max(1, len(t)) for t in texts]
    shares = [total * length // sum(lengths) for length in lengths]
    shares[0] += total - sum(shares)
    return shares
