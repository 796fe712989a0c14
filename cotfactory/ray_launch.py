"""``generate --ray ADDRESS --shards N``: the shards of ``generate --shard I/N`` as Ray tasks, merged into OUT.

Ray places the work; the run's stores keep its state. Each shard is one Ray task that runs the ordinary
``run_generate`` with ``shard=I/N`` into its own run directory, SHARDS_DIR/I (default OUT/shards/I) on
the disk of the node that runs it, committing each finished call as generate always does. When a
task's worker or node dies, Ray runs it again (``max_retries``) and the new attempt resumes from that
store: only what was in flight is sent again. When the driver dies, its tasks die with it; running the
same command again resumes every shard the same way. The driver then merges the shards into OUT with
``cotfactory merge``'s code and prints generate's summary.

Why tasks over the store rather than Ray Data: Ray Data's HTTP processor keeps its progress inside the
pipeline, and it was measured re-sending whole batches after an actor kill and redoing everything after
a driver kill. A task per shard needs nothing of Ray's to resume: only the store on disk.

Placement: shard I goes to node I mod M of the M live nodes with CPUs (sorted by address), pinned
softly (``NodeAffinitySchedulingStrategy(soft=True)``): the shards spread over the nodes, a retry or a
rerun finds its store where it left it, and the shard of a node that is gone runs elsewhere (from what
that node holds of it). A task asks for one CPU, and one GPU when the teacher is a local model and the
cluster has GPUs. A shard that ran on another node than the driver's returns its store (and config and
teacher tokenizer) as the task's result; the driver writes them under SHARDS_DIR/I on its own disk and
merges from there. Progress: each task reports its store's row count to a small actor every second; the
driver shows the sum.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cotfactory.config.generate import GenerateConfig
from cotfactory.errors import ConfigError, CotfactoryError, DataError, first_line
from cotfactory.generate import GenerateResult, prepare, run_generate
from cotfactory.run_dir import RunDir
from cotfactory.store import Store

DISTRIBUTION = ("ray", "shards", "shards_dir")  # the settings that send generate here
MAX_RETRIES = 3  # attempts after a shard's worker or node died (its store keeps what each attempt finished)
PROGRESS_EVERY = 1.0  # seconds between a shard's reports of its store's rows
CONNECT_TIMEOUT = 10.0  # seconds to reach --ray HOST:PORT


def distributed(config: GenerateConfig) -> bool:
    """Whether ``config`` asks for Ray (any distribution setting; :func:`check_distribution` checks the rest)."""
    return any(getattr(config, name) is not None for name in DISTRIBUTION)


def check_distribution(config: GenerateConfig) -> None:
    """The settings that do not go with ``--ray``, each named in one line."""
    if config.ray is None:
        given = next(name for name in DISTRIBUTION if getattr(config, name) is not None)
        raise ConfigError(
            f"--{given.replace('_', '-')}: needs --ray ADDRESS (without Ray, run `generate --shard I/N` on each "
            "machine and `cotfactory merge` the run directories)"
        )
    if not config.ray.strip():
        raise ConfigError("--ray: give an address: local, auto or HOST:PORT")
    if config.shards is None:
        raise ConfigError("--ray: give --shards N too (one Ray task per shard)")
    if config.shard is not None:
        raise ConfigError("--shard: cannot be combined with --ray, which makes the shards itself (--shards N)")
    if config.limit is not None:
        raise ConfigError(
            "--limit: cannot be combined with --ray yet: it counts per shard, while the merged run's plan would "
            "hold only the first N problems (cut the input file instead)"
        )
    if config.max_total_tokens is not None:
        raise ConfigError("--max-total-tokens: cannot be combined with --ray yet: each shard would spend all of it")


def run_ray_generate(config: GenerateConfig, console: Console) -> GenerateResult:
    """Generate ``config`` as ``config.shards`` Ray tasks and merge their run directories into ``config.out``."""
    started = time.monotonic()
    check_distribution(config)
    ray = _import_ray()
    prepared = prepare(config)  # bad input fails here, before Ray starts or anything is written
    count = config.shards
    assert count is not None  # check_distribution
    if count > len(prepared.problems):
        raise ConfigError(f"--shards {count}: {config.input} has only {len(prepared.problems)} problems")
    shards_dir = Path(config.shards_dir or Path(config.out) / "shards").resolve()
    _check_earlier_shards(shards_dir, count)
    with _connected(ray, config.ray):
        results = _run_shards(ray, config, shards_dir, len(prepared.plan), console)
    return _merge(config, shards_dir, results, started)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'cotfactory[ray]'") from None
    return ray


def _check_earlier_shards(shards_dir: Path, count: int) -> None:
    """Shard directories of an earlier run with another --shards hold other problems: refuse to mix them."""
    from cotfactory.merge import shard_config

    for config_file in sorted(shards_dir.glob("*/config.json")):
        try:
            earlier = shard_config(config_file.parent).shard_pair
        except CotfactoryError:  # not a shard's (half-written, or another version's): generate will say
            continue
        if earlier is not None and earlier[1] != count:
            raise ConfigError(
                f"{config_file.parent} holds shard {earlier[0]}/{earlier[1]}: give --shards {earlier[1]} to resume "
                "that run, or another --shards-dir"
            )


@contextlib.contextmanager
def _connected(ray: Any, address: str | None) -> Iterator[None]:
    """Ray started here ('local') or joined at ``address``, shut down or left afterwards. A process that
    has already started Ray (a notebook, the tests) keeps its cluster."""
    _check_reachable(address)
    if ray.is_initialized():
        yield
        return
    started_here = {"include_dashboard": False} if address == "local" else {}  # halves the start-up
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **started_here)
    except Exception as exc:  # an unreachable or malformed address: the user's to fix
        raise ConfigError(f"--ray {address}: {first_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT nothing answers at fails in seconds (ray.init would wait for it for minutes)."""
    host, _, port = str(address).removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # local, auto: Ray says what is wrong
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ConfigError(
            f"--ray {address}: nothing answers there ({exc.strerror or exc}); `ray status` on the head node "
            "shows its address"
        ) from None


