"""Long reliability tests (``make test-reliability``): a 10,000-request fault soak, and SIGKILL at
random moments of generate, filter, train-student and run, each resumed to the uninterrupted result.

Every test here is marked ``reliability`` and skipped unless pytest gets ``--run-reliability``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import ALL_FAULT_KINDS, FakeServer, padded_text, prompt_text, reasoning_text
from helpers import fake_teacher_args, invoke_ok, read_jsonl, run_cli, write_jsonl, write_sums

from cotfactory.prompts import load_template
from cotfactory.run_dir import RunDir
from cotfactory.store import Store

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "COTFACTORY_RELIABILITY_KEY"
POISON = "POISONED"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-reliability")


def _questions(path: Path, count: int, poisoned: frozenset[int] = frozenset()) -> Path:
    return write_sums(path, count, {i: f" {POISON}" for i in poisoned})


def _generate_args(base_url: str, data: Path, out: Path, *extra: str) -> list[str]:
    return fake_teacher_args(base_url, data, out, KEY_ENV, *extra)


def _store_keys(run_dir: Path) -> tuple[int, int]:
    """(rows, distinct keys) of the store's samples table, read with plain sqlite."""
    with closing(sqlite3.connect(RunDir(run_dir).store)) as db:
        return db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM samples").fetchone()


# --------------------------------------------------------------------------------------------- 10,000 requests

SOAK_PROBLEMS = 1000
SOAK_TEMPERATURES = "0.3,0.9"
SOAK_SEEDS = "1,2,3,4,5"
SOAK_POISONED = frozenset({417})  # its 10 requests get HTTP 400 every time: failed for good


def test_ten_thousand_requests_through_every_fault_answered_exactly_once(tmp_path: Path) -> None:
    data = _questions(tmp_path / "q.jsonl", SOAK_PROBLEMS, SOAK_POISONED)
    out = tmp_path / "run"
    planned = SOAK_PROBLEMS * 2 * 5
    server_args = ["--latency", "0.005", "--fault-rate", "0.2", "--faults", ",".join(ALL_FAULT_KINDS)]
    server_args += ["--timeout-sleep", "3", "--seed", "11", "--fail-marker", POISON]
    client_args = ["--temperatures", SOAK_TEMPERATURES, "--seeds", SOAK_SEEDS, "--use-n", "never"]
    client_args += ["--concurrency", "64", "--timeout", "2", "--max-attempts", "8"]
    with FakeServer(*server_args) as server:
        started = time.monotonic()
        result = run_cli(*_generate_args(server.base_url, data, out, *client_args))
        elapsed = time.monotonic() - started
        stats = server.stats(detail=True)
        # the same command again sends nothing: every request has its answer (or its permanent error)
        again = run_cli(*_generate_args(server.base_url, data, out, *client_args))
        assert server.stats()["requests"] == stats["requests"]
    rows = read_jsonl(out / "samples.jsonl")
    attempts = [r["attempts"] for r in rows]
    print(
        f"\nsoak: {planned} requests in {elapsed:.1f} s; {stats['requests']} HTTP attempts; "
        f"faults {sum(stats['faults'].values())} {stats['faults']}; permanent {stats['permanent']}; "
        f"attempts per request {dict(sorted((a, attempts.count(a)) for a in set(attempts)))}; "
        f"bodies answered twice {stats['ok_twice']}"
    )

    # exactly once: the store, the export and the plan agree, key for key
    assert _store_keys(out) == (planned, planned)
    assert len(rows) == planned and len({r["key"] for r in rows}) == planned

    # permanently failed: exactly the poisoned problem's requests, at once, listed, exit code 1
    poisoned_ids = {f"q{i}" for i in SOAK_POISONED}
    failed = [r for r in rows if r["error"] is not None]
    assert {r["problem_id"] for r in failed} == poisoned_ids and len(failed) == 10 * len(SOAK_POISONED)
    assert all(r["error"].startswith("HTTP 400") and r["attempts"] == 1 for r in failed)
    assert stats["permanent"] == len(failed)
    for run in (result, again):
        assert run.exit_code == 1, run.output
        listed = set(re.findall(r"failed ([0-9a-f]{24}) problem=", run.output))
        assert listed == {r["key"] for r in failed}

    # every other request has its own reply: the server's deterministic text for that prompt and seed
    template = load_template("zero-shot-cot")
    with Store.in_run(out) as store:
        problems = store.problems()
    for row in rows:
        if row["error"] is not None:
            continue
        prompt = prompt_text({"messages": template.render(problems[row["problem_id"]]).messages}, chat=True)
        expected = padded_text(reasoning_text(prompt, row["seed"], row["temperature"], 0), 20)
        assert row["text"] == expected, row["key"]
        assert row["finish_reason"] == "stop" and row["answer"] == expected.split()[-1].rstrip(".")

    # --retry-failed against a server that no longer refuses: exactly the failed requests go again, and the
    # export shows their answers (the store's row count is unchanged by that: the export must still notice)
    with FakeServer("--latency", "0") as healed:
        invoke_ok(*_generate_args(healed.base_url, data, out, *client_args, "--retry-failed"))
        assert healed.stats()["requests"] == len(failed)
    after = read_jsonl(out / "samples.jsonl")
    assert len(after) == planned and all(r["error"] is None for r in after)
    assert [r["key"] for r in after] == [r["key"] for r in rows]
    assert _store_keys(out) == (planned, planned)

    # every fault kind happened, about a fifth of the attempts failed, and each attempt is on a sample
    assert set(stats["faults"]) == set(ALL_FAULT_KINDS)
    assert 0.15 <= sum(stats["faults"].values()) / stats["requests"] <= 0.25
    assert sum(attempts) == stats["requests"]
    assert sum(a > 1 for a in attempts) >= 0.15 * planned
    # the server never had to send one request's answer twice (a timed-out reply reaches nobody)
    assert stats["ok"] == planned - len(failed) and stats["ok_by_body_max"] == 1 and stats["ok_twice"] == 0


