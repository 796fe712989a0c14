"""``cotfactory generate``: plan the requests, send the ones the store lacks, export the result.

Order of work, so that bad input never leaves anything behind: load and check everything (data,
templates, every prompt, the teacher, the price table) → only then create the run directory →
send pending requests, committing each finished call → export from the store.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cotfactory import __version__, answers
from cotfactory.adaptive import StoppingRule
from cotfactory.budget import TokenBudget
from cotfactory.config.files import read_config_file
from cotfactory.config.generate import GenerateConfig
from cotfactory.console import make_console
from cotfactory.decoders.tree_search import TreeSettings
from cotfactory.errors import ConfigError
from cotfactory.export import export_distributions, export_samples
from cotfactory.hashing import stable_hash
from cotfactory.plan import Contrast, Plan, SamplingGrid
from cotfactory.problems import ProblemFile, open_problems
from cotfactory.prompts import Template, load_template
from cotfactory.records import Problem, Sample
from cotfactory.run_dir import RunDir, write_json_atomic
from cotfactory.schedule import Schedule
from cotfactory.store import Store
from cotfactory.teachers import make_teacher
from cotfactory.teachers.base import Teacher

FAILED_SHOWN = 10  # failed samples listed by the summary
_CHUNK = 500  # request keys looked up in the store at a time


@dataclass
class Prepared:
    config: GenerateConfig
    problems: ProblemFile  # read from the input file on each pass over the plan, never all held
    templates: list[Template]
    teacher: Teacher
    plan: Plan
    prices: dict[str, dict[str, float]]
    rationalize: Template | None = None  # --rationalize-failures: for problems whose samples all missed gold


@dataclass
class GenerateResult:
    run_dir: Path
    planned: int
    stored: int
    new: int
    requests_sent: int
    failed: list[Sample] = field(default_factory=list)  # the first few failed samples, in plan order
    failed_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    elapsed_s: float = 0.0
    send_elapsed_s: float = 0.0
    budget_stopped: bool = False
    distribution_bytes: int = 0  # --logprobs: the recorded distributions' size, and the tokens they cover
    distribution_tokens: int = 0
    token_strings: int = 0  # --logprobs with no tokenizer: the run's vocabulary of token strings

    @property
    def exit_code(self) -> int:
        """0 done; 1 some samples failed for good; 3 stopped at the token budget."""
        if self.failed_count:
            return 1
        return 3 if self.budget_stopped else 0


def prepare(config: GenerateConfig) -> Prepared:
    """Everything that can fail on bad input, with nothing written anywhere."""
    problems = open_problems(
        config.format,
        config.input,
        question_field=config.question_field,
        answer_field=config.answer_field,
        id_field=config.id_field,
        answer_type=config.answer_type,
        limit=config.limit,
        shard=config.shard_pair,
    )
    extra_dirs = [Path(d) for d in config.prompts_dir]
    templates = [load_template(name, extra_dirs) for name in config.templates]
    names = [t.name for t in templates]
    if len(set(names)) != len(names):
        raise ConfigError(f"templates: the same template is listed twice ({', '.join(names)})")
    _check_templates_fit(config, templates)
    contrast = (
        Contrast(config.contrast_weight, config.plausibility, config.perturb, config.counterfactual)
        if config.contrastive
        else None
    )
    grid = SamplingGrid(config.temperatures, config.seeds, config.samples_per_setting, config.top_p, config.max_tokens)
    search = None
    if config.search == "tree":
        chat = next((t.name for t in templates if t.spec.form == "chat"), None)
        if chat and (problem := config.teacher.tree_search_problem(chat=True)):
            raise ConfigError(f"template '{chat}': {problem}")
        search = TreeSettings(
            config.branch,
            config.beam,
            config.max_depth,
            config.step_delimiter,
            config.repeat_similarity,
            config.step_tokens,
        )
    # every prompt renders (and every contrast answer exists) before a teacher is even built
    collections.deque(Plan(problems, templates, grid, "-", "-", contrast, search).requests(), maxlen=0)
    if config.until_correct and (lacking := next((p.id for p in problems if p.gold is None), None)):
        raise ConfigError(f"--until-correct needs gold answers; problem '{lacking}' has none (use --until-agree)")
    rationalize = _rationalize_template(config, problems, extra_dirs)
    teacher = make_teacher(config.teacher, config.retry_tokens)
    teacher.logprobs_k = config.logprobs
    plan = Plan(problems, templates, grid, teacher.name, teacher.model_label, contrast, search)
    checked: set[str] = set()
    for request in itertools.islice(plan.requests(), len(plan) // len(problems)):  # the first problem's requests
        if request.template not in checked and request.prompt is not None:
            teacher.check_prompt(request.prompt)
            checked.add(request.template)
    prices = load_prices(config.price_table) if config.price_table else {}
    return Prepared(config, problems, templates, teacher, plan, prices, rationalize)


def _rationalize_template(config: GenerateConfig, problems: ProblemFile, extra_dirs: list[Path]) -> Template | None:
    """The --rationalize-failures template, rendered for every problem with a gold answer (the only ones
    it can be asked for) before anything is sent."""
    if not config.rationalize_failures:
        return None
    template = load_template(config.rationalize_failures, extra_dirs)
    if template.name in config.templates:
        raise ConfigError(f"rationalize_failures: '{template.name}' is also a sampling template; give another")
    if "gold" not in template.variables_used:
        raise ConfigError(f"rationalize_failures: template '{template.name}' does not use {{{{ gold }}}}")
    for problem in problems:
        if problem.gold is not None:
            template.render(problem)
    return template


def _check_templates_fit(config: GenerateConfig, templates: list[Template]) -> None:
    """Answer-first templates (using ``answer``) go with --contrastive, and only they do."""
    for template in templates:
        answer_first = "answer" in template.variables_used
        if config.contrastive and not answer_first:
            raise ConfigError(
                f"template '{template.name}' does not state the answer first (no {{{{ answer }}}}); "
                "--contrastive needs one such as scott-rationale"
            )
        if answer_first and not config.contrastive:
            raise ConfigError(f"template '{template.name}' states the answer first; use it with --contrastive")


def load_prices(path: str) -> dict[str, dict[str, float]]:
    table = read_config_file(path)
    for model, entry in table.items():
        if not isinstance(entry, dict) or set(entry) - {"prompt", "completion"}:
            raise ConfigError(f"{path}: '{model}' needs {{prompt: USD per 1M tokens, completion: USD per 1M tokens}}")
        for kind, value in entry.items():
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{path}: '{model}.{kind}' must be a non-negative number, got {value!r}")
    return table


def run_generate(config: GenerateConfig, console: Console | None = None) -> GenerateResult:
    started = time.monotonic()
    prepared = prepare(config)
    # one event loop for the teacher's whole life: its HTTP connection pools belong to the loop
    return asyncio.run(_run(prepared, console or make_console(stderr=True), started))


async def _run(prepared: Prepared, console: Console, started: float) -> GenerateResult:
    config, teacher = prepared.config, prepared.teacher
    try:
        await teacher.preflight()
        run_dir = RunDir(config.out)
        run_dir.path.mkdir(parents=True, exist_ok=True)
        run_dir.remove_stale_temporaries([run_dir.samples, run_dir.samples_dataset, run_dir.config])  # a killed run's
        with Store(run_dir.store) as store:
            if config.logprobs:
                _check_same_vocabulary(run_dir, store, teacher)
            write_json_atomic(run_dir.config, {**config.model_dump(), "cotfactory_version": __version__})
            store.set_meta("config", config.model_dump())
            store.put_problems(prepared.problems)
            problem_of = _problem_lookup(store)
            teacher.attach_problems(problem_of)
            if config.retry_failed:
                store.forget_failed()
            if config.logprobs:
                _save_teacher_tokenizer(run_dir, teacher)
            result, plan_digest = await _send_pending(prepared, store, problem_of, console)
            fingerprint = stable_hash([plan_digest, store.samples_version()])
            exported = run_dir.samples.exists() and run_dir.samples_dataset.exists()
            totals = store.get_meta("export_totals")
            if not exported or totals is None or store.get_meta("export_fingerprint") != fingerprint:
                run_dir.remove_stale_temporaries([run_dir.distributions])
                totals = _export(run_dir, prepared, store, problem_of)
                store.set_meta("export_totals", totals)
                store.set_meta("export_fingerprint", fingerprint)
            result.stored = totals["stored"]
            result.failed_count = totals["failed"]
            result.failed = list(store.samples(totals["failed_keys"]))
            result.prompt_tokens = totals["prompt_tokens"]
            result.completion_tokens = totals["completion_tokens"]
            result.cost_usd = _cost(prepared, result)
            result.distribution_bytes, result.distribution_tokens = store.distribution_bytes()
            result.token_strings = store.token_string_count()
            result.elapsed_s = time.monotonic() - started
        return result
    finally:
        await teacher.aclose()


def export_run(config: GenerateConfig) -> None:
    """Rebuild a run directory's exports from its store, in plan order, sending nothing (``merge``)."""
    prepared = prepare(config)
    run_dir = RunDir(config.out)
    run_dir.remove_stale_temporaries([run_dir.samples, run_dir.samples_dataset, run_dir.distributions])
    with Store(run_dir.store) as store:
        store.put_problems(prepared.problems)
        problem_of = _problem_lookup(store)
        totals = _export(run_dir, prepared, store, problem_of)
        store.set_meta("export_totals", totals)
        store.set_meta("export_fingerprint", None)  # the next generate checks its plan and exports again


