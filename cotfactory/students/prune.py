"""Structured pruning of a LLaMA-family model (Minitron): drop whole decoder layers (depth), or hidden
channels, MLP neurons and query heads (width), ranked by ``importance`` on calibration text.

The cut is a ``PrunePlan`` — the teacher's indices that stay — applied by slicing the teacher's tensors
into a freshly built model of the smaller shape, so the result is a plain ``*ForCausalLM`` that
``save_pretrained`` writes and ``AutoModelForCausalLM.from_pretrained`` reads back. Sliced together:

- a hidden channel: its column of ``embed_tokens`` (and of ``lm_head``, tied or not), its entry in every
  RMSNorm, its column of q/k/v and gate/up, its row of o_proj and down_proj;
- a query head: its ``head_dim`` rows of q_proj and columns of o_proj;
- an MLP neuron: its row of gate_proj and up_proj, its column of down_proj.

Grouped-query attention: query heads are pruned **within** every KV group, the same number in each, and
every K/V head stays. Transformers maps query head j to KV group j // (heads / kv_heads), so keeping k heads
of each group in order keeps every query head reading its own K/V. Whole groups are not cut: SmolLM2 has
three, so one group is a third of the attention, too coarse a step, and K/V are only 2·kv_heads/heads of
the attention weights.

``--width R`` keeps the fraction R of the parameters: one scale s for the hidden size, the MLP width and
the query heads per group (rounded, at least one), the largest s that fits, then the MLP width is set so
the count lands on R · params (within one neuron of every layer).
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cotfactory.config.prune import PruneConfig
from cotfactory.errors import ConfigError, CotfactoryError, DataError, first_line
from cotfactory.run_dir import RunDir, remove_stale_temporaries, write_json_atomic
from cotfactory.students.importance import Importance, calibration_batches, collect_importance

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
RECORD = "prune.json"

# What each axis of a parameter is: "hidden" channels, "query" rows (heads × head_dim), "ffn" neurons, or
# None (kept whole: the vocabulary, K/V rows, per-head norms).
LAYER_AXES: dict[str, tuple[str | None, ...]] = {
    "input_layernorm.weight": ("hidden",),
    "post_attention_layernorm.weight": ("hidden",),
    "self_attn.q_proj.weight": ("query", "hidden"),
    "self_attn.q_proj.bias": ("query",),
    "self_attn.k_proj.weight": (None, "hidden"),
    "self_attn.k_proj.bias": (None,),
    "self_attn.v_proj.weight": (None, "hidden"),
    "self_attn.v_proj.bias": (None,),
    "self_attn.o_proj.weight": ("hidden", "query"),
    "self_attn.o_proj.bias": ("hidden",),
    "self_attn.q_norm.weight": (None,),
    "self_attn.k_norm.weight": (None,),
    "mlp.gate_proj.weight": ("ffn", "hidden"),
    "mlp.gate_proj.bias": ("ffn",),
    "mlp.up_proj.weight": ("ffn", "hidden"),
    "mlp.up_proj.bias": ("ffn",),
    "mlp.down_proj.weight": ("hidden", "ffn"),
    "mlp.down_proj.bias": ("hidden",),
}
MODEL_AXES: dict[str, tuple[str | None, ...]] = {
    "model.embed_tokens.weight": (None, "hidden"),
    "model.norm.weight": ("hidden",),
    "lm_head.weight": (None, "hidden"),
}
_LAYER_NAME = re.compile(r"^(?P<prefix>.*\.layers\.)(?P<index>\d+)\.(?P<suffix>.+)$")

ESTIMATORS = {
    "blocks": "block importance (ShortGPT): 1 - cos(block input, block output), mean over all tokens",
    "heads": "L2 norm of the head's attention output (o_proj input); mean over tokens, L2 over samples",
    "neurons": "|act(gate(x)) * up(x)| (down_proj input); mean over tokens, L2 over samples",
    "channels": "|RMSNorm output| of every norm of the model; mean over tokens, L2 over samples and norms",
    "gqa": "query heads pruned within every KV group, the same number in each; all K/V heads kept",
}


# --------------------------------------------------------------------------------------------- the plan


@dataclass
class PrunePlan:
    """What stays, in the teacher's numbering: ``heads[i]`` and ``neurons[i]`` belong to ``layers[i]``."""

    layers: list[int]
    channels: list[int]
    heads: list[list[int]]
    neurons: list[list[int]]
    how: str = "importance"  # or the naive baseline: "evenly-spaced", "random"

    def sizes(self, head_dim: int) -> dict[str, int]:
        return {"hidden": len(self.channels), "query": len(self.heads[0]) * head_dim, "ffn": len(self.neurons[0])}

    def record(self) -> dict[str, Any]:
        return {
            "how": self.how,
            "layers": self.layers,
            "hidden_channels": self.channels,
            "query_heads": self.heads,
            "mlp_neurons": self.neurons,
        }