# --------------------------------------------------------------------------------------------- SIGKILL helpers

KILL_SEED = 20240607
ENV_KEYS = {KEY_ENV: "sk-reliability"}


def _env() -> dict[str, str]:
    return {**os.environ, **ENV_KEYS}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cotfactory", *args]


def _run_to_end(command: list[str], expect: int = 0) -> float:
    """Run a command to completion; returns its wall time."""
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == expect, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return time.monotonic() - started


def _timed_reference(command: list[str], working: Callable[[], bool]) -> tuple[float, float]:
    """Run the uninterrupted reference: (start-up seconds until ``working()`` holds, seconds of work after)."""
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(proc.stdout.read() if proc.stdout else ""), daemon=True)
    reader.start()
    startup = None
    while proc.poll() is None:
        if startup is None and working():
            startup = time.monotonic() - started
        time.sleep(0.02)
    reader.join(30)
    total = time.monotonic() - started
    assert proc.returncode == 0, f"{command}\n{''.join(output)[-3000:]}"
    startup = total if startup is None else startup
    return startup, total - startup


def _kill_after(command: list[str], delay: float) -> bool:
    """Start the command, SIGKILL it (its whole process group) after ``delay`` s; False if it ended first."""
    proc = subprocess.Popen(
        command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return True
    assert proc.returncode == 0, f"{command} failed before its kill:\n{stderr.decode(errors='replace')[-3000:]}"
    return False


@dataclass
class Chain:
    """One run directory taking kills: the command that starts it and the one that continues it."""

    out: Path
    first: list[str]
    resume: list[str]


def _kill_campaign(
    name: str,
    chains: tuple[int, ...],
    timing: tuple[float, float],
    fresh: Callable[[int], Chain],
    progress: Callable[[Path], str],
    check: Callable[[Path], str],
) -> list[str]:
    """SIGKILL runs at random moments, ``chains[i]`` times in a row on run i, resuming in between; run each
    to the end and ``check`` it against the uninterrupted reference (it returns a note on the run).

    ``timing`` is the uninterrupted run's (start-up, work) seconds. A kill comes after the start-up plus a
    uniform part (seeded) of the work still to do, so it lands mid-work; a resumed run redoes its start-up
    (and, for training, the steps after its last checkpoint) on top. When the machine is faster than during
    the reference and a run ends before its kill, a fresh run takes the kills left over (aiming earlier from
    then on), so every kill counted landed in a live process.
    """
    rng = random.Random(f"{KILL_SEED}-{name}")
    notes: list[str] = []
    pending, landed, missed, number = list(chains), 0, 0, 0
    startup, work = timing
    while pending:
        kills = pending.pop(0)
        chain = fresh(number)
        number += 1
        remaining = work
        done = 0
        for index in range(kills):
            into_work = rng.uniform(0.02, 0.75) * remaining
            delay = startup + into_work
            if not _kill_after(chain.first if index == 0 else chain.resume, delay):
                missed += 1
                notes.append(f"{chain.out.name}: ended before the kill at {delay:.1f} s; a fresh run takes the rest")
                startup, work = startup * 0.8, work * 0.7  # faster than the reference: aim earlier from now on
                break
            done += 1
            notes.append(
                f"{chain.out.name}: kill at {delay:4.1f} s ({into_work:4.1f} s into the work): {progress(chain.out)}"
            )
            remaining -= into_work
        _run_to_end(chain.resume)
        notes.append(f"{chain.out.name}: identical to the reference; {check(chain.out)}")
        landed += done
        if done < kills:
            pending.insert(0, kills - done)
        assert missed <= 15, "\n".join(notes)
    assert landed == sum(chains)
    return notes


def _describe(reference: tuple[float, float]) -> str:
    return f"{sum(reference):.1f} s ({reference[0]:.1f} s start-up, {reference[1]:.1f} s work)"


def _store_keys_or_zero(run_dir: Path) -> int:
    try:
        return _store_keys(run_dir)[0] if RunDir(run_dir).store.exists() else 0
    except sqlite3.Error:
        return 0


def _verdicts_or_zero(run_dir: Path) -> int:
    try:
        with closing(sqlite3.connect(RunDir(run_dir).store)) as db:
            return db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    except sqlite3.Error:
        return 0


def _without(rows: list[dict[str, Any]], *fields: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in fields} for row in rows]