def _problem_lookup(store: Store) -> Callable[[str], Problem | None]:
    """A problem by id from the store; the plan walks problem by problem, so a small cache answers
    nearly every lookup."""
    return functools.lru_cache(maxsize=256)(store.problem)


def _export(
    run_dir: RunDir, prepared: Prepared, store: Store, problem_of: Callable[[str], Problem | None]
) -> dict[str, Any]:
    """Stream the plan's stored samples, in plan order, into the exports; return their totals."""
    totals: dict[str, Any] = {"stored": 0, "failed": 0, "failed_keys": [], "prompt_tokens": 0, "completion_tokens": 0}

    def counted() -> Iterator[Sample]:
        for sample in store.samples(_schedule(prepared, store).request_keys()):
            totals["stored"] += 1
            totals["prompt_tokens"] += sample.prompt_tokens
            totals["completion_tokens"] += sample.completion_tokens
            if sample.failed:
                totals["failed"] += 1
                if len(totals["failed_keys"]) < FAILED_SHOWN:
                    totals["failed_keys"].append(sample.key)
            yield sample

    export_samples(run_dir, counted(), problem_of)
    if store.distribution_bytes()[1]:  # only a --logprobs run pays for a second walk over the plan's keys
        export_distributions(run_dir, _schedule(prepared, store).request_keys(), store.distributions)
        if strings := store.token_strings():  # the ids' strings, for a user who loads the parquet file
            write_json_atomic(run_dir.teacher_token_strings, strings)
    return totals


