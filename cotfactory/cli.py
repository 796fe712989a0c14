"""The ``cotfactory`` command line. Flags map 1:1 to config fields; defaults < --config < flags."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from cotfactory.config.eval import EvalConfig
from cotfactory.config.filter import FilterConfig
from cotfactory.config.flags import config_command
from cotfactory.config.generate import GenerateConfig
from cotfactory.config.prune import PruneConfig
from cotfactory.config.train import TrainConfig
from cotfactory.console import make_console
from cotfactory.counterfactual_edits import AugmentConfig
from cotfactory.errors import ConfigError, CotfactoryError, DataError
from cotfactory.quiet import quiet_libraries
from cotfactory.run_dir import RunDir

app = typer.Typer(
    name="cotfactory",
    help="Manufacture chain-of-thought training data with a teacher and distil it into a student.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
templates_app = typer.Typer(help="List and render prompt templates.", invoke_without_command=True)


def _print_version(value: bool) -> None:
    if value:
        from cotfactory import __version__

        print(f"cotfactory {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Manufacture chain-of-thought training data with a teacher and distil it into a student."""
    quiet_libraries()


app.add_typer(templates_app, name="templates")

err = make_console(stderr=True)
out = make_console()
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
    from cotfactory.model_loading import check_model_spec
    from cotfactory.students.methods import check_method
    from cotfactory.students.models import SCRATCH, is_scratch

    check_method(method, where)
    if is_scratch(student):
        if student.removeprefix("scratch:") not in SCRATCH:
            choices = ", ".join("scratch:" + name for name in SCRATCH)
            raise ConfigError(f"{where}student '{student}': unknown scratch model; choose one of: {choices}")
        return
    try:
        check_model_spec(student)
    except CotfactoryError as exc:
        raise ConfigError(f"{where}student {exc}") from None


@app.command()
@user_errors
@config_command(GenerateConfig)
def generate(config: GenerateConfig) -> None:
    """Have a teacher write rationales for every problem over a grid of templates, temperatures and seeds.

    With --ray ADDRESS --shards N the dataset runs as N Ray tasks (resumable shards) merged into --out.

    Exit codes: 0 done, 1 some samples failed for good (listed), 2 bad input or config,
    3 stopped at the token budget.
    """
    from cotfactory.generate import print_summary, run_generate
    from cotfactory.ray_launch import distributed, run_ray_generate

    _check_output_dir(config.out)
    if config.shards_dir is not None:
        _check_output_dir(config.shards_dir)
    with _store_errors(config.out):
        result = (run_ray_generate if distributed(config) else run_generate)(config, err)
    print_summary(result, err)
    raise typer.Exit(result.exit_code)


@app.command("filter")
@user_errors
@config_command(FilterConfig)
def filter_command(config: FilterConfig) -> None:
    """Keep the good samples of a run: well-formed, correct, self-consistent, well-rewarded, not duplicated.

    Writes filtered.jsonl, a filtered/ datasets folder and funnel.json; prints the funnel.
    """
    from cotfactory.filtering import print_funnel, run_filter

    with _store_errors(config.run_dir):
        result = run_filter(config, err)
    print_funnel(result, err)


@app.command("train-student")
@user_errors
@config_command(TrainConfig)
def train_student(config: TrainConfig) -> None:
    """Train a student (T5 or LLaMA-family, LoRA or full) with a distillation method."""
    _check_student(config.method, config.student, "")
    _check_output_dir(config.out)
    from cotfactory.students.train import is_main_process, run_train  # imports torch: after the quick checks

    result = run_train(config, err)
    if not is_main_process():  # under torchrun: rank 0 reports
        return
    tasks = ", ".join(f"{name} {count}" for name, count in result.tasks.items())
    err.print(
        f"trained {config.method} on {result.examples} examples ({tasks}) for {result.steps} steps; "
        f"final loss {result.final_loss:.4f}",
        soft_wrap=True,
    )
    err.print(f"student: {result.out}", soft_wrap=True)