@dataclass
class Shape:
    """The prunable sizes of a LLaMA-family config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: Any) -> Shape:
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        )

    @property
    def heads_per_group(self) -> int:
        return self.heads // self.kv_heads

    def record(self) -> dict[str, int]:
        return dict(self.__dict__)


def axes_of(name: str) -> tuple[str | None, ...] | None:
    """The axes of a parameter (see ``LAYER_AXES``), or None for one this module cannot prune."""
    match = _LAYER_NAME.match(name)
    if match:
        return LAYER_AXES.get(match["suffix"])
    return MODEL_AXES.get(name)


def check_prunable(model: Any) -> None:
    """Refuse, before the calibration pass, a model whose layout this module does not know."""
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in SUPPORTED:
        raise ConfigError(
            f"--teacher: a '{model_type}' model; prune cuts LLaMA-family models ({', '.join(SUPPORTED)}) only"
        )
    for name, _ in model.named_parameters():
        if axes_of(name) is None:
            raise ConfigError(f"--teacher: cannot prune parameter '{name}' of this {model_type} model")


def parameter_count(model: Any, layers: Sequence[int] | None = None, sizes: Mapping[str, int] | None = None) -> int:
    """Parameters of ``model`` cut to ``layers`` and to ``sizes`` per axis (tied weights counted once);
    computed from the shapes alone, so a target size is found without building a model."""
    kept = None if layers is None else set(layers)
    sizes = sizes or {}
    total = 0
    for name, param in model.named_parameters():
        match = _LAYER_NAME.match(name)
        if match and kept is not None and int(match["index"]) not in kept:
            continue
        numel = 1
        for dim, axis in zip(param.shape, axes_of(name) or (None,) * param.dim(), strict=True):
            numel *= sizes.get(axis, dim) if axis else dim
        total += numel
    return total


def _top(scores: torch.Tensor, keep: int) -> list[int]:
    """The ``keep`` highest-scoring indices, in their original order."""
    return sorted(torch.topk(scores.float(), keep).indices.tolist())


def _full(shape: Shape, layers: list[int], how: str) -> PrunePlan:
    return PrunePlan(
        layers=layers,
        channels=list(range(shape.hidden)),
        heads=[list(range(shape.heads)) for _ in layers],
        neurons=[list(range(shape.intermediate)) for _ in layers],
        how=how,
    )


def _check_depth(shape: Shape, keep: int) -> None:
    if not 1 <= keep < shape.layers:
        raise ConfigError(f"--depth {keep}: the teacher has {shape.layers} layers; keep 1 to {shape.layers - 1}")


def depth_plan(shape: Shape, importance: Importance, keep: int) -> PrunePlan:
    """Keep the ``keep`` blocks that change their input most (highest block importance)."""
    _check_depth(shape, keep)
    return _full(shape, _top(importance.blocks, keep), "importance")


def evenly_spaced_plan(shape: Shape, keep: int) -> PrunePlan:
    """The naive depth baseline: ``keep`` layers evenly spaced from the first (every other for half)."""
    _check_depth(shape, keep)
    return _full(shape, sorted({int(i * shape.layers / keep) for i in range(keep)}), "evenly-spaced")


def width_sizes(model: Any, ratio: float) -> dict[str, int]:
    """Hidden size, query rows and MLP width that keep ``ratio`` of ``model``'s parameters (see module doc)."""
    shape = Shape.of(model.config)
    target = ratio * parameter_count(model)

    def scaled(scale: float) -> dict[str, int]:
        per_group = max(1, round(scale * shape.heads_per_group))
        heads = per_group * shape.kv_heads  # transformers refuses a hidden size that is not a multiple of the heads
        return {
            "hidden": heads * max(1, round(scale * shape.hidden / heads)),
            "query": heads * shape.head_dim,
            "ffn": max(1, round(scale * shape.intermediate)),
        }

    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if parameter_count(model, sizes=scaled(middle)) <= target else (low, middle)
    sizes = scaled(low)
    base = parameter_count(model, sizes={**sizes, "ffn": 0})
    per_neuron = parameter_count(model, sizes={**sizes, "ffn": 1}) - base
    sizes["ffn"] = int(min(shape.intermediate, max(1, round((target - base) / per_neuron))))
    return sizes


