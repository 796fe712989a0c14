"""Dataset loaders: the shipped samples, shard/limit, generic field mapping, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_jsonl

from cotfactory.errors import ConfigError, DataError
from cotfactory.problems import LOADERS, available_formats, load_problems, register_loader

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
SHARED = ROOT.parent / "shared" / "data"


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, *rows: dict | str) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    return write(path, "\n".join(lines) + "\n")


def data_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(DataError) as caught:
        load_problems(*args, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- the shipped samples --------------------------------------------------------------------------


def test_registry_lists_every_format() -> None:
    assert available_formats() == ["cqa", "csv", "esnli", "gsm8k", "jsonl", "strategyqa", "svamp"]
    assert set(LOADERS) == set(available_formats())


def test_register_loader_refuses_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_loader("gsm8k")(LOADERS.get("jsonl"))


def test_gsm8k_test_sample() -> None:
    problems = load_problems("gsm8k", DATA / "gsm8k" / "test_sample.jsonl")
    assert len(problems) == 16
    first = problems[0]
    assert first.id == "gsm8k-0"
    assert first.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.gold == "18"
    assert first.answer_type == "number"
    assert first.source == "gsm8k:test_sample.jsonl"
    assert first.metadata["solution"].startswith("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.")
    assert "####" not in first.metadata["solution"]
    assert "subquestions" not in first.metadata
    assert problems[-1].id == "gsm8k-15"


def test_gsm8k_train_sample() -> None:
    problems = load_problems("gsm8k", DATA / "gsm8k" / "train_sample.jsonl")
    assert len(problems) == 16
    assert problems[0].question.startswith("Natalia sold clips to 48 of her friends")
    assert problems[0].gold == "72"


def test_gsm8k_socratic_subquestions() -> None:
    problems = load_problems("gsm8k", DATA / "gsm8k" / "test_socratic_sample.jsonl")
    assert len(problems) == 8
    assert problems[0].gold == "18"
    assert problems[0].metadata["subquestions"] == [
        {
            "question": "How many eggs does Janet sell?",
            "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.",
        },
        {
            "question": "How much does Janet make at the farmers' market?",
            "answer": "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.",
        },
    ]


def test_gsm8k_strips_thousands_commas_and_keeps_given_ids(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "g.jsonl", {"id": "a7", "question": "How many?", "answer": "Add.\n#### 1,234"})
    [problem] = load_problems("gsm8k", path)
    assert (problem.id, problem.gold, problem.metadata["solution"]) == ("a7", "1234", "Add.")


def test_svamp_sample() -> None:
    problems = load_problems("svamp", DATA / "svamp" / "sample.json")
    assert len(problems) == 16
    first = problems[0]
    assert first.id == "chal-1"
    assert first.question == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    assert first.gold == "51"
    assert first.answer_type == "number"
    assert first.metadata == {"equation": "( 76.0 - 25.0 )", "type": "Subtraction"}


def test_svamp_formats_fractions_and_normalises_spaces(tmp_path: Path) -> None:
    row = {"ID": "x-1", "Body": "Tom has  5 apples. ", "Question": " How many?", "Answer": 2.5}
    [problem] = load_problems("svamp", write(tmp_path / "s.json", json.dumps([row])))
    assert problem.gold == "2.5"
    assert problem.question == "Tom has 5 apples. How many?"


def test_cqa_test_sample() -> None:
    problems = load_problems("cqa", DATA / "cqa" / "test_sample.json")
    assert len(problems) == 16
    first = problems[0]
    assert first.id == "080ef6941410139d6869e78122bc741e"
    assert first.question.startswith("A beaver is know for building prowess")
    assert first.gold == "wooded area"
    assert first.answer_type == "choice"
    assert first.choices == ["british columbia", "body of water", "wooded area", "pay debts", "zoo"]
    assert first.metadata == {
        "index": 0,
        "split": "test",
        "abstractive_explanation": "Wooden area is only the place for the beaver supplies.",
    }
    assert [p.metadata["index"] for p in problems] == list(range(16))


def test_cqa_train_sample_and_palm_alignment() -> None:
    train = load_problems("cqa", DATA / "cqa" / "train_sample.json")
    assert len(train) == 16
    assert train[0].gold == "math problem"
    assert train[0].metadata["split"] == "train"
    palm = json.loads((DATA / "cqa" / "palm_test_sample.json").read_text(encoding="utf-8"))
    assert len(palm) == 16 and all(isinstance(text, str) for text in palm)
    assert "So the answer is (c) wooded area." in palm[0]


def test_strategyqa_dev_sample() -> None:
    problems = load_problems("strategyqa", DATA / "strategyqa" / "dev_sample.json")
    assert len(problems) == 16
    first = problems[0]
    assert first.id == "e0044a7b4d146d611e73"
    assert first.question.startswith("Will the Albany in Georgia reach a hundred thousand")
    assert first.gold == "no"
    assert first.answer_type == "yes_no"
    assert first.metadata["facts"][0] == "Albany, GA has around 75,000 people"
    assert first.metadata["decomposition"][-1] == "Is #3 smaller than #4?"


def test_gsm8k_exemplars() -> None:
    rows = read_jsonl(DATA / "gsm8k" / "exemplars.jsonl")
    assert len(rows) == 4
    assert all(set(row) == {"question", "rationale", "answer"} for row in rows)
    assert rows[0]["answer"] == "15"
    assert rows[0]["rationale"].startswith("The craft store made 36 / 3 = 12 sales")
    assert not any("<<" in row["rationale"] or "####" in row["rationale"] for row in rows)


def test_esnli_samples_and_palm_alignment() -> None:
    esnli = ROOT / "data" / "esnli"
    train = load_problems("esnli", esnli / "train_sample.json")
    test = load_problems("esnli", esnli / "test_sample.json")
    assert (len(train), len(test)) == (600, 300)
    first = train[0]
    assert first.question.startswith("Premise: This church choir sings to the masses")
    assert "\nHypothesis: The church has cracks in the ceiling." in first.question
    assert (first.gold, first.answer_type, first.choices) == (
        "neutral",
        "choice",
        ["entailment", "neutral", "contradiction"],
    )
    assert (
        first.metadata["index"] == 0 and first.metadata["split"] == "train" and len(first.metadata["explanations"]) == 3
    )
    assert not {p.id for p in train} & {p.id for p in test}
    assert {p.gold for p in test} == {"entailment", "neutral", "contradiction"}


def test_esnli_label_must_be_0_1_or_2(tmp_path: Path) -> None:
    bad = tmp_path / "esnli_test.json"
    bad.write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": 3}) + "\n")
    with pytest.raises(DataError, match=r"esnli_test.json:1: field 'label': expected 0, 1 or 2, got 3"):
        load_problems("esnli", bad)


def test_cqa_exemplars() -> None:
    rows = read_jsonl(DATA / "cqa" / "exemplars.jsonl")
    assert len(rows) == 4
    for row in rows:
        assert set(row) == {"question", "choices", "rationale", "answer"}
        assert row["answer"] in row["choices"] and len(row["choices"]) == 5
        assert "So the answer is" not in row["rationale"] and "Q:" not in row["rationale"]
    assert rows[1]["answer"] == "cash register"


@pytest.mark.parametrize("folder", ["gsm8k", "svamp", "cqa", "strategyqa"])
def test_every_sample_folder_has_license_and_readme(folder: str) -> None:
    assert (DATA / folder / "LICENSE").read_text().strip()
    assert (DATA / folder / "README.md").read_text().strip()


# -- shard and limit ------------------------------------------------------------------------------


def test_shard_then_limit() -> None:
    path = DATA / "gsm8k" / "test_sample.jsonl"
    assert [p.id for p in load_problems("gsm8k", path, shard=(1, 3), limit=2)] == ["gsm8k-1", "gsm8k-4"]
    assert [p.id for p in load_problems("gsm8k", path, shard=(0, 4))] == [
        "gsm8k-0",
        "gsm8k-4",
        "gsm8k-8",
        "gsm8k-12",
    ]
    assert [p.id for p in load_problems("gsm8k", path, limit=3)] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]
    shards = [load_problems("gsm8k", path, shard=(i, 3)) for i in range(3)]
    everything = load_problems("gsm8k", path)
    assert sorted(p.id for shard in shards for p in shard) == sorted(p.id for p in everything)


def test_limit_stops_reading(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "x.jsonl", {"question": "a"}, {"question": "b"}, "{broken")
    assert [p.question for p in load_problems("jsonl", path, limit=2)] == ["a", "b"]


@pytest.mark.parametrize(("limit", "shard"), [(0, None), (None, (3, 3)), (None, (0, 0)), (None, (-1, 2))])
def test_bad_selection_is_a_config_error(limit: int | None, shard: tuple[int, int] | None) -> None:
    with pytest.raises(ConfigError):
        load_problems("gsm8k", DATA / "gsm8k" / "test_sample.jsonl", limit=limit, shard=shard)


# -- generic loaders ------------------------------------------------------------------------------


def test_generic_jsonl_with_field_mapping(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "mine.jsonl",
        {"qid": "q1", "text": "Pick one", "label": "b", "options": ["a", "b"]},
        "",
        {"text": "Pick again", "label": "a", "options": ["a", "b"]},
    )
    problems = load_problems(
        "jsonl",
        path,
        question_field="text",
        answer_field="label",
        id_field="qid",
        choices_field="options",
        answer_type="choice",
    )
    assert [(p.id, p.question, p.gold, p.choices) for p in problems] == [
        ("q1", "Pick one", "b", ["a", "b"]),
        ("mine-1", "Pick again", "a", ["a", "b"]),
    ]
    assert problems[0].source == "jsonl:mine.jsonl"


def test_generic_jsonl_defaults_and_answer_values(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "d.jsonl",
        {"id": 7, "question": "Q1", "answer": 12.0},
        {"question": "Q2", "answer": True},
        {"question": "Q3"},
    )
    problems = load_problems("jsonl", path)
    assert [(p.id, p.gold, p.answer_type, p.choices) for p in problems] == [
        ("7", "12", "text", None),
        ("d-1", "yes", "text", None),
        ("d-2", None, "text", None),
    ]
    assert load_problems("jsonl", path, answer_field=None)[0].gold is None
    yes_no = jsonl(tmp_path / "yn.jsonl", {"question": "Q", "answer": "True"})
    assert load_problems("jsonl", yes_no, answer_type="yes_no")[0].gold == "yes"


def test_generic_csv_with_field_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path / "quiz.csv",
        'key,prompt,gold,opts\nk1,"Two plus two, please",4,\n,"Multi\nline",b,a | b | c\n',
    )
    problems = load_problems(
        "csv",
        path,
        question_field="prompt",
        answer_field="gold",
        id_field="key",
        choices_field="opts",
    )
    assert [(p.id, p.question, p.gold, p.choices) for p in problems] == [
        ("k1", "Two plus two, please", "4", None),
        ("quiz-1", "Multi\nline", "b", ["a", "b", "c"]),
    ]
    numbers = load_problems(
        "csv", write(tmp_path / "n.csv", 'question,answer\nHow many?,"1,500"\n'), answer_type="number"
    )
    assert numbers[0].gold == "1500"


# -- bad input: one line naming the file and the place ------------------------------------------


def test_malformed_json_line(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "x.jsonl", {"question": "a"}, {"question": "b"}, '{"question": "c" "answer": 1}')
    assert data_error("jsonl", path) == f"{path}:3: not valid JSON (Expecting ',' delimiter)"


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "x.jsonl", {"question": "a"}, "[1, 2]")
    assert data_error("jsonl", path) == f"{path}:2: expected a JSON object, got list"


def test_missing_field(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "x.jsonl", {"question": "a"}, "", "", {"text": "b"})
    assert data_error("jsonl", path) == f"{path}:4: missing field 'question'"


def test_wrong_type(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "x.jsonl", {"question": "a"}, {"question": 7})
    assert data_error("jsonl", path) == f"{path}:2: field 'question' must be a string, got int"


def test_wrong_type_in_a_list(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "x.jsonl", {"question": "a", "choices": ["x", 2]})
    assert data_error("jsonl", path) == (
        f"{path}:1: field 'choices' must be a list of strings, got a list with int at index 1"
    )


def test_empty_file(tmp_path: Path) -> None:
    empty = write(tmp_path / "x.jsonl", "")
    assert data_error("jsonl", empty) == f"{empty}: empty file (no problems)"
    blank = write(tmp_path / "blank.jsonl", "\n  \n")
    assert data_error("gsm8k", blank) == f"{blank}: empty file (no problems)"
    array = write(tmp_path / "x.json", "[]")
    assert data_error("svamp", array) == f"{array}: empty file (no problems)"
    header_only = write(tmp_path / "x.csv", "question,answer\n")
    assert data_error("csv", header_only) == f"{header_only}: empty file (no problems)"


def test_duplicate_id(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "x.jsonl",
        {"id": "q0", "question": "a"},
        {"id": "q1", "question": "b"},
        "",
        {"id": "q1", "question": "c"},
    )
    assert data_error("jsonl", path) == f"{path}:4: duplicate id 'q1' (first on line 2)"


def test_duplicate_id_in_a_json_array(tmp_path: Path) -> None:
    row = {"ID": "chal-1", "Body": "b", "Question": "q", "Equation": "", "Answer": 1.0, "Type": ""}
    path = write(tmp_path / "x.json", json.dumps([row, {**row, "ID": "chal-2"}, row]))
    assert data_error("svamp", path) == f"{path}[2]: duplicate id 'chal-1' (first at [0])"


def test_not_utf8_in_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", b'{"question": "a"}\n{"question": "caf\xff"}\n')
    assert data_error("jsonl", path) == f"{path}:2: not UTF-8 (byte 0xff at offset 35)"


def test_not_utf8_in_a_json_array(tmp_path: Path) -> None:
    path = write(tmp_path / "x.json", b"[" + b" " * 119 + b"\xff]")
    assert data_error("strategyqa", path) == f"{path}: not UTF-8 (byte 0xff at offset 120)"


def test_invalid_json_array(tmp_path: Path) -> None:
    path = write(tmp_path / "x.json", '[\n  {"qid": "a"},\n  {"qid": }\n]')
    assert data_error("strategyqa", path) == f"{path}:3: not valid JSON (Expecting value)"
    lines = jsonl(tmp_path / "lines.json", {"qid": "a"}, {"qid": "b"})
    assert data_error("strategyqa", lines) == (
        f"{lines}:2: not valid JSON (Extra data) - is this JSON Lines? this format needs one JSON array"
    )


def test_json_array_element_errors(tmp_path: Path) -> None:
    good = {"qid": "a", "question": "Is it?", "answer": True}
    path = write(tmp_path / "x.json", json.dumps([good, {**good, "qid": "b", "answer": "yes"}]))
    assert data_error("strategyqa", path) == f"{path}[1]: field 'answer' must be true or false, got str"
    svamp = write(tmp_path / "s.json", json.dumps([{"ID": "c", "Question": "q", "Answer": 1}]))
    assert data_error("svamp", svamp) == f"{svamp}[0]: missing field 'Body'"
    scalar = write(tmp_path / "o.json", '{"ID": "c"}')
    assert data_error("svamp", scalar) == f"{scalar}: expected a JSON array of objects, got dict"


def test_gsm8k_line_without_final_answer(tmp_path: Path) -> None:
    good, bad = {"question": "a", "answer": "x\n#### 1"}, {"question": "b", "answer": "so 2"}
    path = jsonl(tmp_path / "g.jsonl", good, bad)
    assert data_error("gsm8k", path) == f"{path}:2: field 'answer' has no '#### ' before the final answer"
    words = jsonl(tmp_path / "w.jsonl", {"question": "a", "answer": "x\n#### many"})
    assert data_error("gsm8k", words) == f"{words}:1: the final answer after '#### ' is not a number: 'many'"


def test_unknown_format_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as caught:
        load_problems("gsm9k", "x.jsonl")
    assert str(caught.value) == (
        "unknown format 'gsm9k' (did you mean 'gsm8k'?); available: cqa, csv, esnli, gsm8k, jsonl, strategyqa, svamp"
    )
    with pytest.raises(ConfigError) as caught:
        load_problems("parquet", "x.parquet")
    assert str(caught.value) == "unknown format 'parquet'; available: cqa, csv, esnli, gsm8k, jsonl, strategyqa, svamp"


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.jsonl"
    assert data_error("jsonl", path) == f"{path}: file not found"
    assert data_error("svamp", tmp_path) == f"{tmp_path}: is a directory, not a file"


def test_choice_problem_without_choices(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "c.jsonl", {"question": "a", "answer": "x", "choices": ["x"]}, {"question": "b"})
    assert data_error("jsonl", path, answer_type="choice") == f"{path}:2: missing field 'choices'"
    empty = jsonl(tmp_path / "e.jsonl", {"question": "a", "choices": []})
    assert data_error("jsonl", empty, answer_type="choice") == (
        f"{empty}:1: a 'choice' problem needs a non-empty 'choices' list"
    )
    csv_path = write(tmp_path / "c.csv", "question,answer\nWhich?,x\n")
    assert data_error("csv", csv_path, answer_type="choice") == (
        f"{csv_path}:1: missing column 'choices' (columns: question, answer)"
    )


def test_cqa_answer_must_be_a_choice(tmp_path: Path) -> None:
    row = {"id": "c1", "question": "Where?", "choices": ["a", "b"], "answer": "z"}
    path = jsonl(tmp_path / "cqa_test.json", row)
    assert data_error("cqa", path) == f"{path}:1: answer 'z' is not one of the choices ['a', 'b']"


def test_pydantic_errors_name_the_line_and_field(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "x.jsonl", {"question": "fine"}, {"question": ""})
    assert data_error("jsonl", path) == f"{path}:2: field 'question': String should have at least 1 character"


def test_csv_missing_column_and_ragged_row(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "id,text,label\n1,hello,a\n")
    assert data_error("csv", path) == f"{path}:1: missing column 'question' (columns: id, text, label)"
    ragged = write(tmp_path / "r.csv", 'question,answer\n"two\nlines",1\nthree,3,extra\n')
    assert data_error("csv", ragged) == f"{ragged}:4: row has 3 fields, the header has 2"


def test_bad_answer_type_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="answer_type 'numeric' is not one of"):
        load_problems("jsonl", jsonl(tmp_path / "x.jsonl", {"question": "a"}), answer_type="numeric")


# -- the full reference datasets ------------------------------------------------------------------


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")
@pytest.mark.parametrize(
    ("format", "relative", "count"),
    [
        ("gsm8k", "gsm8k/test.jsonl", 1319),
        ("gsm8k", "gsm8k/test_socratic.jsonl", 1319),
        ("svamp", "svamp/SVAMP.json", 1000),
        ("cqa", "cqa_palm/cqa_test.json", 1221),
        ("strategyqa", "strategyqa/dev.json", 229),
    ],
)
def test_full_reference_files(format: str, relative: str, count: int) -> None:
    problems = load_problems(format, SHARED / relative)
    assert len(problems) == count
    assert len({p.id for p in problems}) == count