def _leftovers(folder: Path, recursive: bool = True) -> list[str]:
    """Temporary files and folders that an atomic write killed midway left behind."""
    found = folder.rglob(".*") if recursive else folder.glob(".*")
    return sorted(str(p.relative_to(folder)) for p in found if p.name != ".fingerprint")


def _store_progress(run_dir: Path) -> str:
    if not RunDir(run_dir).store.exists():
        return "no store yet"
    try:
        rows, distinct = _store_keys(run_dir)
        with closing(sqlite3.connect(RunDir(run_dir).store)) as db:
            verdicts = db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    except sqlite3.Error as exc:
        return f"store unreadable ({exc})"
    return f"store {rows} samples ({distinct} keys), {verdicts} verdicts"


def _tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(path)


def _assert_same_tensors(a: Path, b: Path) -> float:
    """Same names and values; returns the largest absolute difference (0.0: bit for bit)."""
    import torch

    left, right = _tensors(a), _tensors(b)
    assert left.keys() == right.keys(), (a, b)
    worst = max(float((left[k].float() - right[k].float()).abs().max()) for k in left)
    assert all(torch.equal(left[k], right[k]) for k in left), f"{a} vs {b}: max |diff| {worst}"
    return worst


# --------------------------------------------------------------------------------------------- generate

GEN_KILLS = (2, 2, 2)  # three runs, each killed twice and then resumed to the end: 6 kills