@app.command("eval")
@user_errors
@config_command(EvalConfig)
def eval_command(config: EvalConfig) -> None:
    """Evaluate a student: accuracy, predictions.jsonl, and rationale/answer agreement."""
    from cotfactory.students.evaluate import run_eval

    result = run_eval(
        config.folder,
        config.format,
        config.input,
        config.limit,
        config.batch_size,
        config.max_new_tokens,
        config.out,
        config.answer_type,
        config.explain,
        config.in_context,
    )
    for line in result.lines():
        out_console.print(line, highlight=False, soft_wrap=True)
    err.print(f"predictions: {result.predictions_path}", soft_wrap=True)
    if config.lm_eval is not None:
        from cotfactory.problems import load_problems
        from cotfactory.students.lm_eval_tasks import read_manifest, shell_command, write_lm_eval_tasks

        problems = load_problems(config.format, config.input, limit=config.limit, answer_type=config.answer_type)
        written = write_lm_eval_tasks(config.folder, problems, config.lm_eval, max_new_tokens=config.max_new_tokens)
        manifest = read_manifest(written)
        err.print(f"lm-eval task '{manifest['task']}': {manifest['include_path']}; cross-check with:", soft_wrap=True)
        err.print(shell_command(manifest), soft_wrap=True, highlight=False, markup=False)


@app.command()
@user_errors
@config_command(PruneConfig)
def prune(config: PruneConfig) -> None:
    """Cut a LLaMA-family teacher into a smaller student (Minitron): drop the layers (--depth) or the hidden
    channels, MLP neurons and query heads (--width) of least importance on calibration text.

    Writes a checkpoint that transformers loads, the teacher's tokenizer, and prune.json (what was kept).
    """
    _check_output_dir(config.out)
    from cotfactory.students.prune import run_prune, summary  # imports torch: after the quick checks

    result, out = run_prune(config, err)
    err.print(summary(result, out), soft_wrap=True, highlight=False)


@app.command("run")
@user_errors
def run_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (see pipelines/).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: generate.limit=4 (repeatable).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Run directory (overrides the file's out).")] = None,
    rounds: Annotated[
        str | None,
        typer.Option(
            "--rounds",
            metavar="N",
            help="Hard-problem rounds after the first student (sets rounds.count; the file's rounds: section "
            "names the pool). Finished rounds are kept: raising N runs only the new ones.",
        ),
    ] = None,
) -> None:
    """Run an experiment: generate → filter → train students → eval → report, skipping unchanged stages."""
    from cotfactory.config.pipeline import load_pipeline, read_rounds_flag
    from cotfactory.pipeline import run_pipeline

    config = load_pipeline(pipeline, set_ or [], out, rounds=None if rounds is None else read_rounds_flag(rounds))
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
        err.print(f"report: {RunDir(config.out).report_html}", soft_wrap=True)


@app.command()
@user_errors
@config_command(AugmentConfig)
def augment(config: AugmentConfig) -> None:
    """Counterfactual problems (DISCO): change what decides a problem's answer; keep a new problem only when verified.

    Arithmetic (SVAMP's Equation, GSM8K's annotations): new numbers, the gold recomputed; no teacher.
    Choice and yes/no (cqa, esnli, strategyqa, jsonl): the teacher rewrites the question so that another
    label is correct, then answers it --votes times (generate runs under --run-dir: stored, resumable); the
    edit is kept when the majority is that label. Unverifiable edits are dropped and counted.
    """
    _check_output_dir(Path(config.out).parent)
    if config.run_dir is not None:
        _check_output_dir(config.run_dir)
    from cotfactory.counterfactual_edits import print_augment, run_augment

    result = run_augment(config, err)
    print_augment(result, config, err)


@app.command()
@user_errors
def merge(
    out: Annotated[str, typer.Argument(help="Run directory to merge into (made if missing).")],
    shards: Annotated[list[str], typer.Argument(help="Run directories of `generate --shard I/N`.")],
) -> None:
    """Union the run directories of `generate --shard I/N` into one: every request key once, exports rebuilt.

    Refused when the shards are not one plan (the first differing setting is named) or hold one key with
    two texts (both shards named). Merging again adds nothing.
    """
    _check_output_dir(out)
    from cotfactory.merge import run_merge

    with _store_errors(out):
        result = run_merge(out, shards)
    err.print(
        f"merge: {result.shards} shards into {result.out}: {result.added} samples added, {result.samples} in all",
        soft_wrap=True,
        highlight=False,
    )


@app.command()
@user_errors
def report(run_dir: Annotated[str, typer.Argument(help="Run directory.")]) -> None:
    """Write RUN_DIR/report/report.html with plots: funnel, agreement, rewards, yield, losses, accuracy."""
    from cotfactory.report import write_report

    RunDir(run_dir).require_samples()
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

    rows = []
    for name, path in available_templates(prompts_dir).items():
        template = load_template(str(path))
        spec = template.spec
        rows.append((name, spec.form, str(spec.version), template.hash, spec.description))
    if not out.is_terminal:  # piped to grep or a script: whole names, one tab-separated line each
        for row in rows:
            print("\t".join(row))
        return
    table = Table("name", "form", "version", "hash", "description")
    for row in rows:
        table.add_row(*row)
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
