"""Records, request keys, the sampling plan and the token budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_request
from pydantic import ValidationError

from cotfactory.budget import TokenBudget, upper_bound_tokens
from cotfactory.hashing import derive_seed, stable_hash
from cotfactory.plan import Plan, SamplingGrid
from cotfactory.prompts import load_template
from cotfactory.records import Problem, RenderedPrompt, Sample


def test_key_is_stable_and_covers_every_field() -> None:
    base = make_request()
    # pinned (the defaults of helpers.make_request): a changed key scheme orphans every run
    assert base.key == make_request().key == "b383390cabdf21d65e3470c7"
    assert base.key == stable_hash({k: v for k, v in base.model_dump().items() if k != "decoding"}, 24)
    for field, value in [
        ("problem_id", "p2"),
        ("template_hash", "abd"),
        ("teacher", "hf"),
        ("model", "m2"),
        ("temperature", 0.8),
        ("top_p", 0.9),
        ("seed", 2),
        ("max_tokens", 65),
        ("sample_index", 1),
        ("mode", "contrastive"),
        ("problem_hash", "x"),
    ]:
        assert make_request(**{field: value}).key != base.key, field


def test_prompt_is_not_part_of_the_key_nor_stored() -> None:
    with_prompt = make_request(prompt=RenderedPrompt(text="hello"))
    assert with_prompt.key == make_request().key
    assert "prompt" not in with_prompt.model_dump()
    sample = Sample(request=with_prompt, text="t")
    assert "hello" not in sample.model_dump_json()


def test_sample_seeds_are_distinct_per_index_and_grid_seed() -> None:
    seeds = {make_request(seed=s, sample_index=i).sample_seed for s in range(5) for i in range(5)}
    assert len(seeds) == 25
    assert make_request(seed=7).sample_seed == 7
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)


def test_records_validate_at_the_boundary() -> None:
    with pytest.raises(ValidationError):
        Problem(id="x", question="q", answer_type="choice")  # no choices
    with pytest.raises(ValidationError):
        Problem(id="x", question="q", answer_type="float")
    with pytest.raises(ValidationError):
        make_request(temperature=-1)
    with pytest.raises(ValidationError):
        RenderedPrompt(text="a", messages=[{"role": "user", "content": "b"}])
    with pytest.raises(ValidationError):
        Sample.model_validate({"request": make_request().model_dump(), "text": "x", "surprise": 1})


def test_plan_order_count_and_keys() -> None:
    problems = [
        Problem(id=f"p{i}", question=f"What is {i} + 1?", gold=str(i + 1), answer_type="number") for i in range(3)
    ]
    template = load_template("zero-shot-cot")
    plan = Plan(problems, [template], SamplingGrid([0.3, 0.8], [1, 2], samples_per_setting=2), "hf", "m")
    requests = list(plan.requests())
    assert len(plan) == len(requests) == 3 * 2 * 2 * 2
    assert [r.problem_id for r in requests[:8]] == ["p0"] * 8  # problem-major
    assert len({r.key for r in requests}) == 24
    assert list(plan.request_keys()) == [r.key for r in requests]
    assert requests[0].prompt is not None and "What is 0 + 1?" in requests[0].prompt.messages[0]["content"]


def test_budget_never_lets_reservations_pass_the_limit() -> None:
    requests = [make_request(seed=i, prompt=RenderedPrompt(text="x" * 40)) for i in range(10)]
    bound = upper_bound_tokens(requests[0])
    assert bound == 40 + 8 + 64
    budget = TokenBudget(limit=bound * 3 + 5)
    passed = list(budget.gate(iter(requests)))
    assert len(passed) == 3 and budget.stopped
    for request in passed:
        budget.settle(Sample(request=request, prompt_tokens=10, completion_tokens=20))
    assert budget.used == 90 and budget.reserved == 0
    unlimited = TokenBudget(limit=None)
    assert len(list(unlimited.gate(iter(requests)))) == 10 and not unlimited.stopped


def test_dataset_export_types_columns_from_the_whole_file(tmp_path: Path) -> None:
    """Arrow infers types per 10 MB block: a column null in the first block and a string later must not
    fail the export (a big run whose first failed request comes late)."""
    import datasets

    from cotfactory.export import infer_features, write_dataset_atomic

    jsonl = tmp_path / "samples.jsonl"
    with jsonl.open("w") as handle:
        for i in range(120_000):
            late = i >= 110_000
            row = {
                "key": f"k{i}",
                "text": "x" * 100,
                "error": "HTTP 500" if late else None,
                "reward": 1 if late else 0.5,
            }
            handle.write(json.dumps({**row, "choices": ["a", "b"] if late else None, "v": {"keep": True}}) + "\n")
    assert jsonl.stat().st_size > 10 * 2**20
    features = infer_features(jsonl)
    assert features["error"] == datasets.Value("string") and features["reward"] == datasets.Value("float64")
    write_dataset_atomic(jsonl, tmp_path / "dataset")
    dataset = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert len(dataset) == 120_000 and dataset[-1]["error"] == "HTTP 500" and dataset[0]["choices"] is None
    assert dataset[-1]["reward"] == 1.0 and dataset[0]["v"] == {"keep": True}


def test_feature_inference_gives_up_on_mixed_columns(tmp_path: Path) -> None:
    from cotfactory.export import infer_features

    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text('{"a": 1}\n{"a": "one"}\n')
    assert infer_features(jsonl) is None  # datasets' own inference decides (and reports) then