def test_generate_killed_six_times_resumes_to_the_uninterrupted_samples(tmp_path: Path) -> None:
    import datasets

    data = _questions(tmp_path / "q.jsonl", 150)
    server_args = ["--latency", "0.05", "--fault-rate", "0.1", "--seed", "5"]
    server_args += ["--faults", "429,500,503,drop,truncated,nonjson,wrong-choices,extra-choices,error-200"]
    grid = ["--temperatures", "0.2,0.9", "--seeds", "1,2", "--use-n", "never", "--concurrency", "4"]
    with FakeServer(*server_args) as server:
        ref_command = _cli(*_generate_args(server.base_url, data, tmp_path / "ref", *grid))
        timing = _timed_reference(ref_command, lambda: _store_keys_or_zero(tmp_path / "ref") > 0)
        reference = read_jsonl(tmp_path / "ref" / "samples.jsonl")
        assert len(reference) == 600
        kills: dict[Path, int] = {}

        def fresh(number: int) -> Chain:
            server.reset()  # count the replies each run made the server send twice
            command = _cli(*_generate_args(server.base_url, data, tmp_path / f"killed{number}", *grid))
            return Chain(tmp_path / f"killed{number}", command, command)

        def progress(out: Path) -> str:
            kills[out] = kills.get(out, 0) + 1
            return _store_progress(out)

        def check(out: Path) -> str:
            stats = server.stats(detail=True)
            rows = read_jsonl(out / "samples.jsonl")
            # the same samples in the same order; only the latency and the attempts of a retry may differ
            assert _without(rows, "latency_s", "attempts") == _without(reference, "latency_s", "attempts")
            assert _store_keys(out) == (600, 600)
            assert datasets.load_from_disk(str(out / "dataset"))["key"] == [r["key"] for r in reference]
            # answered twice only what was in flight when a kill came (at most --concurrency per kill)
            assert stats["ok_twice"] <= 4 * kills.get(out, 0), stats
            assert _leftovers(out) == []  # the resumed run removed what killed exports left
            return f"{stats['ok_twice']} replies sent twice"

        notes = _kill_campaign("generate", GEN_KILLS, timing, fresh, progress, check)
    print(f"\ngenerate: uninterrupted {_describe(timing)}\n  " + "\n  ".join(notes))


# --------------------------------------------------------------------------------------------- filter

FILTER_KILLS = (2, 2)  # two copies of one run, each filter killed twice and then finished: 4 kills


def _sums(path: Path, count: int, seed: int, start: int = 0) -> Path:
    """Chained sums the arithmetic teacher solves (with mistakes that grow with temperature)."""
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + count):
        a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(1, 9)
        rows.append({"id": f"s{i}", "question": f"What is {a} + {b} - {c}?", "answer": str(a + b - c)})
    return write_jsonl(path, rows)


def _arith_teacher() -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    from arith_teacher import ArithTeacher

    return ArithTeacher()


