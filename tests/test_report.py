"""The run report: a real small run (PaLM's recorded CQA rationales, replayed; no model) → report/.

The numbers in report.json are checked against ones computed here, independently, from the run's own
files; the page is checked for escaping and, where Chromium is installed, rendered once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from html import escape
from pathlib import Path

import pytest
from helpers import invoke_ok, read_jsonl, write_jsonl

from cotfactory.answers import answers_match
from cotfactory.records import Verdict
from cotfactory.report import write_report
from cotfactory.store import Store

ROOT = Path(__file__).resolve().parent.parent
CQA = ROOT / "data" / "cqa" / "test_sample.json"
PALM = ROOT / "data" / "cqa" / "palm_test_sample.json"
CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>alert("x")</script> & '
TEMPERATURES = (0.3, 0.7)
METRICS = [
    {"step": 1, "epoch": 0.3, "loss": 2.0, "loss_label": 1.5, "loss_rationale": 2.5, "learning_rate": 1e-4},
    {"step": 2, "epoch": 0.6, "loss": 1.6, "loss_label": 1.1, "loss_rationale": 2.1, "learning_rate": 1e-4},
    {"step": 3, "epoch": 1.0, "loss": 1.1, "loss_label": 0.7, "loss_rationale": 1.5, "learning_rate": 1e-4},
    {"step": 3, "epoch": 1.0, "train_loss": 1.57, "train_runtime": 2.0},  # the trainer's closing summary line
]
EVAL = {"method": "step-by-step", "total": 16, "correct": 11, "accuracy": 0.6875, "rationale_agreement": 0.5}


def _make_run(root: Path) -> Path:
    """generate (replay, 2 temperatures) → filter --correct --consistency 0.5 → a hand-written student."""
    lines = CQA.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["question"] = HOSTILE + first["question"]  # PaLM answers this one right: it shows as a kept example
    questions = root / "cqa.json"
    questions.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n", encoding="utf-8")
    run = root / "RUN"
    invoke_ok(
        "generate",
        *("--input", str(questions), "--format", "cqa", "--teacher", "replay", "--replay", str(PALM)),
        *("--model", "palm", "--template", "few-shot-cot-cqa", "--temperatures", ",".join(map(str, TEMPERATURES))),
        *("--out", str(run)),
    )
    invoke_ok("filter", str(run), "--correct", "--consistency", "0.5")
    student = run / "students" / "s1"
    student.mkdir(parents=True)
    (student / "student.json").write_text(json.dumps({"method": "step-by-step", "tasks": ["label", "rationale"]}))
    write_jsonl(student / "metrics.jsonl", METRICS)
    (student / "eval.json").write_text(json.dumps(EVAL))
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(run: Path) -> tuple[Path, dict]:
    html = write_report(run)
    return html, json.loads((run / "report" / "report.json").read_text())


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, f"{path}: {len(data)} bytes"


def test_writes_the_page_and_every_plot(run: Path, report: tuple[Path, dict]) -> None:
    html, numbers = report
    assert html == run / "report" / "report.html" and html.is_file()
    expected = {"funnel", "agreement", "yield", "loss_0_s1", "accuracy"}  # no reward scorer in this run: no scores
    assert set(numbers["plots"]) == expected
    for name in numbers["plots"].values():
        _assert_png(run / "report" / name)
    assert sorted(p.name for p in (run / "report").glob("*.png")) == sorted(f"{p}.png" for p in expected)


def test_numbers_match_the_run(run: Path, report: tuple[Path, dict]) -> None:
    _, numbers = report
    samples = read_jsonl(run / "samples.jsonl")
    funnel = json.loads((run / "funnel.json").read_text())["stages"]
    assert [(s["stage"], s["samples_out"], s["problems_out"]) for s in numbers["funnel"]["stages"]] == [
        (s["stage"], s["samples_out"], s["problems_out"]) for s in funnel
    ]
    assert numbers["funnel"]["stages"][2]["dropped"] == {"wrong_answer": 4}  # PaLM misses 2 of 16, twice each
    assert numbers["summary"] == {
        "samples": len(samples),
        "problems": len({r["problem_id"] for r in samples}),
        "failed": 0,
        "kept": len(read_jsonl(run / "filtered.jsonl")),
        "students": 1,
        "accuracy": {"s1": EVAL["accuracy"]},
    }

    with Store.in_run(run) as store:
        problems = store.problems()
        verdicts = store.verdicts()
    tally: dict[float, Counter] = {}
    for row in samples:
        problem = problems[row["problem_id"]]
        tally.setdefault(row["temperature"], Counter()).update(
            samples=1, correct=answers_match(row["answer"], problem.gold, problem)
        )
    assert sorted(tally) == list(TEMPERATURES)
    assert numbers["yield_by_temperature"] == [
        {"temperature": t, "samples": c["samples"], "correct": c["correct"], "fraction": c["correct"] / c["samples"]}
        for t, c in sorted(tally.items())
    ]

    problem_of = {r["key"]: r["problem_id"] for r in samples}
    agreement = {problem_of[v.sample_key]: v.details["agreement"] for v in verdicts if v.filter == "consistency"}
    assert sorted(numbers["agreement"]) == sorted(agreement.values())
    assert len(numbers["agreement"]) == funnel[-2]["problems_out"]  # every problem that reached the vote
    assert numbers["scores"] is None

    (student,) = numbers["students"]
    assert student["method"] == "step-by-step"
    # an eval.json without intervals (an older eval): the 95 % Wilson interval is computed from the counts
    assert student["eval"] == {
        **{k: EVAL[k] for k in ("total", "correct", "accuracy", "rationale_agreement")},
        "rationale_accuracy": None,
        "interval": pytest.approx([0.4440, 0.8584], abs=1e-4),
    }
    assert student["untrained"] is None  # no students/s1/untrained/
    assert numbers["errors"] == []  # no examples.jsonl / predictions.jsonl: no lineage, and no crash
    assert list(student["loss"]) == ["loss", "loss_label", "loss_rationale"]  # not train_loss
    for key, series in student["loss"].items():
        assert series == {"steps": [1, 2, 3], "values": [line[key] for line in METRICS[:3]]}


def test_page_shows_summary_and_examples_escaped(run: Path, report: tuple[Path, dict]) -> None:
    html_path, numbers = report
    page = html_path.read_text(encoding="utf-8")
    assert "<code>RUN</code>" in page and "<title>cotfactory report: RUN</title>" in page
    assert "11/16 = 0.688 [0.444, 0.858]" in page  # s1's accuracy with its 95 % interval
    assert numbers["examples"]["kept"] and numbers["examples"]["dropped"]
    dropped = numbers["examples"]["dropped"][0]
    assert dropped["reason"] == "wrong_answer" and dropped["filter"] == "correct"
    assert '<span class="reason">wrong_answer</span> by correct' in page
    assert '<span class="reason">kept</span>' in page
    assert escape(dropped["rationale"]) in page

    assert numbers["examples"]["kept"][0]["question"].startswith(HOSTILE)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; " in page
    assert "<script" not in page.lower()
    for name in numbers["plots"].values():
        assert f'<img src="{name}"' in page
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched


def test_reward_scores_and_missing_parts(run: Path, report: tuple[Path, dict], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    samples = read_jsonl(copy / "samples.jsonl")
    rewards = [round(0.1 * (i % 10), 2) for i in range(len(samples))]
    with Store.in_run(copy) as store:
        store.add_verdicts(
            Verdict(sample_key=row["key"], filter="reward", keep=score >= 0.5, reason="below_threshold", score=score)
            for row, score in zip(samples, rewards, strict=True)
        )
    numbers = _numbers_after_report(copy)
    assert sorted(numbers["scores"]["values"]) == pytest.approx(sorted(rewards))
    _assert_png(copy / "report" / numbers["plots"]["scores"])

    for part in ("funnel.json", "filtered.jsonl", "students"):
        path = copy / part
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    numbers = _numbers_after_report(copy)
    assert set(numbers["plots"]) == {"agreement", "scores", "yield"}
    assert sorted(p.name for p in (copy / "report").glob("*.png")) == ["agreement.png", "scores.png", "yield.png"]
    page = (copy / "report" / "report.html").read_text(encoding="utf-8")
    assert "Filter funnel" not in page and "Students" not in page


def _numbers_after_report(run: Path) -> dict:
    write_report(run)
    return json.loads((run / "report" / "report.json").read_text())


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (CI installs Debian's chromium)")
def test_page_renders_in_headless_chromium(report: tuple[Path, dict], tmp_path: Path) -> None:
    from matplotlib.image import imread

    html, _ = report
    shot = tmp_path / "shot.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
    ]
    done = subprocess.run([str(CHROMIUM), *flags, html.as_uri()], capture_output=True, text=True, timeout=60)
    assert shot.exists(), done.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page: text, tables and plots drawn


def test_rounds_show_triggers_new_problems_records_and_intervals(run: Path, tmp_path: Path) -> None:
    """Per hard-problem round: accuracy with its 95 % interval (computed when eval.json lacks it), hard
    problems wrong / disagree (a round probed before triggers existed: every one wrong), new problems
    kept, and the records its student trained on."""
    from cotfactory.stats import wilson_interval

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    rounds = copy / "rounds"
    (rounds / "1" / "student").mkdir(parents=True)
    (rounds / "2" / "student").mkdir(parents=True)
    (rounds / "first_student.json").write_text(json.dumps({"student": str(copy / "students" / "s1")}))
    hard = {"round": 1, "probed": 8, "hard_problems": 5, "wrong": 3, "disagree": 2, "no_teacher_answer": 1}
    (rounds / "1" / "hard_problems.json").write_text(json.dumps(hard))
    (rounds / "1" / "new_problems.json").write_text(json.dumps({"kept": 2}))
    write_jsonl(rounds / "1" / "union.jsonl", [{"key": f"k{i}"} for i in range(7)])
    (rounds / "1" / "student" / "eval.json").write_text(json.dumps({"total": 16, "correct": 12, "accuracy": 0.75}))
    write_jsonl(rounds / "2" / "hard_problems.jsonl", [{"id": f"p{i}", "question": "q"} for i in range(3)])
    write_jsonl(rounds / "2" / "union.jsonl", [{"key": f"k{i}"} for i in range(9)])
    second = {"total": 16, "correct": 13, "accuracy": 0.8125, "interval": [0.5, 0.9]}
    (rounds / "2" / "student" / "eval.json").write_text(json.dumps(second))

    numbers = _numbers_after_report(copy)
    shown = [
        (r["round"], r["hard_problems"], r["wrong"], r["disagree"], r["new_problems"], r["records"])
        for r in numbers["rounds"]
    ]
    assert shown == [
        (0, 0, 0, 0, None, len(read_jsonl(copy / "filtered.jsonl"))),
        (1, 5, 3, 2, 2, 7),
        (2, 3, 3, 0, None, 9),
    ]
    intervals = [r["evaluation"]["generated"]["interval"] for r in numbers["rounds"]]
    assert intervals[1] == pytest.approx(list(wilson_interval(12, 16))) and intervals[2] == [0.5, 0.9]
    _assert_png(copy / "report" / numbers["plots"]["rounds"])
    page = (copy / "report" / "report.html").read_text(encoding="utf-8")
    table = page[page.index("<h2>Hard-problem rounds</h2>") :]
    low, high = wilson_interval(12, 16)
    assert "<th>hard problems sampled (wrong / disagree)</th><th>new problems kept</th>" in table
    assert (
        f'<tr><td class="num">1</td><td>5 (3 / 2)</td><td class="num">2</td><td class="num">7</td>'
        f"<td>12/16 = 0.750 [{low:.3f}, {high:.3f}]</td></tr>" in table
    )
    assert '<tr><td class="num">2</td><td>3 (3 / 0)</td><td>–</td><td class="num">9</td>' in table