def _heads_within_groups(shape: Shape, scores: torch.Tensor, per_group: int) -> list[int]:
    groups = scores.float().view(shape.kv_heads, shape.heads_per_group)
    kept = []
    for group, row in enumerate(groups):
        kept += [group * shape.heads_per_group + i for i in _top(row, per_group)]
    return kept


def width_plan(model: Any, importance: Importance, ratio: float) -> PrunePlan:
    """Keep the hidden channels, query heads (per KV group) and MLP neurons of highest importance."""
    shape = Shape.of(model.config)
    sizes = width_sizes(model, ratio)
    per_group = sizes["query"] // (shape.head_dim * shape.kv_heads)
    layers = list(range(shape.layers))
    return PrunePlan(
        layers=layers,
        channels=_top(importance.channels, sizes["hidden"]),
        heads=[_heads_within_groups(shape, importance.heads[i], per_group) for i in layers],
        neurons=[_top(importance.neurons[i], sizes["ffn"]) for i in layers],
        how="importance",
    )


def random_width_plan(model: Any, ratio: float, seed: int = 0) -> PrunePlan:
    """The naive width baseline: the same sizes as ``width_plan``, channels, heads and neurons drawn at random."""
    shape = Shape.of(model.config)
    generator = torch.Generator().manual_seed(seed)

    def scores(*size: int) -> torch.Tensor:
        return torch.rand(*size, generator=generator)

    fake = Importance(
        blocks=scores(shape.layers),
        heads=scores(shape.layers, shape.heads),
        neurons=scores(shape.layers, shape.intermediate),
        channels=scores(shape.hidden),
        samples=0,
        tokens=0,
    )
    plan = width_plan(model, fake, ratio)
    plan.how = "random"
    return plan


# --------------------------------------------------------------------------------------------- slicing


def _query_rows(heads: list[int], head_dim: int) -> list[int]:
    return [head * head_dim + offset for head in heads for offset in range(head_dim)]


def _slice(tensor: torch.Tensor, axes: tuple[str | None, ...], index: Mapping[str, torch.Tensor]) -> torch.Tensor:
    for dim, axis in enumerate(axes):
        if axis is not None:
            tensor = tensor.index_select(dim, index[axis].to(tensor.device))
    return tensor.clone()


