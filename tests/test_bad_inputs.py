"""A corpus of bad inputs across the commands: each exits 2 with ONE line naming the file, line or field.

"Nothing written", the same for every case of the table: each case gets its own folder holding its input
files and its output location (``--out``, a copied run directory, a student folder). A snapshot of that
folder — every path, and each file's SHA-256 — is identical before and after the command: no run
directory, store, export, temporary file or report appears, and no existing file changes.

The disk-full tests run the CLI as a subprocess under ``RLIMIT_FSIZE`` and define "nothing half-written"
for a run that fails part-way: see their docstrings.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import invoke_ok, read_jsonl, run_cli, write_jsonl

ROOT = Path(__file__).resolve().parent.parent

GOOD = "".join(
    json.dumps({"id": pid, "question": f"What is {n} plus {n}?", "answer": str(2 * n)}) + "\n"
    for pid, n in (("a", 1), ("b", 2), ("c", 3))
)
REPLAY = "".join(
    json.dumps({"custom_id": pid, "response": {"body": {"choices": [{"message": {"content": text}}]}}}) + "\n"
    for pid, text in (
        ("a", "1 + 1 = 2. The answer is 2."),
        ("b", "2 + 2 = 4. The answer is 4."),
        ("c", "The answer is 6."),
    )
)
TEACHING = json.dumps({"question": "What is 1 plus 1?", "rationale": "1 + 1 = 2.", "answer": "2"}) + "\n"


class Folder:
    """A case's own folder: writes its input files and hands out paths inside it."""

    def __init__(self, path: Path, good_run: Path):
        self.path = path
        self._good_run = good_run

    def write(self, name: str, content: str | bytes) -> str:
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    def run(self, replace: dict[str, str] | None = None) -> str:
        """A copy of a finished run directory (generated, not filtered), with some files replaced."""
        target = self.path / "run"
        shutil.copytree(self._good_run, target)
        for name, content in (replace or {}).items():
            self.write(f"run/{name}", content)
        return str(target)

    def generate(self, *args: str, data: str | bytes = GOOD) -> list[str]:
        """``generate`` with the replay teacher on ``data``, out to FOLDER/out; ``args`` come last and win."""
        return [
            "generate",
            "--input",
            self.write("q.jsonl", data),
            "--answer-type",
            "number",
            "--teacher",
            "replay",
            "--replay",
            self.write("replay.jsonl", REPLAY),
            "--out",
            f"{self.path}/out",
            *args,
        ]

    def template(self, body: str) -> str:
        return self.write("t.yaml", body)


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Folder], list[str]]
    #: what the one line must contain; "{d}" stands for the case's folder
    names: tuple[str, ...]


def _pipeline(f: Folder, extra: str) -> str:
    f.write("q.jsonl", GOOD)
    f.write("replay.jsonl", REPLAY)
    return f.write(
        "p.yaml",
        f"name: p\nout: {f.path}/out\n"
        f"generate: {{input: {f.path}/q.jsonl, teacher: replay, replay: {f.path}/replay.jsonl}}\n{extra}",
    )


def _train(f: Folder, *args: str, input: str | None = None) -> list[str]:
    """``train-student`` of a finished run (or ``input``) with a tiny scratch student, out to FOLDER/s."""
    return [
        "train-student",
        input or f.run(),
        "--method",
        "label-only",
        "--student",
        "scratch:t5-tiny",
        "--out",
        f"{f.path}/s",
        *args,
    ]


STUDENTS = "filter: {}\nstudents:\n  - {name: s, method: label-only, student: scratch:t5-tiny}\n"