def _check_same_vocabulary(run_dir: RunDir, store: Store, teacher: Teacher) -> None:
    """A run's recorded ids all belong to one vocabulary: a tokenizer's, or the run's token strings."""
    given = teacher.tokenizer_for_distributions() is not None
    if given and store.token_string_count():
        raise ConfigError(
            f"{run_dir.path}: its distributions were recorded as token strings (no tokenizer); "
            "record with a tokenizer into a new run directory"
        )
    if not given and run_dir.teacher_tokenizer.is_dir() and store.distribution_bytes()[1]:
        raise ConfigError(
            f"{run_dir.path}: its distributions hold ids of {run_dir.teacher_tokenizer}; give the same --tokenizer"
        )


def _save_teacher_tokenizer(run_dir: RunDir, teacher: Teacher) -> None:
    """The vocabulary the recorded token ids belong to travels with the run (training decodes them);
    a teacher without one records token strings, kept in the store."""
    tokenizer = teacher.tokenizer_for_distributions()
    if tokenizer is not None and not (run_dir.teacher_tokenizer / "tokenizer_config.json").exists():
        tokenizer.save_pretrained(str(run_dir.teacher_tokenizer))


async def _send_pending(
    prepared: Prepared, store: Store, problem_of: Callable[[str], Problem | None], console: Console
) -> tuple[GenerateResult, str]:
    """Send the requests the store lacks, in waves until none is pending (the grid is one wave; adaptive
    sampling and rationalization add more as stored samples call for them); return the result so far
    and a digest of the plan's keys."""
    config, teacher = prepared.config, prepared.teacher
    schedule = _schedule(prepared, store)
    budget = TokenBudget(config.max_total_tokens, used=sum(store.token_totals()), retry_tokens=config.retry_tokens)
    templates = {t.name: t for t in [*prepared.templates, *filter(None, [prepared.rationalize])]}
    result = GenerateResult(Path(config.out), planned=0, stored=0, new=0, requests_sent=0)
    pending_count = _count(schedule.pending(with_prompts=False))
    if pending_count:
        with _progress(console) as progress:
            task = progress.add_task("generate", total=pending_count, rps=0.0, tps=0.0, errors=0)
            t0, tokens, errors, wave = time.monotonic(), 0, 0, 1
            while pending_count and not budget.stopped:
                new_before = result.new
                async for samples in teacher.generate(budget.gate(schedule.pending())):
                    for sample in samples:
                        _fill_answer(sample, problem_of, templates)
                        budget.settle(sample)
                    result.new += store.add_samples(samples, replace=bool(config.logprobs))
                    tokens += sum(s.prompt_tokens + s.completion_tokens for s in samples)
                    errors += sum(s.failed for s in samples)
                    rps, tps = result.new / max(time.monotonic() - t0, 1e-9), tokens / max(time.monotonic() - t0, 1e-9)
                    progress.update(task, advance=len(samples), rps=rps, tps=tps, errors=errors)
                if result.new == new_before:  # nothing was kept: the next wave would ask the same again
                    break
                if schedule.one_wave and result.new - new_before == pending_count:
                    break  # every request was answered and stored: counting again would find none
                pending_count, wave = _count(schedule.pending(with_prompts=False)), wave + 1
                done = progress.tasks[0].completed
                progress.update(task, description=f"generate (wave {wave})", total=done + pending_count)
        result.requests_sent = getattr(teacher, "requests_sent", result.new)
        result.send_elapsed_s = time.monotonic() - t0
    result.budget_stopped = budget.stopped
    digest = hashlib.sha256()
    keys = schedule.request_keys()
    while chunk := list(itertools.islice(keys, _CHUNK)):
        digest.update("".join(chunk).encode())
        result.planned += len(chunk)
    return result, digest.hexdigest()