@torch.no_grad()
def apply_plan(model: Any, plan: PrunePlan) -> Any:
    """A new model of ``model``'s class holding only what ``plan`` keeps; ``model`` is left as it was."""
    check_prunable(model)
    shape = Shape.of(model.config)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(plan.layers)
    config.hidden_size = len(plan.channels)
    config.intermediate_size = len(plan.neurons[0])
    config.num_attention_heads = len(plan.heads[0])
    config.num_key_value_heads = shape.kv_heads
    config.head_dim = shape.head_dim  # no longer hidden_size / heads
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in plan.layers]
    if any(len(heads) != len(plan.heads[0]) for heads in plan.heads) or len(plan.heads[0]) % shape.kv_heads:
        raise ValueError("every layer must keep the same number of query heads, a multiple of the KV heads")

    hidden = torch.tensor(plan.channels, dtype=torch.long)
    position = {old: new for new, old in enumerate(plan.layers)}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        axes = axes_of(name)
        if axes is None:
            raise ValueError(f"cannot prune parameter '{name}'")
        match = _LAYER_NAME.match(name)
        if match is None:
            state[name] = _slice(tensor, axes, {"hidden": hidden})
            continue
        old = int(match["index"])
        if old not in position:
            continue
        new = position[old]
        index = {
            "hidden": hidden,
            "query": torch.tensor(_query_rows(plan.heads[new], shape.head_dim), dtype=torch.long),
            "ffn": torch.tensor(plan.neurons[new], dtype=torch.long),
        }
        state[f"{match['prefix']}{new}.{match['suffix']}"] = _slice(tensor, axes, index)

    device = next(model.parameters()).device
    student = type(model)._from_config(config, dtype=model.dtype)
    student.load_state_dict(state, strict=True)
    if getattr(model, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(model.generation_config)
    return student.to(device).eval()


# --------------------------------------------------------------------------------------------- calibration


def read_calibration(source: str | Path) -> list[str]:
    """Calibration texts: a run directory's successful samples (question, newline, the teacher's text), a
    JSONL file (a string, or an object with ``text`` and optionally ``question`` or ``prompt``, per line),
    or any other text file (passages separated by blank lines)."""
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"--calibration {source}: not found")
    if path.is_dir():
        run = RunDir(path)
        if not run.samples.is_file():
            raise ConfigError(
                f"--calibration {source}: a folder without samples.jsonl; give a run directory, a .jsonl or a text file"
            )
        texts = [_joined(row) for row in _jsonl_objects(run.samples) if not row.get("error")]
    elif path.suffix == ".jsonl":
        texts = [_joined(row) for row in _jsonl_objects(path)]
    else:
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
        texts = [part.strip() for part in re.split(r"\n\s*\n", content)]
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise DataError(f"--calibration {source}: no calibration text in it")
    return texts


def _jsonl_objects(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc})") from None
            if isinstance(row, str):
                row = {"text": row}
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{path}:{number}: a calibration line is a string or an object with a 'text' string")
            rows.append(row)
    return rows


def _joined(row: dict[str, Any]) -> str:
    before = row.get("question") or row.get("prompt")
    return f"{before}\n{row['text']}" if isinstance(before, str) and before.strip() else str(row["text"])


def draw(texts: list[str], count: int, seed: int) -> list[str]:
    """``count`` texts drawn without replacement (all of them when there are fewer), seeded."""
    return list(texts) if len(texts) <= count else random.Random(seed).sample(texts, count)


def estimate_importance(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int = 512,
    batch_size: int = 8,
    console: Console | None = None,
) -> Importance:
    """Tokenize ``texts`` (cut to ``max_length``) and score ``model``'s parts on them, under a progress bar."""
    token_ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = calibration_batches(token_ids, batch_size, pad_id)
    if console is None:
        return collect_importance(model, batches)
    progress = Progress(
        TextColumn("[bold]calibration"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tps]:.0f} tok/s"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    started = time.monotonic()
    tokens = 0
    with progress:
        task = progress.add_task("calibration", total=len(token_ids), tps=0.0)

        def advance(batch: Any) -> None:
            nonlocal tokens
            tokens += int(batch.attention_mask.sum())
            progress.update(task, advance=batch.size, tps=tokens / max(time.monotonic() - started, 1e-9))

        return collect_importance(model, batches, advance)


# --------------------------------------------------------------------------------------------- in memory


@dataclass
class PruneResult:
    model: Any
    plan: PrunePlan
    importance: Importance
    params_before: int
    params_after: int
    seconds: float
    teacher_shape: dict[str, int] = field(default_factory=dict)
    student_shape: dict[str, int] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {
            "estimators": ESTIMATORS,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "params_kept": round(self.params_after / self.params_before, 4),
            "teacher_shape": self.teacher_shape,
            "student_shape": self.student_shape,
            "block_importance": [round(float(x), 6) for x in self.importance.blocks],
            "calibration_samples": self.importance.samples,
            "calibration_tokens": self.importance.tokens,
            "seconds": round(self.seconds, 2),
            "kept": self.plan.record(),
        }


