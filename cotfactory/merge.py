"""``cotfactory merge OUT SHARD_DIR...``: the run directories of ``generate --shard I/N`` as one run.

Shards must come from one plan — the same generate settings but for ``shard`` and ``out`` (templates,
teacher, grid, data) — else the merge is refused naming the first difference. Their stores are
unioned into OUT's: every request key once; a key two shards hold with different texts is refused,
naming both. Merging again adds nothing. The exports are then rebuilt in plan order, exactly as
``generate`` writes them, so filter, train and report read OUT like any run directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotfactory import __version__
from cotfactory.config.fields import output_settings
from cotfactory.config.generate import GenerateConfig
from cotfactory.errors import ConfigError, DataError
from cotfactory.generate import export_run
from cotfactory.run_dir import RunDir, write_json_atomic
from cotfactory.store import Store

PER_SHARD = ("shard", "out")  # the settings shards of one plan differ in
PER_NODE = ("base_url", "api_key_env")  # … and, in the teacher's, where each shard reached it


@dataclass
class MergeResult:
    out: Path
    shards: int
    added: int  # samples new to OUT
    samples: int  # samples OUT holds


def shard_config(shard: Path) -> GenerateConfig:
    run = RunDir(shard)
    if not run.has_store() or not run.config.exists():
        raise ConfigError(f"{shard}: not a run directory of `cotfactory generate` (no store.sqlite or config.json)")
    raw = {k: v for k, v in json.loads(run.config.read_text()).items() if k != "cotfactory_version"}
    try:
        return GenerateConfig.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"{run.config}: {exc}") from None


def check_one_plan(shards: list[Path], configs: list[GenerateConfig]) -> None:
    """Refuse shards of different plans, naming the first setting that differs."""
    first = _identity(configs[0])
    for shard, config in zip(shards[1:], configs[1:], strict=True):
        other = _identity(config)
        for name in first:
            if first[name] != other.get(name):
                raise ConfigError(
                    f"{shard}: '{name}' differs from {shards[0]} ({other.get(name)!r} vs {first[name]!r}): "
                    "shards of one plan differ only in shard and out"
                )


def _identity(config: GenerateConfig) -> dict[str, Any]:
    """The plan's settings: all that can change a sample but the shard, and where the teacher was reached
    (shards on other nodes use other replicas of the same model)."""
    settings = {name: value for name, value in output_settings(config).items() if name not in PER_SHARD}
    settings["teacher"] = {k: v for k, v in settings["teacher"].items() if k not in PER_NODE}
    return settings


def run_merge(out: str, shard_dirs: list[str]) -> MergeResult:
    """Union the shards' stores into OUT and rebuild its exports."""
    shards = [Path(s) for s in shard_dirs]
    if not shards:
        raise ConfigError("merge: give the shard run directories")
    if any(s.resolve() == Path(out).resolve() for s in shards):
        raise ConfigError(f"merge: {out} is one of the shards; merge into a new directory")
    configs = [shard_config(s) for s in shards]
    check_one_plan(shards, configs)
    if configs[0].limit is not None and configs[0].shard is not None:
        raise ConfigError(
            f"{shards[0]}: generated with --limit {configs[0].limit} and --shard, and --limit counts within each "
            "shard, so the shards' union is no selection one run directory can export; generate the shards "
            "without --limit (cut the input file instead)"
        )
    merged = configs[0].model_copy(update={"shard": None, "out": out})
    run = RunDir(out)
    _check_mergeable(shards, run)  # before OUT is touched: a refused merge writes nothing
    run.path.mkdir(parents=True, exist_ok=True)
    added = 0
    with Store(run.store) as store:
        for shard in shards:
            added += store.add_from(RunDir(shard).store)
        store.set_meta("config", merged.model_dump())
        samples = store.count()
    write_json_atomic(run.config, {**merged.model_dump(), "cotfactory_version": __version__})
    _copy_tokenizer(shards, run)
    export_run(merged)
    return MergeResult(run.path, len(shards), added, samples)


def _check_mergeable(shards: list[Path], run: RunDir) -> None:
    """Every shard against every earlier one (and against OUT's store, when merging again): no token-string
    vocabulary, no key held with two texts."""
    earlier: list[Path] = [run.store] if run.has_store() else []
    for shard in shards:
        with Store(RunDir(shard).store) as source:
            if source.token_string_count():
                raise ConfigError(f"{shard}: distributions recorded as token strings cannot be merged yet")
            for other in earlier:
                if (conflict := source.conflicting_key(other)) is not None:
                    holder = other.parent if other != run.store else "the merged store"
                    raise DataError(
                        f"{shard}: sample {conflict} has another text in {holder}: these shards are not one "
                        "plan's results (a different teacher or server behind the same settings?)"
                    )
        earlier.append(RunDir(shard).store)


def _copy_tokenizer(shards: list[Path], run: RunDir) -> None:
    for shard in shards:
        source = RunDir(shard).teacher_tokenizer
        if source.is_dir() and not run.teacher_tokenizer.exists():
            shutil.copytree(source, run.teacher_tokenizer)