def test_filter_killed_four_times_resumes_to_the_uninterrupted_verdicts(tmp_path: Path) -> None:
    import shutil

    import datasets

    data = _sums(tmp_path / "sums.jsonl", 1500, seed=3)
    source = tmp_path / "generated"
    grid = ["--temperatures", "0.2,1.0", "--seeds", "1,2", "--use-n", "never", "--concurrency", "32"]
    with _arith_teacher() as teacher:
        args = _generate_args(teacher.base_url, data, source, *grid)
        args[args.index("fake-teacher")] = "arith-teacher"
        invoke_ok(*args)
    filter_args = ["--correct", "--consistency", "0.5", "--dedup", "0.8"]
    ref = tmp_path / "ref"
    shutil.copytree(source, ref)
    timing = _timed_reference(_cli("filter", str(ref), *filter_args), lambda: _verdicts_or_zero(ref) > 0)
    with Store.in_run(ref) as store:
        ref_verdicts = sorted(v.model_dump_json() for v in store.verdicts())

    def fresh(number: int) -> Chain:
        out = tmp_path / f"killed{number}"
        shutil.copytree(source, out)
        command = _cli("filter", str(out), *filter_args)
        return Chain(out, command, command)

    def check(out: Path) -> str:
        assert (out / "filtered.jsonl").read_bytes() == (ref / "filtered.jsonl").read_bytes()
        # funnel.json names its run directory; everything else is byte for byte the reference's
        assert (out / "funnel.json").read_text().replace(str(out), str(ref)) == (ref / "funnel.json").read_text()
        with Store.in_run(out) as store:
            assert sorted(v.model_dump_json() for v in store.verdicts()) == ref_verdicts
        kept = datasets.load_from_disk(str(out / "filtered"))
        assert kept["key"] == [r["key"] for r in read_jsonl(ref / "filtered.jsonl")]
        assert _leftovers(out) == []  # the resumed run removed what killed exports left
        return f"{len(ref_verdicts)} verdicts"

    notes = _kill_campaign("filter", FILTER_KILLS, timing, fresh, _filter_progress, check)
    funnel = json.loads((ref / "funnel.json").read_text())["stages"]
    print(
        f"\nfilter: uninterrupted {_describe(timing)} over {funnel[0]['samples_in']} samples, "
        f"{funnel[-1]['samples_out']} kept\n  " + "\n  ".join(notes)
    )


def _filter_progress(run_dir: Path) -> str:
    written = [name for name in ("filtered.jsonl", "filtered", "funnel.json") if (run_dir / name).exists()]
    return f"{_store_progress(run_dir)}; written {written or 'nothing'}"


# --------------------------------------------------------------------------------------------- train-student

TRAIN_KILLS = (2, 2, 1)  # three students: killed twice, twice and once, each resumed to the end: 5 kills
TRAIN_STEPS = ("--max-steps", "24", "--save-steps", "3")  # 32 examples, batch 4: 3 epochs of 8 steps
TRAIN_WEIGHTS = ("adapter_model.safetensors", "base/model.safetensors")  # LoRA on a scratch base: both saved


def _teaching_file(path: Path, count: int = 32) -> Path:
    rows = [
        {
            "problem_id": f"p{i}",
            "question": f"What is {i} plus {i + 3}?",
            "rationale": f"{i} + {i + 3} = {2 * i + 3}.",
            "answer": str(2 * i + 3),
            "answer_type": "number",
        }
        for i in range(count)
    ]
    write_jsonl(path, rows)
    return path


def _train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return _cli(
        "train-student",
        str(data),
        "--method",
        "finetune-cot",
        "--student",
        "scratch:llama-tiny",
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--logging-steps",
        "1",
        *extra,
    )


def _loss_logs(folder: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the end-of-training summary's wall-clock fields and its train_loss, which the
    Trainer averages over the steps of the last process only (a resumed run reports the tail's mean)."""
    per_process = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}
    return _without(read_jsonl(folder / "metrics.jsonl"), *per_process)


def _checkpoint_progress(out: Path) -> str:
    steps = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    logged = len(read_jsonl(out / "metrics.jsonl")) if (out / "metrics.jsonl").exists() else 0
    return f"checkpoints {steps}, {logged} metrics lines, finished {(out / 'student.json').exists()}"


def _assert_same_student(reference: Path, out: Path) -> None:
    for name in TRAIN_WEIGHTS:
        assert _assert_same_tensors(reference / name, out / name) == 0.0  # bit for bit on CPU
    info, ref_info = (json.loads((folder / "student.json").read_text()) for folder in (out, reference))
    for value in (info, ref_info):
        del value["base"], value["config"]["out"], value["config"]["resume"], value["config"]["input"]
    assert info == ref_info


def _as_if_killed_after_logging_the_last_step(reference: Path, out: Path) -> None:
    """A copy of a finished student as a kill leaves it after the last step's log, before its checkpoint."""
    import shutil

    shutil.copytree(reference, out)
    last = max((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(last)
    shutil.rmtree(out / "base")
    for name in ("adapter_model.safetensors", "student.json"):
        (out / name).unlink()
    logs = [line for line in (out / "metrics.jsonl").read_text().splitlines() if "train_runtime" not in line]
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in logs))


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tuple[float, float]]:
    """(teaching file, an uninterrupted student, its (start-up, work) seconds)."""
    root = tmp_path_factory.mktemp("train")
    data = _teaching_file(root / "teach.jsonl")
    reference = root / "ref"
    command = _train_command(data, reference, *TRAIN_STEPS)
    timing = _timed_reference(command, (reference / "metrics.jsonl").exists)
    return data, reference, timing