CASES = [
    # --- generate: the dataset file -------------------------------------------------------------------------
    Case(
        "jsonl-bad-line-in-the-middle",
        lambda f: f.generate(data=GOOD.replace('{"id": "b"', '{"id": "b" oops', 1)),
        ("{d}/q.jsonl:2:", "not valid JSON"),
    ),
    Case(
        "jsonl-line-not-an-object",
        lambda f: f.generate(data=GOOD + "[1, 2]\n"),
        ("{d}/q.jsonl:4:", "expected a JSON object, got list"),
    ),
    Case(
        "wrong-field-type",
        lambda f: f.generate(data='{"id": "a", "question": 5, "answer": "1"}\n'),
        ("{d}/q.jsonl:1:", "field 'question' must be a string, got int"),
    ),
    Case(
        "missing-field",
        lambda f: f.generate(data=GOOD + '{"id": "d", "answer": "1"}\n'),
        ("{d}/q.jsonl:4:", "missing field 'question'"),
    ),
    Case(
        "gsm8k-answer-without-marker",
        lambda f: f.generate("--format", "gsm8k", data='{"question": "q?", "answer": "it is 4"}\n'),
        ("{d}/q.jsonl:1:", "field 'answer' has no '#### '"),
    ),
    Case("empty-file", lambda f: f.generate(data=""), ("{d}/q.jsonl", "empty file")),
    Case("blank-lines-only", lambda f: f.generate(data="\n  \n\n"), ("{d}/q.jsonl", "empty file")),
    Case(
        "not-utf8",
        lambda f: f.generate(data=GOOD.encode() + b'{"id": "d", "question": "caf\xe9?", "answer": "1"}\n'),
        ("{d}/q.jsonl:4:", "not UTF-8 (byte 0xe9"),
    ),
    Case(
        "huge-50mb-line",
        lambda f: f.generate(data=b'{"id": "a", "question": "' + b"x" * 50_000_000),
        ("{d}/q.jsonl:1:", "not valid JSON"),
    ),
    Case(
        "duplicate-problem-ids",
        lambda f: f.generate(data=GOOD + '{"id": "a", "question": "again?", "answer": "1"}\n'),
        ("{d}/q.jsonl:4:", "duplicate id 'a' (first on line 1)"),
    ),
    Case(
        "csv-row-with-an-extra-cell",
        lambda f: f.generate("--input", f.write("q.csv", "question,answer\nq1,1\nq2,2,3\n"), "--format", "csv"),
        ("{d}/q.csv:3:", "row has 3 fields, the header has 2"),
    ),
    Case(
        "svamp-answer-not-a-number",
        lambda f: f.generate(
            "--input",
            f.write("s.json", '[{"ID": "1", "Body": "b", "Question": "q", "Answer": "x"}]'),
            "--format",
            "svamp",
        ),
        ("{d}/s.json[0]:", "field 'Answer' must be a number, got str"),
    ),
    Case("input-is-a-folder", lambda f: f.generate("--input", str(f.path)), ("{d}", "is a directory")),
    Case("input-not-found", lambda f: f.generate("--input", f"{f.path}/nope.jsonl"), ("{d}/nope.jsonl",)),
    Case("unknown-format", lambda f: f.generate("--format", "gsm9k"), ("unknown format 'gsm9k'", "'gsm8k'")),
    # --- generate: templates ------------------------------------------------------------------------------
    Case(
        "unknown-template-name",
        lambda f: f.generate("--template", "zero-shot-cto"),
        ("unknown template 'zero-shot-cto' (did you mean 'zero-shot-cot'?)",),
    ),
    Case(
        "template-unknown-variable",
        lambda f: f.generate("--template", f.template('form: completion\nprompt: "Q: {{ questoin }}"\n')),
        ("{d}/t.yaml", "unknown template variable 'questoin' (did you mean 'question'?)"),
    ),
    Case(
        "template-invalid-jinja",
        lambda f: f.generate("--template", f.template('form: completion\nprompt: "{% if question %}open"\n')),
        ("{d}/t.yaml:1:", "template syntax error"),
    ),
    Case(
        "template-invalid-yaml",
        lambda f: f.generate("--template", f.template("form: completion\nprompt: [unclosed\n")),
        ("{d}/t.yaml:3:", "invalid YAML"),
    ),
    Case(
        "template-unknown-key",
        lambda f: f.generate("--template", f.template("form: completion\nprompt: x\ncolour: red\n")),
        ("{d}/t.yaml", "field 'colour'"),
    ),
    Case(
        "template-exemplar-not-json",
        lambda f: f.generate(
            "--template",
            f.template(f"form: completion\nprompt: x\nexemplars: {f.write('ex.jsonl', '{}' + chr(10) + '{oops')}\n"),
        ),
        ("{d}/ex.jsonl:2:", "exemplar is not valid JSON"),
    ),
    Case(
        "template-fails-when-rendered",
        lambda f: f.generate("--template", f.template('form: completion\nprompt: "{{ question + 1 }}"\n')),
        ("{d}/t.yaml", "problem 'a'", "TypeError"),
    ),
    # --- generate: config file ----------------------------------------------------------------------------
    Case(
        "config-invalid-yaml",
        lambda f: ["generate", "--config", f.write("c.yaml", "input: q.jsonl\ntemperatures: [0.3\n")],
        ("{d}/c.yaml:", "invalid YAML"),
    ),
    Case(
        "config-unknown-key",
        lambda f: ["generate", "--config", f.write("c.yaml", f"input: q.jsonl\nout: {f.path}/out\ntemperatur: [1]\n")],
        ("{d}/c.yaml", "unknown key 'temperatur' (did you mean 'temperatures'?)"),
    ),
    Case(
        "config-wrong-value-type",
        lambda f: ["generate", "--config", f.write("c.yaml", f"input: q.jsonl\nout: {f.path}/out\nlimit: many\n")],
        ("{d}/c.yaml", "field 'limit'", "valid integer"),
    ),
    Case(
        "config-wrong-list-element-type",
        lambda f: ["generate", "--config", f.write("c.yaml", f"input: q.jsonl\nout: {f.path}/out\nseeds: [1, x]\n")],
        ("{d}/c.yaml", "field 'seeds.1'"),
    ),
    Case(
        "config-not-a-mapping",
        lambda f: ["generate", "--config", f.write("c.yaml", "- input\n- out\n")],
        ("{d}/c.yaml", "a config file is a mapping"),
    ),
    Case(
        "config-not-utf8",
        lambda f: ["generate", "--config", f.write("c.yaml", b"input: caf\xe9.jsonl\n")],
        ("{d}/c.yaml", "cannot read config file"),
    ),
    # --- generate: teacher, grid and numbers ----------------------------------------------------------------
    Case(
        "unknown-teacher",
        lambda f: f.generate("--teacher", "gpt"),
        ("flags: unknown teacher 'gpt'", "available: hf, openai, replay"),
    ),
    Case(
        "hf-teacher-model-folder-missing",
        lambda f: f.generate("--teacher", "hf", "--model", f"{f.path}/no-model"),
        ("{d}/no-model: not a model folder",),
    ),
    Case(
        "hf-teacher-gguf-missing",
        lambda f: f.generate("--teacher", "hf", "--model", f"{f.path}/m.gguf"),
        ("{d}/m.gguf: GGUF file not found",),
    ),
    Case("openai-teacher-without-model", lambda f: f.generate("--teacher", "openai"), ("needs 'model'",)),
    Case(
        "replay-file-bad-line",
        lambda f: f.generate("--replay", f.write("r.jsonl", REPLAY.splitlines()[0] + "\nnot json\n")),
        ("{d}/r.jsonl:2:", "not a Batch API output line"),
    ),
    Case("limit-zero", lambda f: f.generate("--limit", "0"), ("field 'limit'", "greater than 0")),
    Case(
        "samples-per-setting-negative",
        lambda f: f.generate("--samples-per-setting", "-2"),
        ("field 'samples_per_setting'", "(got -2)"),
    ),
    Case("max-tokens-zero", lambda f: f.generate("--max-tokens", "0"), ("field 'max_tokens'",)),
    Case(
        "concurrency-zero",
        lambda f: f.generate("--teacher", "openai", "--model", "m", "--concurrency", "0"),
        ("field 'teacher.concurrency'", "greater than or equal to 1"),
    ),
    Case(
        "bad-option-of-another-teacher",  # ignored by the replay teacher, but still a bad value
        lambda f: f.generate("--concurrency", "0"),
        ("'concurrency' (openai teacher option)", "greater than or equal to 1", "(got 0)"),
    ),
    Case("shard-not-i-over-n", lambda f: f.generate("--shard", "1"), ("field 'shard'", "not of the form I/N")),
    Case("shard-index-too-big", lambda f: f.generate("--shard", "2/2"), ("field 'shard'", "need 0 <= I < N")),
    Case(
        "temperatures-not-numbers",
        lambda f: f.generate("--temperatures", "0.3,hot"),
        ("--temperatures", "cannot read", "float"),
    ),
    Case(
        "temperatures-out-of-range",
        lambda f: f.generate("--temperatures", "0.3,9"),
        ("field 'temperatures'", "temperature 9.0 is outside 0..5"),
    ),
    Case("temperatures-empty-list", lambda f: f.generate("--temperatures", ","), ("field 'temperatures'",)),
    Case("seeds-not-integers", lambda f: f.generate("--seeds", "1,1.5"), ("--seeds", "int")),
    Case("answer-type-unknown", lambda f: f.generate("--answer-type", "float"), ("field 'answer_type'",)),
    Case(
        "price-table-wrong-value-type",
        lambda f: f.generate("--price-table", f.write("prices.yaml", "replay: {prompt: cheap}\n")),
        ("{d}/prices.yaml", "'replay.prompt' must be a non-negative number"),
    ),
    Case(
        "out-under-a-regular-file",
        lambda f: f.generate("--out", f"{f.write('a-file', 'x')}/run"),
        ("{d}/a-file/run", "{d}/a-file is a file, not a folder"),
    ),
    # --- filter ---------------------------------------------------------------------------------------------
    Case("filter-a-folder-that-is-not-a-run", lambda f: ["filter", str(f.path)], ("{d}: not a run directory",)),
    Case(
        "filter-store-not-sqlite",
        lambda f: ["filter", f.run({"store.sqlite": "plain text " * 200}), "--correct"],
        ("{d}/run/store.sqlite", "file is not a database"),
    ),
    Case(
        "filter-samples-jsonl-corrupt",
        lambda f: ["filter", f.run({"samples.jsonl": '{"key": "k"}\n'})],
        ("{d}/run/samples.jsonl:1:", "not a sample line"),
    ),
    Case(
        "filter-consistency-above-1",
        lambda f: ["filter", f.run(), "--consistency", "1.5"],
        ("field 'consistency'", "less than or equal to 1"),
    ),
    Case("filter-dedup-zero", lambda f: ["filter", f.run(), "--dedup", "0"], ("field 'dedup'",)),
    Case("filter-top-k-zero", lambda f: ["filter", f.run(), "--top-k", "0"], ("field 'top_k'",)),
    Case("filter-top-k-without-reward", lambda f: ["filter", f.run(), "--top-k", "2"], ("need reward",)),
    Case(
        "filter-unknown-judge-teacher",
        lambda f: ["filter", f.run(), "--reward", "judge", "--judge-teacher", "gpt", "--judge-model", "m"],
        ("judge_teacher 'gpt'", "openai, hf"),
    ),
    Case(
        "filter-reward-model-folder-missing",
        lambda f: ["filter", f.run(), "--reward", f"{f.path}/no-reward-model"],
        ("{d}/no-reward-model", "not a model folder"),
    ),
    Case(
        "filter-config-unknown-key",
        lambda f: ["filter", f.run(), "--config", f.write("f.yaml", "consistensy: 0.5\n")],
        ("{d}/f.yaml", "unknown key 'consistensy' (did you mean 'consistency'?)"),
    ),
    # --- train-student --------------------------------------------------------------------------------------
    Case(
        "train-unknown-method",
        lambda f: _train(f, "--method", "labl-only"),
        ("unknown method 'labl-only' (did you mean 'label-only'?)",),
    ),
    Case(
        "train-student-model-folder-missing",
        lambda f: _train(f, "--student", f"{f.path}/nm"),
        ("student {d}/nm: not a model folder",),
    ),
    Case(
        "train-unknown-scratch-student",
        lambda f: _train(f, "--student", "scratch:gpt"),
        ("student 'scratch:gpt': unknown scratch model",),
    ),
    Case(
        "train-lora-rank-negative",
        lambda f: _train(f, "--lora-r", "-1"),
        ("field 'lora_r'",),
    ),
    Case(
        "train-out-under-a-regular-file",
        lambda f: _train(f, "--out", f"{f.write('x', 'x')}/s"),
        ("{d}/x is a file, not a folder",),
    ),
    Case(
        "train-teaching-file-bad-line",
        lambda f: _train(f, input=f.write("t.jsonl", TEACHING + "{oops\n")),
        ("{d}/t.jsonl:2:", "not valid JSON"),
    ),
    Case(
        "train-teaching-file-not-utf8",
        lambda f: _train(f, input=f.write("t.jsonl", TEACHING.encode() + b'{"question": "caf\xe9"}\n')),
        ("{d}/t.jsonl:2:", "UTF-8"),
    ),
    # --- eval -----------------------------------------------------------------------------------------------
    Case(
        "eval-folder-without-a-student",
        lambda f: ["eval", f.run(), "--input", f.write("q.jsonl", GOOD)],
        ("{d}/run/student.json: not found",),
    ),
    Case(
        "eval-batch-size-zero",
        lambda f: ["eval", f.run(), "--input", f.write("q.jsonl", GOOD), "--batch-size", "0"],
        ("field 'batch_size'", "greater than or equal to 1", "(got 0)"),
    ),
    Case(
        "eval-student-json-corrupt",
        lambda f: ["eval", str(Path(f.write("s/student.json", "{oops")).parent), "--input", f.write("q.jsonl", GOOD)],
        ("{d}/s/student.json", "not valid JSON"),
    ),
    # --- run (pipelines) ------------------------------------------------------------------------------------
    Case(
        "pipeline-invalid-yaml",
        lambda f: ["run", f.write("p.yaml", "name: p\nout: o\ngenerate: {input: q.jsonl\n")],
        ("{d}/p.yaml:4:", "invalid YAML"),
    ),
    Case(
        "pipeline-unknown-key",
        lambda f: ["run", _pipeline(f, "filter: {consistensy: 0.5}\n")],
        ("{d}/p.yaml", "filter.consistensy: unknown key (did you mean 'consistency'?)"),
    ),
    Case(
        "pipeline-wrong-value-type",
        lambda f: ["run", _pipeline(f, "report: sometimes\n")],
        ("{d}/p.yaml", "report:", "valid boolean"),
    ),
    Case(
        "pipeline-student-unknown-method",  # used to generate and filter first, then fail at train
        lambda f: ["run", _pipeline(f, STUDENTS.replace("label-only", "nope"))],
        ("{d}/p.yaml", "students.0: unknown method 'nope'"),
    ),
    Case(
        "pipeline-eval-input-missing",
        lambda f: [
            "run",
            _pipeline(f, STUDENTS + f"eval: {{input: {f.path}/held-out.jsonl}}\n"),
        ],
        ("{d}/p.yaml", "eval.input", "{d}/held-out.jsonl: file not found"),
    ),
    Case(
        "pipeline-set-without-value",
        lambda f: ["run", _pipeline(f, ""), "--set", "generate.limit"],
        ("--set 'generate.limit'", "expected key.path=value"),
    ),
    Case(
        "pipeline-set-into-a-scalar",
        lambda f: ["run", _pipeline(f, ""), "--set", "name.x=3"],
        ("--set 'name.x=3'",),
    ),
    Case(
        "pipeline-set-list-index-out-of-range",
        lambda f: ["run", _pipeline(f, STUDENTS), "--set", "students.5.lr=0.1"],
        ("--set 'students.5.lr=0.1'",),
    ),
    # --- templates show -------------------------------------------------------------------------------------
    Case(
        "templates-show-unknown-template",
        lambda f: ["templates", "show", "rationalise", "--problem", "q?"],
        ("unknown template 'rationalise' (did you mean 'rationalize'?)",),
    ),
    Case(
        "templates-show-problem-wrong-field-type",
        lambda f: ["templates", "show", "zero-shot-cot", "--problem", '{"question": 5}'],
        ("--problem: field 'question'",),
    ),
    Case(
        "templates-show-index-past-the-end",
        lambda f: ["templates", "show", "zero-shot-cot", "--input", f.write("q.jsonl", GOOD), "--index", "7"],
        ("--index 7", "{d}/q.jsonl has only 3 problems"),
    ),
    Case(
        "templates-show-negative-index",
        lambda f: ["templates", "show", "zero-shot-cot", "--input", f.write("q.jsonl", GOOD), "--index", "-1"],
        ("--index -1",),
    ),
    # --- report ---------------------------------------------------------------------------------------------
    Case("report-not-a-run", lambda f: ["report", str(f.path)], ("{d}: no samples.jsonl",)),
    Case(
        "report-funnel-json-corrupt",
        lambda f: ["report", f.run({"funnel.json": '{"stages": ['})],
        ("{d}/run/funnel.json", "not valid JSON"),
    ),
    Case(
        "report-filtered-jsonl-truncated",
        lambda f: ["report", f.run({"filtered.jsonl": '{"key": "k"}\n{"key": "k2", "verd'})],
        ("{d}/run/filtered.jsonl:2:", "not valid JSON"),
    ),
]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    argv = Folder(folder, folder).generate()
    invoke_ok(*argv)
    return folder / "out"


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder``: 'dir' for folders, the SHA-256 of files."""
    return {
        str(path.relative_to(folder)): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
    }


def _assert_one_line_error(output: str, names: list[str]) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"


#: cases whose fix belongs to a module this change does not touch: the traceback, and the fix
XFAIL = {}


def test_the_corpus() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids) and set(XFAIL) <= set(ids)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.id, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[case.id])])
        if case.id in XFAIL
        else pytest.param(case, id=case.id)
        for case in CASES
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, good_run: Path, tmp_path: Path) -> None:
    folder = Folder(tmp_path, good_run)
    argv = case.argv(folder)
    before = _snapshot(tmp_path)
    result = run_cli(*argv)
    output = result.stdout + result.stderr
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    _assert_one_line_error(output, [name.replace("{d}", str(tmp_path)) for name in case.names])
    assert _snapshot(tmp_path) == before, "the failed command wrote or changed files"


def test_read_only_output_folder(tmp_path: Path) -> None:
    folder = Folder(tmp_path, tmp_path)
    argv = folder.generate("--out", f"{tmp_path}/ro/run")
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o500)
    try:
        try:
            (read_only / "probe").touch()
        except PermissionError:
            pass
        else:  # root (CAP_DAC_OVERRIDE) writes anyway: out-under-a-regular-file covers this case there
            pytest.skip("a 0o500 folder does not stop this user's writes")
        before = _snapshot(tmp_path)
        result = run_cli(*argv)
        _assert_one_line_error(result.stdout + result.stderr, [f"{read_only} is not writable"])
        assert result.exit_code == 2 and _snapshot(tmp_path) == before
    finally:
        read_only.chmod(0o700)


# --- a full disk ------------------------------------------------------------------------------------------------


def _many(folder: Path, count: int) -> list[str]:
    """generate args for ``count`` problems, each with a replayed answer, out to FOLDER/out."""
    ids = [f"p{i}" for i in range(count)]
    data = write_jsonl(folder / "q.jsonl", ({"id": i, "question": f"What is {i}?", "answer": "1"} for i in ids))
    text = "Adding one and nothing more gives one. " * 8 + "The answer is 1."
    body = {"choices": [{"message": {"content": text}}]}
    replay = write_jsonl(folder / "replay.jsonl", ({"custom_id": i, "response": {"body": body}} for i in ids))
    return [
        "generate",
        "--input",
        str(data),
        "--answer-type",
        "number",
        "--teacher",
        "replay",
        "--replay",
        str(replay),
        "--out",
        str(folder / "out"),
    ]


def _run_with_file_size_limit(args: list[str], limit: int) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess where no file may grow past ``limit`` bytes: writes fail with EFBIG, as on a
    full disk (SIGXFSZ is ignored so that the write raises instead of killing the process)."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cotfactory", *args],
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def _stray_files(run_dir: Path) -> list[str]:
    """Temporary export files and exports: what a failed run must not leave."""
    return sorted(
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.name.startswith(".") or p.name in ("samples.jsonl", "dataset")
    )


def test_disk_full_before_the_store_exists(tmp_path: Path) -> None:
    """No byte can be written: one line naming the store, exit 2, and nothing but empty files behind;
    the same command then succeeds once there is room."""
    args = _many(tmp_path, 20)
    proc = _run_with_file_size_limit(args, 0)
    assert proc.returncode == 2, proc.stderr
    _assert_one_line_error(proc.stdout + proc.stderr, [f"{tmp_path}/out/store.sqlite", "disk I/O error"])
    run_dir = tmp_path / "out"
    assert {p.stat().st_size for p in run_dir.rglob("*") if p.is_file()} <= {0}
    assert _stray_files(run_dir) == [] and not (run_dir / "config.json").exists()
    invoke_ok(*args)
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 20


def test_disk_full_in_the_middle_of_a_run(tmp_path: Path) -> None:
    """The store fills up part-way. The error is the last line of stderr (the progress line before it is the
    run's own), exit 2; "nothing half-written" here means: no export and no temporary file, config.json
    complete, the store consistent and holding only whole samples — and running the same command again
    sends only the missing requests and ends with exactly the samples of an undisturbed run."""
    reference = tmp_path / "reference"
    reference.mkdir()
    invoke_ok(*_many(reference, 200))
    full_size = (reference / "out" / "store.sqlite").stat().st_size

    work = tmp_path / "work"
    work.mkdir()
    args = _many(work, 200)
    proc = _run_with_file_size_limit(args, full_size // 2)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and [line for line in lines if line.startswith("error: ")] == lines[-1:]
    assert f"{work}/out/store.sqlite" in lines[-1], proc.stderr
    run_dir = work / "out"
    assert _stray_files(run_dir) == []
    assert json.loads((run_dir / "config.json").read_text())["input"] == str(work / "q.jsonl")
    with sqlite3.connect(run_dir / "store.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    assert 0 < stored < 200, stored

    invoke_ok(*args)
    rows = read_jsonl(run_dir / "samples.jsonl")
    expected = read_jsonl(reference / "out" / "samples.jsonl")
    assert [(r["key"], r["text"]) for r in rows] == [(r["key"], r["text"]) for r in expected]