# --------------------------------------------------------------------------------------------- the driver


def _run_shards(
    ray: Any, config: GenerateConfig, shards_dir: Path, planned: int, console: Console
) -> list[GenerateResult]:
    """Every shard's task, watched to the end; their results in shard order."""
    count = config.shards
    assert count is not None
    progress = ray.remote(num_cpus=0)(ShardProgress).remote()
    pending, nodes = _submit(ray, config, shards_dir, progress)
    console.print(f"ray: {count} shards on {nodes} node(s), each in {shards_dir}/I on its node", soft_wrap=True)
    results: dict[int, GenerateResult] = {}
    with _progress(console) as bar:
        shown = bar.add_task("generate on ray", total=planned, done=0, shards=count)
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_EVERY)
            for ref in finished:
                index = pending.pop(ref)
                results[index] = _collect(ray, ref, index, count, shards_dir, pending)
            with contextlib.suppress(ray.exceptions.RayError):  # no progress shown is no reason to stop
                stored = ray.get(progress.total.remote())
                bar.update(shown, completed=stored, total=max(planned, stored), done=len(results))
    return [results[index] for index in range(count)]


def _submit(ray: Any, config: GenerateConfig, shards_dir: Path, progress: Any) -> tuple[dict[Any, int], int]:
    """One task per shard, softly pinned round-robin over the nodes that can run one: (task → shard, nodes)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    count = config.shards
    assert count is not None
    resources = {"num_cpus": 1, "num_gpus": _gpus_per_shard(ray, config)}
    nodes = _nodes_for(ray, resources, config.ray)
    here = None if str(config.ray).startswith("ray://") else ray.get_runtime_context().get_node_id()
    task = ray.remote(run_shard)
    pending = {}
    for index in range(count):
        shard = config.model_copy(
            update={name: None for name in DISTRIBUTION}
            | {"shard": f"{index}/{count}", "out": str(shards_dir / str(index))}
        )
        where = NodeAffinitySchedulingStrategy(nodes[index % len(nodes)], soft=True)
        ref = task.options(
            **resources, max_retries=MAX_RETRIES, retry_exceptions=False, scheduling_strategy=where
        ).remote(shard, index, here, os.getcwd(), progress)
        pending[ref] = index
    return pending, len(nodes)


def _nodes_for(ray: Any, resources: dict[str, int], address: str | None) -> list[str]:
    """The ids of the live nodes that can run a shard, in a fixed order (by address), so that a rerun
    sends every shard to the node that holds its store."""
    needs = {"CPU": resources["num_cpus"], "GPU": resources["num_gpus"]}
    nodes = [n for n in ray.nodes() if n["Alive"] and all(n["Resources"].get(k, 0) >= v for k, v in needs.items() if v)]
    if not nodes:
        raise ConfigError(f"--ray {address}: the cluster has no live node with {needs} to run a shard")
    return [n["NodeID"] for n in sorted(nodes, key=lambda n: (n["NodeManagerAddress"], n["NodeID"]))]


def _gpus_per_shard(ray: Any, config: GenerateConfig) -> int:
    """One GPU per shard for a teacher that runs a model in the task (its options have a device), unless
    told cpu or mps, or the cluster has none."""
    device = getattr(config.teacher, "device", None)
    if device in (None, "cpu", "mps"):
        return 0
    return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0


def _collect(ray: Any, ref: Any, index: int, count: int, shards_dir: Path, pending: dict[Any, int]) -> GenerateResult:
    """A finished shard's result, its files written here when it ran elsewhere; a failed shard stops the
    others (their stores keep what they finished) and is reported in one line when it is the user's to fix."""
    try:
        outcome: ShardOutcome = ray.get(ref)
    except ray.exceptions.RayError as exc:
        for other in pending:
            ray.cancel(other, force=True)
        raise _shard_error(ray, exc, f"{index}/{count}", shards_dir / str(index)) from None
    if outcome.files is not None:
        unpack(outcome.files, shards_dir / str(index))
    return outcome.result