def test_train_student_killed_five_times_resumes_to_the_same_weights(
    train_reference: tuple[Path, Path, tuple[float, float]], tmp_path: Path
) -> None:
    data, reference, timing = train_reference

    def fresh(number: int) -> Chain:
        out = tmp_path / f"killed{number}"
        first = _train_command(data, out, *TRAIN_STEPS)
        return Chain(out, first, [*first, "--resume"])

    def check(out: Path) -> str:
        _assert_same_student(reference, out)
        assert [m["step"] for m in _loss_logs(out) if "loss" in m][-1] == 24
        return f"{len(_loss_logs(out))} metrics lines (reference {len(_loss_logs(reference))})"

    notes = _kill_campaign("train", TRAIN_KILLS, timing, fresh, _checkpoint_progress, check)
    print(f"\ntrain-student: uninterrupted {_describe(timing)}\n  " + "\n  ".join(notes))


def test_train_student_resumed_metrics_are_the_uninterrupted_ones(
    train_reference: tuple[Path, Path, tuple[float, float]], tmp_path: Path
) -> None:
    data, reference, _ = train_reference
    out = tmp_path / "student"
    _as_if_killed_after_logging_the_last_step(reference, out)
    _run_to_end(_train_command(data, out, *TRAIN_STEPS, "--resume"))
    _assert_same_student(reference, out)  # resumed from the checkpoint before: the weights are right
    assert _loss_logs(out) == _loss_logs(reference)


def test_train_student_resumes_past_a_half_written_checkpoint(
    train_reference: tuple[Path, Path, tuple[float, float]], tmp_path: Path
) -> None:
    import shutil

    data, reference, _ = train_reference
    out = tmp_path / "student"
    shutil.copytree(reference, out)
    # killed while saving checkpoint-24: the Trainer writes trainer_state.json last
    (out / "checkpoints" / "checkpoint-24" / "trainer_state.json").unlink()
    _run_to_end(_train_command(data, out, *TRAIN_STEPS, "--resume"))
    _assert_same_student(reference, out)


def test_train_student_resumes_from_the_newest_checkpoint(tmp_path: Path) -> None:
    data = _teaching_file(tmp_path / "teach.jsonl", 16)
    command = _train_command(data, tmp_path / "s", "--max-steps", "12", "--save-steps", "3")
    _run_to_end(command)
    state = tmp_path / "s" / "checkpoints" / "checkpoint-12" / "trainer_state.json"
    assert sorted(p.name for p in state.parent.parent.iterdir()) == ["checkpoint-12", "checkpoint-9"]
    saved = state.stat().st_mtime_ns
    _run_to_end([*command, "--resume"])  # e.g. a pipeline killed after training, before it noted the stage done
    assert state.stat().st_mtime_ns == saved  # nothing to redo: no step trained, no checkpoint saved again


def test_train_student_resumed_mid_epoch_with_length_grouping(tmp_path: Path) -> None:
    data = _teaching_file(tmp_path / "teach.jsonl")
    reference = tmp_path / "ref"
    _run_to_end(_train_command(data, reference, *TRAIN_STEPS))  # group_by_length is the default
    out = tmp_path / "student"
    _as_if_killed_after_logging_the_last_step(reference, out)  # resumes from checkpoint-21: epoch 2, step 5 of 8
    _run_to_end(_train_command(data, out, *TRAIN_STEPS, "--resume"))
    _assert_same_student(reference, out)


