"""The ``cotfactory`` command line. Flags map 1:1 to config fields; defaults < --config < flags."""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cotfactory.config import GenerateConfig, build_config, read_config_file
from cotfactory.errors import ConfigError, CotfactoryError, DataError

app = typer.Typer(
    name="cotfactory",
    help="Manufacture chain-of-thought training data with a teacher and distil it into a student.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
templates_app = typer.Typer(help="List and render prompt templates.", invoke_without_command=True)
app.add_typer(templates_app, name="templates")

err = Console(stderr=True)
out = Console()
out_console = out


def user_errors(command: Callable[..., None]) -> Callable[..., None]:
    """User errors become one line on stderr and exit 2 (a traceback with COTFACTORY_DEBUG=1).

    So do file-system errors (a full disk, an output path under a file, no permission): they name
    the file and are the user's to fix.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (CotfactoryError, OSError) as exc:
            if os.environ.get("COTFACTORY_DEBUG") or isinstance(exc, BrokenPipeError):
                raise
            if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
                message = f"{exc.filename}: {exc.strerror}"
            else:
                message = str(exc)
            err.print(Text.assemble(("error: ", "bold red"), message.replace("\n", " ")), soft_wrap=True)
            raise typer.Exit(exc.exit_code if isinstance(exc, CotfactoryError) else 2) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished samples are stored; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper


@contextlib.contextmanager
def _store_errors(run_dir: str | Path) -> Iterator[None]:
    """SQLite's errors name no file: a full disk, a locked or foreign store.sqlite becomes one line naming it."""
    try:
        yield
    except sqlite3.Error as exc:
        raise DataError(f"{Path(run_dir) / 'store.sqlite'}: {exc}") from exc


def _check_output_dir(path: str | Path) -> None:
    """Fail before any work when ``path`` cannot become a folder: a file is in the way, or no permission."""
    folder = Path(path)
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                raise ConfigError(f"out {folder}: {place} is a file, not a folder")
            if not os.access(place, os.W_OK | os.X_OK):
                raise ConfigError(f"out {folder}: {place} is not writable")
            return


def _check_student(method: str, student: str, where: str) -> None:
    """A mistyped method or a missing student model fails at once, before data is read or a model loaded."""
    from cotfactory.models import check_model_spec
    from cotfactory.students.examples import BUILDERS
    from cotfactory.students.models import SCRATCH, is_scratch

    if method not in BUILDERS:
        close = difflib.get_close_matches(method, list(BUILDERS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}unknown method '{method}'{hint}; choose one of: {', '.join(BUILDERS)}")
    if is_scratch(student):
        if student.removeprefix("scratch:") not in SCRATCH:
            choices = ", ".join("scratch:" + name for name in SCRATCH)
            raise ConfigError(f"{where}student '{student}': unknown scratch model; choose one of: {choices}")
        return
    try:
        check_model_spec(student)
    except CotfactoryError as exc:
        raise ConfigError(f"{where}student {exc}") from None


def _split(values: list[str] | None, cast: Any = str, field: str = "") -> list[Any] | None:
    """'0.3,0.8' (or the flag repeated) → [0.3, 0.8]."""
    if not values:
        return None
    items = [part.strip() for value in values for part in value.split(",") if part.strip()]
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise ConfigError(f"--{field}: cannot read {','.join(items)!r} as a list of {cast.__name__}") from None


def _desc(name: str) -> str:
    return GenerateConfig.model_fields[name].description or ""


@app.command()
@user_errors
def generate(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML/JSON file with the same keys as the flags.")
    ] = None,
    input: Annotated[str | None, typer.Option(help=_desc("input"))] = None,
    format: Annotated[str | None, typer.Option(help=_desc("format"))] = None,
    question_field: Annotated[str | None, typer.Option(help=_desc("question_field"))] = None,
    answer_field: Annotated[str | None, typer.Option(help=_desc("answer_field"))] = None,
    id_field: Annotated[str | None, typer.Option(help=_desc("id_field"))] = None,
    answer_type: Annotated[str | None, typer.Option(help=_desc("answer_type"))] = None,
    limit: Annotated[int | None, typer.Option(help=_desc("limit"))] = None,
    shard: Annotated[str | None, typer.Option(help=_desc("shard"))] = None,
    template: Annotated[list[str] | None, typer.Option(help=_desc("templates") + " Repeat or comma-separate.")] = None,
    prompts_dir: Annotated[list[str] | None, typer.Option(help=_desc("prompts_dir"))] = None,
    temperatures: Annotated[str | None, typer.Option(help=_desc("temperatures") + " e.g. 0.3,0.8")] = None,
    seeds: Annotated[str | None, typer.Option(help=_desc("seeds") + " e.g. 1,2")] = None,
    samples_per_setting: Annotated[int | None, typer.Option(help=_desc("samples_per_setting"))] = None,
    top_p: Annotated[float | None, typer.Option(help=_desc("top_p"))] = None,
    max_tokens: Annotated[int | None, typer.Option(help=_desc("max_tokens"))] = None,
    length_retry_tokens: Annotated[int | None, typer.Option(help=_desc("length_retry_tokens"))] = None,
    teacher: Annotated[str | None, typer.Option(help=_desc("teacher"))] = None,
    model: Annotated[str | None, typer.Option(help=_desc("model"))] = None,
    base_url: Annotated[list[str] | None, typer.Option(help=_desc("base_url") + " Repeat for replicas.")] = None,
    api_key_env: Annotated[str | None, typer.Option(help=_desc("api_key_env"))] = None,
    concurrency: Annotated[int | None, typer.Option(help=_desc("concurrency"))] = None,
    rpm: Annotated[float | None, typer.Option(help=_desc("rpm"))] = None,
    tpm: Annotated[float | None, typer.Option(help=_desc("tpm"))] = None,
    timeout: Annotated[float | None, typer.Option(help=_desc("timeout"))] = None,
    max_attempts: Annotated[int | None, typer.Option(help=_desc("max_attempts"))] = None,
    use_n: Annotated[str | None, typer.Option(help=_desc("use_n"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_desc("batch_size"))] = None,
    device: Annotated[str | None, typer.Option(help=_desc("device"))] = None,
    dtype: Annotated[str | None, typer.Option(help=_desc("dtype"))] = None,
    replay: Annotated[str | None, typer.Option(help=_desc("replay"))] = None,
    contrastive: Annotated[
        bool | None, typer.Option("--contrastive/--no-contrastive", help=_desc("contrastive"))
    ] = None,
    contrast_weight: Annotated[float | None, typer.Option(help=_desc("contrast_weight"))] = None,
    plausibility: Annotated[float | None, typer.Option(help=_desc("plausibility"))] = None,
    perturb: Annotated[str | None, typer.Option(help=_desc("perturb"))] = None,
    counterfactual: Annotated[
        bool | None, typer.Option("--counterfactual/--no-counterfactual", help=_desc("counterfactual"))
    ] = None,
    out: Annotated[str | None, typer.Option(help=_desc("out"))] = None,
    max_total_tokens: Annotated[int | None, typer.Option(help=_desc("max_total_tokens"))] = None,
    price_table: Annotated[str | None, typer.Option(help=_desc("price_table"))] = None,
    retry_failed: Annotated[
        bool | None, typer.Option("--retry-failed/--no-retry-failed", help=_desc("retry_failed"))
    ] = None,
) -> None:
    """Have a teacher write rationales for every problem over a grid of templates, temperatures and seeds.

    Exit codes: 0 done, 1 some samples failed for good (listed), 2 bad input or config,
    3 stopped at the token budget.
    """
    from cotfactory.generate import print_summary, run_generate

    flags = dict(
        input=input,
        format=format,
        question_field=question_field,
        answer_field=answer_field,
        id_field=id_field,
        answer_type=answer_type,
        limit=limit,
        shard=shard,
        templates=_split(template),
        prompts_dir=_split(prompts_dir),
        temperatures=_split([temperatures] if temperatures else None, float, "temperatures"),
        seeds=_split([seeds] if seeds else None, int, "seeds"),
        samples_per_setting=samples_per_setting,
        top_p=top_p,
        max_tokens=max_tokens,
        length_retry_tokens=length_retry_tokens,
        teacher=teacher,
        model=model,
        base_url=_split(base_url),
        api_key_env=api_key_env,
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        timeout=timeout,
        max_attempts=max_attempts,
        use_n=use_n,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        replay=replay,
        contrastive=contrastive,
        contrast_weight=contrast_weight,
        plausibility=plausibility,
        perturb=perturb,
        counterfactual=counterfactual,
        out=out,
        max_total_tokens=max_total_tokens,
        price_table=price_table,
        retry_failed=retry_failed,
    )
    file_values = read_config_file(config) if config else {}
    resolved = build_config(GenerateConfig, file_values, flags, source=str(config) if config else "flags")
    _check_output_dir(resolved.out)
    with _store_errors(resolved.out):
        result = run_generate(resolved, err)
    print_summary(result, err)
    raise typer.Exit(result.exit_code)


def _fdesc(name: str) -> str:
    from cotfactory.filter_config import FilterConfig

    return FilterConfig.model_fields[name].description or ""


@app.command("filter")
@user_errors
def filter_command(
    run_dir: Annotated[str, typer.Argument(help="Run directory made by `cotfactory generate`.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON file with the same keys.")] = None,
    well_formed: Annotated[
        bool | None, typer.Option("--well-formed/--no-well-formed", help=_fdesc("well_formed"))
    ] = None,
    correct: Annotated[bool | None, typer.Option("--correct/--no-correct", help=_fdesc("correct"))] = None,
    consistency: Annotated[float | None, typer.Option(help=_fdesc("consistency"))] = None,
    weighted_votes: Annotated[
        bool | None, typer.Option("--weighted-votes/--no-weighted-votes", help=_fdesc("weighted_votes"))
    ] = None,
    reward: Annotated[str | None, typer.Option(help=_fdesc("reward"))] = None,
    reward_threshold: Annotated[float | None, typer.Option(help=_fdesc("reward_threshold"))] = None,
    top_k: Annotated[int | None, typer.Option(help=_fdesc("top_k"))] = None,
    dedup: Annotated[float | None, typer.Option(help=_fdesc("dedup"))] = None,
    tolerance: Annotated[float | None, typer.Option(help=_fdesc("tolerance"))] = None,
    reward_batch_size: Annotated[int | None, typer.Option(help=_fdesc("reward_batch_size"))] = None,
    device: Annotated[str | None, typer.Option(help=_fdesc("device"))] = None,
    scorer_model: Annotated[str | None, typer.Option(help=_fdesc("scorer_model"))] = None,
    judge_template: Annotated[str | None, typer.Option(help=_fdesc("judge_template"))] = None,
    judge_teacher: Annotated[str | None, typer.Option(help=_fdesc("judge_teacher"))] = None,
    judge_model: Annotated[str | None, typer.Option(help=_fdesc("judge_model"))] = None,
    judge_base_url: Annotated[list[str] | None, typer.Option(help=_fdesc("judge_base_url"))] = None,
    judge_api_key_env: Annotated[str | None, typer.Option(help=_fdesc("judge_api_key_env"))] = None,
    judge_concurrency: Annotated[int | None, typer.Option(help=_fdesc("judge_concurrency"))] = None,
    trust_remote_code: Annotated[
        bool | None, typer.Option("--trust-remote-code/--no-trust-remote-code", help=_fdesc("trust_remote_code"))
    ] = None,
) -> None:
    """Keep the good samples of a run: well-formed, correct, self-consistent, well-rewarded, not duplicated.

    Writes filtered.jsonl, a filtered/ datasets folder and funnel.json; prints the funnel.
    """
    from cotfactory.filter_config import FilterConfig
    from cotfactory.filtering import print_funnel, run_filter

    flags = dict(
        run_dir=run_dir,
        well_formed=well_formed,
        correct=correct,
        consistency=consistency,
        weighted_votes=weighted_votes,
        reward=reward,
        reward_threshold=reward_threshold,
        top_k=top_k,
        dedup=dedup,
        tolerance=tolerance,
        reward_batch_size=reward_batch_size,
        device=device,
        scorer_model=scorer_model,
        judge_template=judge_template,
        judge_teacher=judge_teacher,
        judge_model=judge_model,
        judge_base_url=_split(judge_base_url),
        judge_api_key_env=judge_api_key_env,
        judge_concurrency=judge_concurrency,
        trust_remote_code=trust_remote_code,
    )
    file_values = read_config_file(config) if config else {}
    resolved = build_config(FilterConfig, file_values, flags, source=str(config) if config else "flags")
    with _store_errors(resolved.run_dir):
        result = run_filter(resolved, err)
    print_funnel(result, err)


def _tdesc(name: str) -> str:
    from cotfactory.students.config import TrainConfig

    return TrainConfig.model_fields[name].description or ""


@app.command("train-student")
@user_errors
def train_student(
    input: Annotated[str, typer.Argument(help=_tdesc("input"))],
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON file with the same keys.")] = None,
    method: Annotated[str | None, typer.Option(help=_tdesc("method"))] = None,
    student: Annotated[str | None, typer.Option(help=_tdesc("student"))] = None,
    out: Annotated[str | None, typer.Option(help=_tdesc("out"))] = None,
    format: Annotated[str | None, typer.Option(help=_tdesc("format"))] = None,
    lora_r: Annotated[int | None, typer.Option(help=_tdesc("lora_r"))] = None,
    lora_alpha: Annotated[int | None, typer.Option(help=_tdesc("lora_alpha"))] = None,
    lora_dropout: Annotated[float | None, typer.Option(help=_tdesc("lora_dropout"))] = None,
    lora_target: Annotated[list[str] | None, typer.Option(help=_tdesc("lora_target"))] = None,
    alpha: Annotated[float | None, typer.Option(help=_tdesc("alpha"))] = None,
    epochs: Annotated[float | None, typer.Option(help=_tdesc("epochs"))] = None,
    max_steps: Annotated[int | None, typer.Option(help=_tdesc("max_steps"))] = None,
    lr: Annotated[float | None, typer.Option(help=_tdesc("lr"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_tdesc("batch_size"))] = None,
    grad_accum: Annotated[int | None, typer.Option(help=_tdesc("grad_accum"))] = None,
    max_source_length: Annotated[int | None, typer.Option(help=_tdesc("max_source_length"))] = None,
    max_target_length: Annotated[int | None, typer.Option(help=_tdesc("max_target_length"))] = None,
    max_answer_cut: Annotated[float | None, typer.Option(help=_tdesc("max_answer_cut"))] = None,
    group_by_length: Annotated[
        bool | None, typer.Option("--group-by-length/--no-group-by-length", help=_tdesc("group_by_length"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help=_tdesc("seed"))] = None,
    save_steps: Annotated[int | None, typer.Option(help=_tdesc("save_steps"))] = None,
    logging_steps: Annotated[int | None, typer.Option(help=_tdesc("logging_steps"))] = None,
    resume: Annotated[bool | None, typer.Option("--resume/--no-resume", help=_tdesc("resume"))] = None,
    limit: Annotated[int | None, typer.Option(help=_tdesc("limit"))] = None,
) -> None:
    """Train a student (T5 or LLaMA-family, LoRA or full) with a distillation method."""
    from cotfactory.students.config import TrainConfig

    flags = dict(
        input=input,
        method=method,
        student=student,
        out=out,
        format=format,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_target=_split(lora_target),
        alpha=alpha,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_source_length=max_source_length,
        max_target_length=max_target_length,
        max_answer_cut=max_answer_cut,
        group_by_length=group_by_length,
        seed=seed,
        save_steps=save_steps,
        logging_steps=logging_steps,
        resume=resume,
        limit=limit,
    )
    file_values = read_config_file(config) if config else {}
    source = str(config) if config else "flags"
    resolved = build_config(TrainConfig, file_values, flags, source=source)
    _check_student(resolved.method, resolved.student, f"{source}: ")
    _check_output_dir(resolved.out)
    from cotfactory.students.train import run_train  # imports torch: after the quick checks

    result = run_train(resolved, err)
    tasks = ", ".join(f"{name} {count}" for name, count in result.tasks.items())
    err.print(
        f"trained {resolved.method} on {result.examples} examples ({tasks}) for {result.steps} steps; "
        f"final loss {result.final_loss:.4f}",
        soft_wrap=True,
    )
    err.print(f"student: {result.out}", soft_wrap=True)


@app.command("eval")
@user_errors
def eval_command(
    folder: Annotated[
        str,
        typer.Argument(
            help="A folder made by `cotfactory train-student`, or a model (embedded, folder, .gguf) to evaluate "
            "untrained in the label-only format (needs --out)."
        ),
    ],
    input: Annotated[str, typer.Option(help="Held-out problems.")],
    format: Annotated[str, typer.Option(help="Loader of the problems.")] = "jsonl",
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N problems.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens a student may write.")] = 256,
    answer_type: Annotated[str | None, typer.Option(help="Generic jsonl/csv: answer type.")] = None,
    out: Annotated[str | None, typer.Option(help="predictions.jsonl path (default FOLDER/predictions.jsonl).")] = None,
    explain: Annotated[
        bool,
        typer.Option("--explain/--no-explain", help="step-by-step: also write each rationale on request (explain:)."),
    ] = True,
    lm_eval: Annotated[
        str | None,
        typer.Option(
            "--lm-eval",
            metavar="DIR",
            help="Also write an lm-evaluation-harness task over the same problems, in the student's prompt "
            "format, to DIR, with the lm_eval command that cross-checks this evaluation.",
        ),
    ] = None,
) -> None:
    """Evaluate a student: accuracy, predictions.jsonl, and rationale/answer agreement."""
    from cotfactory.students.evaluate import run_eval

    for flag, value in (("--limit", limit), ("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    result = run_eval(folder, format, input, limit, batch_size, max_new_tokens, out, answer_type, explain)
    for line in result.lines():
        out_console.print(line, highlight=False, soft_wrap=True)
    err.print(f"predictions: {result.predictions_path}", soft_wrap=True)
    if lm_eval is not None:
        from cotfactory.problems import load_problems
        from cotfactory.students.lm_eval_tasks import read_manifest, shell_command, write_lm_eval_tasks

        problems = load_problems(format, input, limit=limit, answer_type=answer_type)
        manifest = read_manifest(write_lm_eval_tasks(folder, problems, lm_eval, max_new_tokens=max_new_tokens))
        err.print(f"lm-eval task '{manifest['task']}': {manifest['include_path']}; cross-check with:", soft_wrap=True)
        err.print(shell_command(manifest), soft_wrap=True, highlight=False, markup=False)


@app.command("run")
@user_errors
def run_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (see pipelines/).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: generate.limit=4 (repeatable).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Run directory (overrides the file's out).")] = None,
) -> None:
    """Run an experiment: generate → filter → train students → eval → report, skipping unchanged stages."""
    from cotfactory.pipeline import load_pipeline, run_pipeline

    config = load_pipeline(pipeline, set_ or [], out)
    for index, student in enumerate(config.students):
        _check_student(student.method, student.student, f"{pipeline}: students.{index}: ")
    if config.eval is not None and not Path(config.eval.input).is_file():
        raise ConfigError(f"{pipeline}: eval.input: {config.eval.input}: file not found")
    _check_output_dir(config.out)
    with _store_errors(config.out):
        outcome = run_pipeline(config, err)
    ran = [name for name, what in outcome if what == "ran"]
    from cotfactory.pipeline import student_summaries

    for line in student_summaries(config):
        out_console.print(line, highlight=False, soft_wrap=True)
    err.print(
        f"{config.name}: {len(ran)} stage(s) ran, {len(outcome) - len(ran)} unchanged; run directory {config.out}",
        soft_wrap=True,
    )
    if config.report:
        err.print(f"report: {Path(config.out) / 'report' / 'report.html'}", soft_wrap=True)


@app.command()
@user_errors
def report(run_dir: Annotated[str, typer.Argument(help="Run directory.")]) -> None:
    """Write RUN_DIR/report/report.html with plots: funnel, agreement, rewards, yield, losses, accuracy."""
    from cotfactory.report import write_report

    if not (Path(run_dir) / "samples.jsonl").exists():
        raise ConfigError(f"{run_dir}: no samples.jsonl; not a finished run directory")
    with _store_errors(run_dir):
        html = write_report(Path(run_dir))
    err.print(f"report: {html}", soft_wrap=True)


@templates_app.callback()
@user_errors
def templates_list(
    ctx: typer.Context,
    prompts_dir: Annotated[list[Path] | None, typer.Option(help="Extra template folders.")] = None,
) -> None:
    """List the available templates (bundled and from --prompts-dir)."""
    if ctx.invoked_subcommand is not None:
        return
    from cotfactory.prompts import available_templates, load_template

    table = Table("name", "form", "version", "hash", "description")
    for name, path in available_templates(prompts_dir).items():
        template = load_template(str(path))
        spec = template.spec
        table.add_row(name, spec.form, str(spec.version), template.hash, spec.description)
    out.print(table)


@templates_app.command("show")
@user_errors
def templates_show(
    name: Annotated[str, typer.Argument(help="Template name or path to a YAML file.")],
    problem: Annotated[str | None, typer.Option(help="A question, or a JSON object of Problem fields.")] = None,
    input: Annotated[str | None, typer.Option(help="Take the problem from this dataset file …")] = None,
    format: Annotated[str, typer.Option(help="… read with this loader …")] = "jsonl",
    index: Annotated[int, typer.Option(help="… at this position.")] = 0,
    prompts_dir: Annotated[list[Path] | None, typer.Option(help="Extra template folders.")] = None,
) -> None:
    """Render a template for one problem and print the messages or prompt."""
    from cotfactory.problems import load_problems
    from cotfactory.prompts import load_template
    from cotfactory.records import Problem

    template = load_template(name, prompts_dir)
    if index < 0:
        raise ConfigError(f"--index {index}: must be 0 or more")
    if input is not None:
        problems = load_problems(format, input, limit=index + 1)
        if index >= len(problems):
            raise ConfigError(f"--index {index}: {input} has only {len(problems)} problems")
        chosen = problems[index]
    elif problem is not None:
        chosen = _problem_from_flag(problem, Problem)
    else:
        raise ConfigError("templates show: give --problem TEXT_OR_JSON or --input FILE [--format F --index N]")
    prompt = template.render(chosen)
    out.print(f"[dim]template {template.name} v{template.spec.version} hash {template.hash}[/dim]")
    if prompt.messages is not None:
        for message in prompt.messages:
            out.rule(message["role"])
            out.print(message["content"], markup=False, highlight=False)
    else:
        out.print(prompt.text, markup=False, highlight=False)
    if prompt.stop:
        out.print(f"[dim]stop: {prompt.stop!r}[/dim]")


def _problem_from_flag(text: str, problem_cls: Any) -> Any:
    from pydantic import ValidationError

    try:
        fields = json.loads(text)
    except json.JSONDecodeError:
        fields = None
    if not isinstance(fields, dict):
        fields = {"question": text}
    fields.setdefault("id", "cli")
    try:
        return problem_cls.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"--problem: field '{'.'.join(map(str, first['loc']))}': {first['msg']}") from None


def main() -> None:
    """Console-script entry point."""
    app()