def _shard_error(ray: Any, exc: Exception, shard: str, run: Path) -> Exception:
    """A failed shard as the user meets it: one line for what is theirs to fix, a traceback for a bug."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause, where = exc.cause, f"shard {shard}"  # (ray.get's copy keeps the cause, not the node)
        if isinstance(cause, CotfactoryError):
            return type(cause)(f"{where}: {cause}")
        if isinstance(cause, OSError) and cause.filename is not None:
            return ConfigError(f"{where}: {cause.filename}: {cause.strerror}")
        if isinstance(cause, sqlite3.Error):  # a full disk, a locked or foreign store
            return DataError(f"{where}: {RunDir(run).store}: {cause}")
        return exc
    return CotfactoryError(  # its worker or node died once more than Ray retries
        f"shard {shard}: {first_line(exc)} (after {MAX_RETRIES} retries); its store keeps what it finished: "
        "run the same command again to resume"
    )


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("shards done {task.fields[done]}/{task.fields[shards]}"),
        TimeRemainingColumn(),
        console=console,
    )


def _merge(config: GenerateConfig, shards_dir: Path, results: list[GenerateResult], started: float) -> GenerateResult:
    """The shards merged into OUT, summed up as one generate run."""
    from cotfactory.merge import run_merge

    out = RunDir(config.out)
    if config.retry_failed and out.has_store():  # the shards sent them again: OUT's failed copies must go
        with Store(out.store) as store:
            store.forget_failed()
    run_merge(config.out, [str(shards_dir / str(index)) for index in range(len(results))])
    with Store(out.store) as store:
        totals = store.get_meta("export_totals")
        failed = list(store.samples(totals["failed_keys"]))
        distribution_bytes, distribution_tokens = store.distribution_bytes()
    costs = [r.cost_usd for r in results if r.cost_usd is not None]
    return GenerateResult(
        out.path,
        planned=sum(r.planned for r in results),
        stored=totals["stored"],
        new=sum(r.new for r in results),
        requests_sent=sum(r.requests_sent for r in results),
        failed=failed,
        failed_count=totals["failed"],
        prompt_tokens=totals["prompt_tokens"],
        completion_tokens=totals["completion_tokens"],
        cost_usd=sum(costs) if costs else None,
        elapsed_s=time.monotonic() - started,
        send_elapsed_s=max((r.send_elapsed_s for r in results), default=0.0),
        budget_stopped=any(r.budget_stopped for r in results),
        distribution_bytes=distribution_bytes,
        distribution_tokens=distribution_tokens,
    )


# --------------------------------------------------------------------------------------------- the tasks


@dataclass
class ShardOutcome:
    result: GenerateResult
    files: dict[str, bytes] | None  # the shard's files, when it ran on another node than the driver's


class ShardProgress:
    """A Ray actor: each shard's committed rows, as the shards last reported them."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}

    def report(self, index: int, rows: int) -> None:
        self.rows[index] = rows

    def total(self) -> int:
        return sum(self.rows.values())