# --------------------------------------------------------------------------------------------- run

RUN_KILLS = (3, 2)  # two pipelines: killed three times and twice, each resumed to the end: 5 kills

PIPELINE = """\
name: reliability
description: arithmetic teacher -> correct, consistent, deduplicated -> LoRA llama-tiny Fine-tune-CoT -> eval
out: unused
generate:
  input: {sums}
  answer_type: number
  teacher: openai
  model: arith-teacher
  base_url: [{base_url}]
  api_key_env: ''
  templates: [zero-shot-cot]
  temperatures: [0.2, 1.0]
  seeds: [1, 2]
  use_n: never
  concurrency: 4
filter:
  correct: true
  consistency: 0.5
  dedup: 0.9
students:
  - name: ftc
    method: finetune-cot
    student: scratch:llama-tiny
    max_steps: 18
    save_steps: 3
    batch_size: 4
    logging_steps: 1
    lr: 0.003
eval:
  input: {heldout}
  answer_type: number
  batch_size: 6
  max_new_tokens: 12
"""


def _pipeline_progress(out: Path) -> str:
    state = json.loads((out / "pipeline.json").read_text()) if (out / "pipeline.json").exists() else {}
    student = out / "students" / "ftc"
    training = _checkpoint_progress(student) if student.exists() else "no student yet"
    return f"stages done {list(state)}; {_store_progress(out)}; {training}"


def test_run_killed_five_times_resumes_to_the_uninterrupted_outputs(tmp_path: Path) -> None:
    sums = _sums(tmp_path / "sums.jsonl", 24, seed=4)
    heldout = _sums(tmp_path / "heldout.jsonl", 6, seed=9, start=1000)
    with _arith_teacher() as teacher:
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(PIPELINE.format(sums=sums, heldout=heldout, base_url=teacher.base_url))
        ref = tmp_path / "ref"
        timing = _timed_reference(_cli("run", str(pipeline), "--out", str(ref)), lambda: _store_keys_or_zero(ref) > 0)

        def fresh(number: int) -> Chain:
            command = _cli("run", str(pipeline), "--out", str(tmp_path / f"killed{number}"))
            return Chain(tmp_path / f"killed{number}", command, command)

        def check(out: Path) -> str:
            _assert_same_pipeline_outputs(ref, out)
            command = _cli("run", str(pipeline), "--out", str(out))
            again = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
            assert again.returncode == 0 and "0 stage(s) ran, 5 unchanged" in again.stderr, again.stderr[-2000:]
            assert _leftovers(out, recursive=False) == []  # pipeline.json and the run's exports
            return f"leftovers below the run directory {_leftovers(out)}"

        notes = _kill_campaign("run", RUN_KILLS, timing, fresh, _pipeline_progress, check)
    print(f"\nrun: uninterrupted {_describe(timing)}\n  " + "\n  ".join(notes))


def _assert_same_pipeline_outputs(ref: Path, out: Path) -> None:
    # generate and filter: the same rows (a sample's latency is the only thing a rerun may change)
    for name in ("samples.jsonl", "filtered.jsonl"):
        assert _without(read_jsonl(out / name), "latency_s", "attempts") == _without(
            read_jsonl(ref / name), "latency_s", "attempts"
        )
    funnel = (out / "funnel.json").read_text().replace(str(out), str(ref))
    assert funnel == (ref / "funnel.json").read_text()
    assert _store_keys(out) == _store_keys(ref)
    # the student and its evaluation
    _assert_same_student(ref / "students" / "ftc", out / "students" / "ftc")
    for name in ("predictions.jsonl", "eval.json"):
        assert (out / "students" / "ftc" / name).read_bytes() == (ref / "students" / "ftc" / name).read_bytes()
    assert list(json.loads((out / "pipeline.json").read_text())) == list(
        json.loads((ref / "pipeline.json").read_text())
    )
    assert (out / "report" / "report.html").exists()