def prune_in_memory(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    depth: int | None = None,
    width: float | None = None,
    max_length: int = 512,
    batch_size: int = 8,
    console: Console | None = None,
) -> PruneResult:
    """Score ``model`` on ``texts`` and cut it to ``depth`` layers or to ``width`` of its parameters;
    ``model`` itself is unchanged (it stays usable as the teacher of the retraining)."""
    if (depth is None) == (width is None):
        raise ConfigError("give exactly one of depth and width")
    check_prunable(model)
    shape = Shape.of(model.config)
    if depth is not None:
        _check_depth(shape, depth)
    started = time.monotonic()
    importance = estimate_importance(model, tokenizer, texts, max_length, batch_size, console)
    plan = depth_plan(shape, importance, depth) if depth is not None else width_plan(model, importance, width or 0.0)
    student = apply_plan(model, plan)
    return PruneResult(
        model=student,
        plan=plan,
        importance=importance,
        params_before=parameter_count(model),
        params_after=parameter_count(student),
        seconds=time.monotonic() - started,
        teacher_shape=Shape.of(model.config).record(),
        student_shape=Shape.of(student.config).record(),
    )


# --------------------------------------------------------------------------------------------- the command


def _check_new_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: already exists and is not empty; choose a new folder")


def _teacher_location(spec: str) -> tuple[str, Any]:
    """The teacher's folder and its config, with errors naming --teacher; nothing heavy is loaded."""
    from transformers import AutoConfig

    from cotfactory.model_loading import check_model_spec, resolve_model_path

    try:
        check_model_spec(spec)
        location = resolve_model_path(spec)
    except CotfactoryError as exc:
        raise ConfigError(f"--teacher {exc}") from None
    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--teacher {spec}: cannot read its config: {first_line(exc)}") from None
    if getattr(config, "model_type", None) not in SUPPORTED:
        raise ConfigError(
            f"--teacher {spec}: a '{config.model_type}' model; prune cuts LLaMA-family models "
            f"({', '.join(SUPPORTED)}) only"
        )
    return location, config


def run_prune(config: PruneConfig, console: Console) -> tuple[PruneResult, Path]:
    """``cotfactory prune``: check every input, cut the teacher, write the checkpoint folder atomically."""
    from cotfactory import __version__
    from cotfactory.model_loading import load_causal_lm, load_tokenizer, quiet_transformers

    quiet_transformers()
    out = Path(config.out)
    _check_new_folder(out)
    texts = draw(read_calibration(config.calibration), config.samples, config.seed)
    location, hf_config = _teacher_location(config.teacher)
    if config.depth is not None:
        _check_depth(Shape.of(hf_config), config.depth)
    dtype = str(getattr(hf_config, "dtype", None) or "float32").removeprefix("torch.")
    tokenizer = load_tokenizer(location)
    model = load_causal_lm(location, config.device, dtype if dtype in ("float32", "bfloat16", "float16") else "float32")
    result = prune_in_memory(
        model,
        tokenizer,
        texts,
        depth=config.depth,
        width=config.width,
        max_length=config.max_length,
        batch_size=config.batch_size,
        console=console,
    )
    record = {
        "cotfactory_version": __version__,
        "teacher": config.teacher,
        "teacher_location": location,
        "config": config.model_dump(mode="json"),
        "calibration": {"source": config.calibration, "seed": config.seed, "max_length": config.max_length},
        **result.record(),
    }
    save_pruned(result.model, tokenizer, record, out)
    return result, out


def save_pruned(model: Any, tokenizer: Any, record: dict[str, Any], out: Path) -> None:
    """Checkpoint, tokenizer and prune.json into a temporary folder beside ``out``, renamed into place at
    the end: a failed or killed prune leaves no half-written ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, [out.name])
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        write_json_atomic(work / RECORD, record)
        os.replace(work, out)  # onto nothing, or onto an empty folder
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _count(params: int) -> str:
    return f"{params / 1e6:.1f}M" if params >= 1e6 else f"{params:,}"


def summary(result: PruneResult, out: Path) -> str:
    """One line: the new shape, the parameters kept, the calibration it took."""
    teacher, student = result.teacher_shape, result.student_shape
    changed = ", ".join(
        f"{key} {teacher[key]}→{student[key]}"
        for key in ("layers", "hidden", "intermediate", "heads")
        if teacher[key] != student[key]
    )
    return (
        f"pruned ({changed}): {_count(result.params_before)} → {_count(result.params_after)} parameters "
        f"({result.params_after / result.params_before:.1%}); calibration {result.importance.samples} samples, "
        f"{result.importance.tokens} tokens, {result.seconds:.1f} s; {out}"
    )