def _schedule(prepared: Prepared, store: Store) -> Schedule:
    config = prepared.config
    k = config.until_agree or config.until_correct
    rule = StoppingRule("agree" if config.until_agree else "correct", k, config.adaptive_max_samples) if k else None
    return Schedule(prepared.plan, store, config.logprobs, rule, prepared.rationalize)


def _count(items: Iterator[Any]) -> int:
    return sum(1 for _ in items)


def _fill_answer(sample: Sample, problem_of: Callable[[str], Problem | None], templates: dict[str, Template]) -> None:
    template = templates.get(sample.request.template)
    problem = problem_of(sample.request.problem_id)
    assert problem is not None  # stored before any request was sent
    answers.fill_answer(sample, problem, template.spec.answer_pattern if template else None)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rps]:.1f} req/s"),
        TextColumn("{task.fields[tps]:.0f} tok/s"),
        TextColumn("errors {task.fields[errors]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _cost(prepared: Prepared, result: GenerateResult) -> float | None:
    price = prepared.prices.get(prepared.teacher.model_label)
    if not price:
        return None
    return (result.prompt_tokens * price.get("prompt", 0) + result.completion_tokens * price.get("completion", 0)) / 1e6


def print_summary(result: GenerateResult, console: Console) -> None:
    from rich.table import Table

    console.print(f"generate: {result.run_dir}", soft_wrap=True, highlight=False)  # whole, even when piped
    table = Table(show_header=False)
    rows: list[tuple[str, str]] = [
        ("samples planned", str(result.planned)),
        ("samples stored", str(result.stored)),
        ("new this run", str(result.new)),
        ("requests sent", str(result.requests_sent)),
        ("failed for good", str(result.failed_count)),
        ("tokens (prompt / completion)", f"{result.prompt_tokens:,} / {result.completion_tokens:,}"),
        ("elapsed", f"{result.elapsed_s:.1f} s"),
    ]
    if result.cost_usd is not None:
        rows.append(("cost", f"${result.cost_usd:.4f}"))
    if result.distribution_tokens:
        per_token = result.distribution_bytes / result.distribution_tokens
        rows.append(("distributions", f"{result.distribution_tokens:,} tokens, {per_token:.0f} bytes/token"))
    if result.token_strings:
        rows.append(("token strings", f"{result.token_strings:,} (no tokenizer given: students distil with --align)"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for sample in result.failed[:FAILED_SHOWN]:
        console.print(
            f"[red]failed[/red] {sample.key} problem={sample.request.problem_id}: {sample.error}", soft_wrap=True
        )
    if result.failed_count > FAILED_SHOWN:
        console.print(f"… and {result.failed_count - FAILED_SHOWN} more (see samples.jsonl, field 'error')")
    if result.budget_stopped:
        console.print("[yellow]stopped at the token budget[/yellow]: raise --max-total-tokens and run again to finish")
    console.print(f"samples: {RunDir(result.run_dir).samples}", soft_wrap=True)