def run_shard(config: GenerateConfig, index: int, driver_node: str | None, cwd: str, progress: Any) -> ShardOutcome:
    """One shard, inside a Ray task: the ordinary generate into its own run directory (resuming from its
    store), reporting its rows as it goes."""
    import ray

    if os.path.isdir(cwd):  # relative paths in the config (input, templates) mean what they meant to the driver
        os.chdir(cwd)
    run = Path(config.out)
    with _reporting(progress, index, RunDir(run).store):
        result = run_generate(config, Console(quiet=True))
    here = ray.get_runtime_context().get_node_id()
    return ShardOutcome(result, None if here == driver_node else pack(run))


@contextlib.contextmanager
def _reporting(progress: Any, index: int, store: Path) -> Iterator[None]:
    """Report the store's committed rows to the progress actor every PROGRESS_EVERY seconds, and once at the end."""
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(PROGRESS_EVERY):
            if (rows := committed_rows(store)) is not None:
                progress.report.remote(index, rows)

    thread = threading.Thread(target=report, name=f"shard-{index}-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if (rows := committed_rows(store)) is not None:
            progress.report.remote(index, rows)


def committed_rows(store: Path) -> int | None:
    """The samples a store holds, read beside its writer; None while there is none (or it is being made)."""
    if not store.is_file():
        return None
    try:
        with closing(sqlite3.connect(store, timeout=1.0)) as db:
            return int(db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    except sqlite3.Error:
        return None


def pack(run: Path) -> dict[str, bytes]:
    """What the merge needs of a shard run directory, as bytes: a consistent copy of the store (whatever
    its WAL still held included), the config, and the teacher's tokenizer when there is one."""
    shard = RunDir(run)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "store.sqlite"
        with closing(sqlite3.connect(shard.store)) as source, closing(sqlite3.connect(copy)) as target:
            source.backup(target)
        files = {"store.sqlite": copy.read_bytes()}
    files["config.json"] = shard.config.read_bytes()
    if shard.teacher_tokenizer.is_dir():
        for path in sorted(shard.teacher_tokenizer.rglob("*")):
            if path.is_file():
                files[path.relative_to(run).as_posix()] = path.read_bytes()
    return files


def unpack(files: dict[str, bytes], run: Path) -> None:
    """Write a shard's packed files into ``run``, replacing what this node held of it: a WAL left beside an
    older store would be replayed into the new one, and older exports would pass for this store's (the
    next generate there rebuilds them)."""
    shard = RunDir(run)
    written = []
    for name, data in files.items():
        path = run / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.shipped")
        partial.write_bytes(data)
        written.append((partial, path))
    for leftover in (run / "store.sqlite-wal", run / "store.sqlite-shm", shard.samples, shard.distributions):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(shard.samples_dataset, ignore_errors=True)
    for partial, path in written:
        os.replace(partial, path)
