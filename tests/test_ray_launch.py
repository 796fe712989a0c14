"""`generate --ray ADDRESS --shards N`: shards as Ray tasks, merged into OUT, against the fake teacher server.

Ray runs as a two-node cluster on this machine (one CPU each, started once for the module), so that the
shards spread over two nodes and the shards of the node the driver is not on come back as task results.
The default run checks that four Ray shards equal the unsharded run and that a rerun sends nothing; the
`reliability` tests SIGKILL shard workers mid-run (Ray retries them from their stores) and the driver (a
rerun sends only the keys no store holds).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import FakeServer
from helpers import fake_teacher_args, invoke, invoke_ok, make_sample, read_jsonl, write_sums
from loopback import free_port

from cotfactory.ray_launch import committed_rows, pack, unpack
from cotfactory.store import Store

ROOT = Path(__file__).resolve().parent.parent
GRID = ["--temperatures", "0.2,0.9", "--seeds", "1,2", "--use-n", "never"]  # 4 requests a problem


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two Ray nodes of one CPU on this machine, the test process their driver."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, logging_level="warning", log_to_driver=False)
    nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def _args(server: FakeServer, data: Path, out: Path, *extra: str) -> list[str]:
    return fake_teacher_args(server.base_url, data, out, "", *GRID, *extra)


def _texts(run: Path) -> dict[str, str]:
    with Store.in_run(run) as store:
        return {s.key: s.text for s in store.samples()}


def _rows_and_keys(run: Path) -> tuple[int, int]:
    with closing(sqlite3.connect(run / "store.sqlite")) as db:
        return db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM samples").fetchone()


def _exported(run: Path) -> list[tuple[str, str]]:
    return [(row["key"], row["text"]) for row in read_jsonl(run / "samples.jsonl")]


# --------------------------------------------------------------------------------------------- default run


def test_four_ray_shards_equal_the_unsharded_run(cluster: Any, tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 14)
    planned = 14 * 4
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    on_ray = ["--concurrency", "4", "--ray", "local", "--shards", "4"]  # 'local': this process's cluster
    with FakeServer("--latency", "0.01") as server:
        invoke_ok(*_args(server, data, whole, "--concurrency", "4"))
        server.reset()
        started = time.monotonic()
        output = invoke_ok(*_args(server, data, sharded, *on_ray))
        elapsed = time.monotonic() - started
        assert server.stats()["requests"] == planned  # each request sent once, over the four shards
        again = invoke_ok(*_args(server, data, sharded, *on_ray))
        assert server.stats()["requests"] == planned  # the rerun resumes every shard: nothing left to send
    print(f"\nray: {planned} requests as 4 shards on 2 nodes in {elapsed:.1f} s (the cluster already up)")
    assert "4 shards on 2 node(s)" in output
    assert _texts(sharded) == _texts(whole)  # key for key, text for text
    assert _exported(sharded) == _exported(whole)  # in plan order
    assert _rows_and_keys(sharded) == (planned, planned)
    for index in range(4):
        assert f'"shard": "{index}/4"' in (sharded / "shards" / str(index) / "config.json").read_text()
    assert '"shard": null' in (sharded / "config.json").read_text()
    assert re.search(r"new this run\W+0\W", again), again


def test_a_shard_failing_for_the_users_reason_is_one_line_naming_it(cluster: Any, tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 4)
    shards = tmp_path / "scratch"
    shards.mkdir()
    (shards / "1").write_text("a file where shard 1's run directory goes")
    with FakeServer() as server:
        args = _args(server, data, tmp_path / "out", "--ray", "local", "--shards", "2", "--shards-dir", str(shards))
        code, output = invoke(*args)
    assert code == 2, output
    last = output.strip().splitlines()[-1]
    assert last == f"error: shard 1/2: {shards / '1'}: File exists", output
    assert not (tmp_path / "out" / "store.sqlite").exists()  # nothing merged


# --------------------------------------------------------------------------------------------- no cluster needed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray", "local", "--shards", "2", "--shard", "0/2"], "--shard: cannot be combined with --ray"),
        (["--shards", "2"], "--shards: needs --ray ADDRESS"),
        (["--shards-dir", "elsewhere"], "--shards-dir: needs --ray ADDRESS"),
        (["--ray", "local"], "--ray: give --shards N too"),
        (["--ray", "local", "--shards", "2", "--limit", "2"], "--limit: cannot be combined with --ray"),
        (["--ray", "local", "--shards", "2", "--max-total-tokens", "99"], "--max-total-tokens: cannot be combined"),
    ],
)
def test_settings_that_do_not_go_with_ray_are_one_line_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    data = write_sums(tmp_path / "q.jsonl", 3)
    args = fake_teacher_args("http://127.0.0.1:9/v1", data, tmp_path / "out", "", *extra)
    code, output = invoke(*args)
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "out").exists()


def test_more_shards_than_problems_is_refused_before_ray_starts(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    data = write_sums(tmp_path / "q.jsonl", 3)
    code, output = invoke(
        *fake_teacher_args("http://127.0.0.1:9/v1", data, tmp_path / "out", "", "--ray", "local", "--shards", "5")
    )
    assert code == 2 and "--shards 5: " in output and "has only 3 problems" in output, output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_nothing_answers_at_is_one_line_exit_2(tmp_path: Path, scheme: str) -> None:
    pytest.importorskip("ray")
    data = write_sums(tmp_path / "q.jsonl", 3)
    address = f"{scheme}127.0.0.1:{free_port()}"
    args = fake_teacher_args("http://127.0.0.1:9/v1", data, tmp_path / "out", "", "--ray", address, "--shards", "2")
    code, output = invoke(*args)
    assert code == 2 and output.startswith(f"error: --ray {address}: nothing answers there"), output
    assert not (tmp_path / "out").exists()


def test_without_ray_installed_the_error_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    data = write_sums(tmp_path / "q.jsonl", 3)
    code, output = invoke(
        *fake_teacher_args("http://127.0.0.1:9/v1", data, tmp_path / "out", "", "--ray", "local", "--shards", "2")
    )
    assert code == 2 and output.strip() == "error: --ray needs Ray: pip install 'cotfactory[ray]'", output
    assert not (tmp_path / "out").exists()


def test_a_shard_sent_from_another_node_arrives_whole(tmp_path: Path) -> None:
    """pack reads the store with what its WAL still holds; unpack drops the stale WAL of this node's older
    copy (SQLite would replay it into the new file: this test fails without that) and its exports."""
    shard, here = tmp_path / "shard", tmp_path / "here"
    shard.mkdir()
    (shard / "config.json").write_text("{}")
    older = [make_sample("1", f"old {i}", seed=i) for i in range(3)]
    newer = [make_sample("2", f"new {i}", seed=i) for i in range(5)]
    here.mkdir()
    with Store(here / "store.sqlite") as stale:  # this node's older copy of the shard, as a killed run left it
        stale.add_samples(older)
        left = {name: (here / name).read_bytes() for name in ("store.sqlite", "store.sqlite-wal")}
    for name, data in left.items():
        (here / name).write_bytes(data)
    (here / "samples.jsonl").write_text('{"text": "old 0"}\n')  # its export, which no longer matches
    with Store(shard / "store.sqlite") as writer:  # still open: the rows are in its WAL
        writer.add_samples(newer)
        files = pack(shard)
    assert sorted(files) == ["config.json", "store.sqlite"]
    unpack(files, here)
    assert not (here / "store.sqlite-wal").exists() and not (here / "samples.jsonl").exists()
    assert _texts(here) == {s.key: s.text for s in newer}
    assert committed_rows(here / "store.sqlite") == 5 and committed_rows(tmp_path / "nothing.sqlite") is None


# --------------------------------------------------------------------------------------------- reliability

KILL_GRID_PROBLEMS = 40  # 160 requests, 40 a shard
CONCURRENCY = 2  # requests in flight per shard


def _driver(server: FakeServer, cluster: Any, data: Path, out: Path) -> list[str]:
    args = _args(server, data, out, "--concurrency", str(CONCURRENCY), "--ray", cluster.address, "--shards", "4")
    return [sys.executable, "-m", "cotfactory", *args]


def _holders(path: Path) -> set[int]:
    """The processes (but this one) that have ``path`` open."""
    target, found = str(path), set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == target:
                found.add(int(fd.parts[2]))
        except OSError:
            continue
    return found - {os.getpid()}


def _stores(out: Path) -> list[Path]:
    return [out / "shards" / str(index) / "store.sqlite" for index in range(4)]


def _reference(server: FakeServer, data: Path, out: Path) -> dict[str, str]:
    invoke_ok(*_args(server, data, out, "--concurrency", "8"))
    server.reset()
    return _texts(out)


@pytest.mark.reliability
def test_killed_shard_workers_resend_only_what_was_in_flight(cluster: Any, tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", KILL_GRID_PROBLEMS)
    planned, per_shard = KILL_GRID_PROBLEMS * 4, KILL_GRID_PROBLEMS
    out = tmp_path / "run"
    with FakeServer("--latency", "0.2") as server:
        reference = _reference(server, data, tmp_path / "whole")
        log = (tmp_path / "driver.log").open("w")  # a file, not a pipe nobody reads while the driver runs
        driver = subprocess.Popen(_driver(server, cluster, data, out), cwd=ROOT, stdout=log, stderr=log)
        killed: dict[int, int] = {}  # shard → its rows when its worker was killed
        while driver.poll() is None and len(killed) < 2:
            for index, store in enumerate(_stores(out)):
                rows = committed_rows(store) or 0
                if index in killed or not 8 <= rows < per_shard - 8:
                    continue
                for pid in _holders(store):
                    os.kill(pid, signal.SIGKILL)
                    killed[index] = rows
                break
            time.sleep(0.02)
        driver.wait(timeout=600)
        log.close()
        stats = server.stats(detail=True)
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    assert len(killed) == 2, f"the run ended before two kills: {killed}"
    print(f"\nray: killed the workers of shards {killed} (rows then); server {stats}")
    assert _rows_and_keys(out) == (planned, planned)  # every key exactly once
    assert _texts(out) == reference
    assert stats["requests"] - planned <= len(killed) * CONCURRENCY  # sent again: only what was in flight
    assert stats["ok_twice"] <= len(killed) * CONCURRENCY


@pytest.mark.reliability
def test_a_killed_driver_reruns_only_the_missing_keys(cluster: Any, tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", KILL_GRID_PROBLEMS)
    planned = KILL_GRID_PROBLEMS * 4
    out = tmp_path / "run"
    with FakeServer("--latency", "0.2") as server:
        reference = _reference(server, data, tmp_path / "whole")
        command = _driver(server, cluster, data, out)
        driver = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL, start_new_session=True)
        while sum(committed_rows(s) or 0 for s in _stores(out)) < 40:
            assert driver.poll() is None, "the driver ended before its kill"
            time.sleep(0.02)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 60
        while any(_holders(s) for s in _stores(out)):  # Ray ends the dead driver's tasks
            assert time.monotonic() < deadline, "the shard workers outlived their driver"
            time.sleep(0.2)
        stored = sum(committed_rows(s) or 0 for s in _stores(out))
        sent_before = server.stats()["requests"]
        server.reset()
        rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        sent_after = server.stats()["requests"]
    print(f"\nray: driver killed with {stored} of {planned} stored ({sent_before} sent); the rerun sent {sent_after}")
    assert stored < planned
    assert sent_after == planned - stored  # only the keys no shard store held
    assert _rows_and_keys(out) == (planned, planned)
    assert _texts(out) == reference
