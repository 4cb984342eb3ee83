"""Loaders: every format and source gives the same normalized examples; every bad file names itself."""

from __future__ import annotations

import csv
import gzip
import json
import sqlite3
import sys
import types
from pathlib import Path

import pytest

from shared.config import DataConfig
from shared.data import DataError, load_file, load_splits
from shared.paths import shared_data_dir

SQL_ROWS = [
    {
        "question": f"How many singers are older than {i}?",
        "context": "CREATE TABLE singer (age INTEGER)",
        "answer": f"SELECT COUNT(*) FROM singer WHERE age > {i}",
    }
    for i in range(40)
]
CODE_ROWS = [
    {
        "instruction": "Write a function `add_1(x)` that returns x plus 1.",
        "input": "",
        "output": "def add_1(x):\n    return x + 1\n",
        "tests": ["assert add_1(1) == 2", "assert add_1(0) == 1"],
    },
    {
        "instruction": "Write a function `neg(x)` that returns -x.",
        "input": "neg(2) is -2",
        "output": "def neg(x):\n    return -x\n",
        "tests": ["assert neg(2) == -2"],
        "setup": "import math",
    },
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_db(path: Path, table: str = "singer") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, age INTEGER)")
    conn.close()
    return path


def raises(match_all: list[str], fn, *args, **kwargs) -> str:
    """Calls fn, expects a DataError, and checks its message holds every string in match_all."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    for part in match_all:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".parquet"])
def test_every_format_loads_the_same_sql(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, SQL_ROWS)
    elif suffix == ".jsonl.gz":
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in SQL_ROWS).encode()))
    elif suffix == ".json":
        path.write_text(json.dumps(SQL_ROWS, indent=1))
    elif suffix == ".json.gz":
        path.write_bytes(gzip.compress(json.dumps(SQL_ROWS).encode()))
    elif suffix == ".csv":
        write_csv(path, SQL_ROWS)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(SQL_ROWS), path)
    assert load_file(path, "sql") == SQL_ROWS


def test_json_variants(tmp_path):
    """JSON lines under a .json name (what Dataset.to_json writes) and a {"data": [...]} wrapper."""
    lines = write_jsonl(tmp_path / "lines.json", SQL_ROWS)
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": 1, "data": SQL_ROWS}))
    assert load_file(lines, "sql") == load_file(wrapped, "sql") == SQL_ROWS


def test_code_rows_and_csv_test_cells(tmp_path):
    expected = [{**CODE_ROWS[0], "setup": ""}, CODE_ROWS[1]]
    assert load_file(write_jsonl(tmp_path / "a.jsonl", CODE_ROWS), "code") == expected
    cells = [{**r, "tests": json.dumps(r["tests"]), "setup": r.get("setup", "")} for r in CODE_ROWS]
    assert load_file(write_csv(tmp_path / "a.csv", cells), "code") == expected
    cells[0]["tests"] = repr(CODE_ROWS[0]["tests"])  # a Python list literal, as pandas writes lists
    assert load_file(write_csv(tmp_path / "b.csv", cells), "code") == expected


def test_column_mapping(tmp_path):
    rows = [{"text": r["question"], "schema": r["context"], "sql": r["answer"]} for r in SQL_ROWS]
    path = write_jsonl(tmp_path / "mapped.jsonl", rows)
    columns = {"question": "text", "context": "schema", "answer": "sql"}
    assert load_file(path, "sql", columns=columns) == SQL_ROWS


def test_spider_style_query_becomes_answer(tmp_path):
    rows = [{"db_id": "x", "question": "q?", "query": "SELECT 1", "context": "CREATE TABLE t (a INT)"}]
    assert load_file(write_jsonl(tmp_path / "s.jsonl", rows), "sql") == [
        {"question": "q?", "context": "CREATE TABLE t (a INT)", "answer": "SELECT 1", "db_id": "x"}
    ]


def test_mbpp_format_puts_tests_in_input_and_fixes_line_ends(tmp_path):
    row = {
        "text": "Write a function to add one.",
        "code": "def f(x):\r\n    return x + 1",
        "task_id": 1,
        "test_setup_code": "",
        "test_list": ["assert f(1) == 2", "assert f(2) == 3"],
    }
    [ex] = load_file(write_jsonl(tmp_path / "mbpp.jsonl", [row]), "code")
    assert ex == {
        "instruction": "Write a function to add one.",
        "input": "Your code should pass these tests:\nassert f(1) == 2\nassert f(2) == 3",
        "output": "def f(x):\n    return x + 1",
        "tests": ["assert f(1) == 2", "assert f(2) == 3"],
        "setup": "",
    }


# --------------------------------------------------------------------------------------------- databases


def test_db_id_resolves_to_either_layout(tmp_path):
    nested = make_db(tmp_path / "dbs" / "shop" / "shop.sqlite")
    flat = make_db(tmp_path / "dbs" / "zoo.sqlite")
    rows = [{**SQL_ROWS[0], "db_id": "shop"}, {**SQL_ROWS[1], "db_id": "zoo"}]
    path = write_jsonl(tmp_path / "q.jsonl", rows)
    shop, zoo = load_file(path, "sql", db_dir=tmp_path / "dbs")
    assert shop["db_path"] == str(nested.resolve()) and zoo["db_path"] == str(flat.resolve())
    assert list(shop) == ["question", "context", "answer", "db_id", "db_path"]


def test_missing_database_names_db_id_and_folder(tmp_path):
    (tmp_path / "dbs").mkdir()
    path = write_jsonl(tmp_path / "q.jsonl", [{**SQL_ROWS[0], "db_id": "nowhere"}])
    raises(
        ["q.jsonl", "line 1", "'nowhere'", str(tmp_path / "dbs")],
        load_file,
        path,
        "sql",
        db_dir=tmp_path / "dbs",
    )


def test_context_read_from_the_database_when_absent(tmp_path):
    make_db(tmp_path / "dbs" / "shop" / "shop.sqlite", table="orders")
    path = write_jsonl(tmp_path / "q.jsonl", [{"db_id": "shop", "question": "q?", "query": "SELECT 1"}])
    [ex] = load_file(path, "sql", db_dir=tmp_path / "dbs")
    assert ex["context"].startswith("CREATE TABLE orders") and ex["context"].endswith(";")
    raises(["q.jsonl", "'context'", "data.columns.context=<column>", "data.db_dir"], load_file, path, "sql")


def test_relative_db_path_is_resolved_against_the_file(tmp_path):
    make_db(tmp_path / "a.sqlite")
    [ex] = load_file(write_jsonl(tmp_path / "q.jsonl", [{**SQL_ROWS[0], "db_path": "a.sqlite"}]), "sql")
    assert ex["db_path"] == str((tmp_path / "a.sqlite").resolve())


# --------------------------------------------------------------------------------------------- errors


def test_missing_column_lists_columns_and_how_to_map(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "context": "c", "sql": "SELECT 1"}])
    raises(
        [str(path), "'answer'", "question, context, sql", "data.columns.answer=<column>"],
        load_file,
        path,
        "sql",
    )


def test_column_missing_from_one_row_names_the_row(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [SQL_ROWS[0], {"question": "q", "context": "c"}])
    raises([str(path), "line 2", "'answer'"], load_file, path, "sql")


def test_bad_mapping(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", SQL_ROWS[:1])
    raises(
        ["data.columns", "questoin", "question, context, answer"], load_file, path, "sql", {"questoin": "q"}
    )
    raises(
        [str(path), "data.columns.answer='query'", "question, context, answer"],
        load_file,
        path,
        "sql",
        {"answer": "query"},
    )


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n\n"),
        ("empty.json", "[]"),
        ("header.csv", "question,context,answer\n"),
    ],
)
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    raises([str(path), "empty"], load_file, path, "sql")


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(SQL_ROWS[0]) + "\n\n" + '{"question": "q", "answer": \n')
    raises([str(path), "line 3", "invalid JSON"], load_file, path, "sql")
    path.write_text(json.dumps(SQL_ROWS[0]) + "\n[1, 2]\n")
    raises([str(path), "line 2", "JSON object"], load_file, path, "sql")
    listed = tmp_path / "bad.json"
    listed.write_text('[\n {"question": "q",\n  "answer" "SELECT 1"}\n]')
    raises([str(listed), "line 3", "invalid JSON"], load_file, listed, "sql")


def test_unreadable_files(tmp_path):
    fake_gz = tmp_path / "a.jsonl.gz"
    fake_gz.write_text("not gzip")
    raises([str(fake_gz), "gzip"], load_file, fake_gz, "sql")
    fake_parquet = tmp_path / "a.parquet"
    fake_parquet.write_text("not parquet")
    raises([str(fake_parquet), "Parquet"], load_file, fake_parquet, "sql")
    latin = tmp_path / "a.jsonl"
    latin.write_bytes('{"question": "caf\xe9"}\n'.encode("latin-1"))
    raises([str(latin), "UTF-8"], load_file, latin, "sql")
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("question,context,answer\nq,c,a,extra\n")
    raises([str(csv_path), "row 1", "more fields"], load_file, csv_path, "sql")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello")
    raises([str(path), "unsupported", ".jsonl"], load_file, path, "sql")


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("question", 7, ["'question'", "must be a string", "int"]),
        ("question", None, ["'question'", "empty"]),
        ("answer", "   ", ["'answer'", "empty"]),
        ("context", ["CREATE"], ["'context'", "must be a string", "list"]),
        ("db_id", 3, ["'db_id'", "must be a string"]),
    ],
)
def test_wrong_sql_value_names_file_row_and_column(tmp_path, field, value, words):
    path = write_jsonl(tmp_path / "rows.jsonl", [SQL_ROWS[0], {**SQL_ROWS[1], field: value}])
    raises([str(path), "line 2", *words], load_file, path, "sql")


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("tests", [], ["'tests'", "at least one test"]),
        ("tests", ["assert True", 3], ["'tests'", "item 1", "int"]),
        ("tests", {"a": 1}, ["'tests'", "list of test strings"]),
        ("tests", "[not a list", ["'tests'", "not a valid list"]),
        ("output", None, ["'output'", "empty"]),
        ("input", 5, ["'input'", "must be a string"]),
    ],
)
def test_wrong_code_value_names_file_row_and_column(tmp_path, field, value, words):
    path = write_jsonl(tmp_path / "rows.jsonl", [CODE_ROWS[0], {**CODE_ROWS[1], field: value}])
    raises([str(path), "line 2", *words], load_file, path, "code")


def test_mapped_column_is_named_with_its_field(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"q": 1, "context": "c", "answer": "a"}])
    raises([str(path), "line 1", "column 'q' (question)"], load_file, path, "sql", {"question": "q"})


# --------------------------------------------------------------------------------------------- splits


def test_cut_splits_are_seeded_disjoint_and_keep_duplicates_together(tmp_path):
    rows = SQL_ROWS + SQL_ROWS[:10]  # sql-create-context repeats questions
    path = write_jsonl(tmp_path / "all.jsonl", rows)
    splits = load_splits(DataConfig(source=str(path), seed=3))
    assert list(splits) == ["train", "dev", "test"]
    assert sum(map(len, splits.values())) == 50 and len(splits["dev"]) >= 2 and len(splits["test"]) >= 2
    questions = {name: {ex["question"] for ex in rows} for name, rows in splits.items()}
    assert not (
        questions["train"] & questions["dev"]
        or questions["train"] & questions["test"]
        or questions["dev"] & questions["test"]
    )
    assert load_splits(DataConfig(source=str(path), seed=3)) == splits
    assert load_splits(DataConfig(source=str(path), seed=4))["test"] != splits["test"]
    order = [ex["question"] for ex in SQL_ROWS]
    assert [ex["question"] for ex in splits["test"]] == sorted(questions["test"], key=order.index)


def test_max_train_examples_caps_the_shuffled_train(tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", SQL_ROWS)
    full = load_splits(DataConfig(source=str(path)))
    capped = load_splits(DataConfig(source=str(path), max_train_examples=5))
    assert capped["train"] == full["train"][:5] and capped["test"] == full["test"]


def test_too_small_to_split(tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", SQL_ROWS[:1] * 3)
    raises([str(path), "too few", "data.dev_file"], load_splits, DataConfig(source=str(path)))


def test_explicit_split_files(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", SQL_ROWS[:30])
    write_jsonl(tmp_path / "b.jsonl", SQL_ROWS[30:35])
    write_jsonl(tmp_path / "c.jsonl", SQL_ROWS[35:])
    data = DataConfig(source=str(tmp_path), train_file="a.jsonl", dev_file="b.jsonl", test_file="c.jsonl")
    splits = load_splits(data)
    assert splits["dev"] == SQL_ROWS[30:35] and splits["test"] == SQL_ROWS[35:]
    assert sorted(splits["train"], key=SQL_ROWS.index) == SQL_ROWS[:30]
    only_dev = load_splits(DataConfig(source=str(tmp_path / "a.jsonl"), dev_file=str(tmp_path / "b.jsonl")))
    assert only_dev["dev"] == SQL_ROWS[30:35] and len(only_dev["test"]) == 2
    (tmp_path / "empty.jsonl").write_text("")
    raises(
        [str(tmp_path / "empty.jsonl"), "empty"],
        load_splits,
        DataConfig(source=str(tmp_path / "a.jsonl"), dev_file=str(tmp_path / "empty.jsonl")),
    )


def test_folder_sources(tmp_path):
    named = tmp_path / "named"
    named.mkdir()
    write_jsonl(named / "train.jsonl", SQL_ROWS[:30])
    write_jsonl(named / "validation.jsonl", SQL_ROWS[30:])
    splits = load_splits(DataConfig(source=str(named)))
    assert splits["dev"] == SQL_ROWS[30:] and len(splits["train"]) + len(splits["test"]) == 30
    write_jsonl(named / "extra.jsonl", SQL_ROWS[:1])
    raises([str(named), "extra.jsonl"], load_splits, DataConfig(source=str(named)))
    pooled = tmp_path / "pooled"
    pooled.mkdir()
    write_jsonl(pooled / "part1.jsonl", SQL_ROWS[:20])
    write_jsonl(pooled / "part2.jsonl", [*SQL_ROWS[20:], {"question": 1}])
    raises(["part2.jsonl line 21", "'question'"], load_splits, DataConfig(source=str(pooled)))
    no_train = tmp_path / "no_train"
    no_train.mkdir()
    write_jsonl(no_train / "dev.jsonl", SQL_ROWS[:5])
    raises([str(no_train), "no train file", "data.train_file"], load_splits, DataConfig(source=str(no_train)))
    (tmp_path / "nothing").mkdir()
    raises(
        [str(tmp_path / "nothing"), "no data files"],
        load_splits,
        DataConfig(source=str(tmp_path / "nothing")),
    )


def test_missing_local_file_is_not_taken_for_a_hub_id(tmp_path):
    raises(["does not exist"], load_splits, DataConfig(source=str(tmp_path / "nope.jsonl")))


# --------------------------------------------------------------------------------------------- hub


class _FakeSplit:
    def __init__(self, rows):
        self.rows = rows

    def to_list(self):
        return list(self.rows)


def _fake_datasets(monkeypatch, load_dataset):
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))


def test_hub_failure_names_the_dataset(monkeypatch):
    def offline(source, **kwargs):
        raise ConnectionError("no network")

    _fake_datasets(monkeypatch, offline)
    raises(
        ["'b-mc2/sql-create-context'", "could not be loaded", "ConnectionError", "local file"],
        load_splits,
        DataConfig(source="b-mc2/sql-create-context"),
    )


def test_hub_splits_by_name(monkeypatch):
    _fake_datasets(
        monkeypatch,
        lambda source, **kw: {"train": _FakeSplit(SQL_ROWS[:30]), "validation": _FakeSplit(SQL_ROWS[30:])},
    )
    splits = load_splits(DataConfig(source="org/name"))
    assert splits["dev"] == SQL_ROWS[30:] and len(splits["train"]) + len(splits["test"]) == 30
    raises(
        ["'org/name'", "no split 'holdout'", "train, validation"],
        load_splits,
        DataConfig(source="org/name", test_file="holdout"),
    )
    _fake_datasets(monkeypatch, lambda source, **kw: {"train": _FakeSplit([{"question": "q"}] * 5)})
    raises(["hub dataset 'org/name' split 'train'", "'context'"], load_splits, DataConfig(source="org/name"))


# --------------------------------------------------------------------------------------------- bundled


def test_bundled_code():
    splits = load_splits(DataConfig(task="code", max_train_examples=50))
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [50, 100, 100]


def test_bundled_refuses_split_files(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", SQL_ROWS)
    raises(["data.train_file", "bundled"], load_splits, DataConfig(train_file=str(path)))


def test_bundled_sql():
    sqlgen = pytest.importorskip("shared.data.sqlgen")
    if not hasattr(sqlgen, "bundled_sql_splits"):
        pytest.skip("shared.data.sqlgen.bundled_sql_splits is not written yet")
    splits = load_splits(DataConfig(task="sql"))
    assert {"train", "dev", "test", "test_unseen"} <= set(splits)
    for rows in splits.values():
        assert rows and all(Path(ex["db_path"]).is_file() for ex in rows[:20])


# --------------------------------------------------------------------------------------------- shared data


@pytest.fixture
def shared_data() -> Path:
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is absent (QLORA_SWEEP_SHARED_DATA points elsewhere)")
    return root


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name, task, count",
    [
        ("sql_create_context/spider_intersect_val.jsonl", "sql", 936),
        ("sql_create_context/spider_intersect_val_executable.jsonl", "sql", 416),
        ("spider/dev_14db.jsonl", "sql", 751),
        ("mbpp/mbpp.jsonl", "code", 974),
        ("mbpp/mbpp_test.jsonl", "code", 500),
    ],
)
def test_real_files_load_as_they_are(shared_data, name, task, count):
    examples = load_file(shared_data / name, task)
    assert len(examples) == count
    for ex in examples:
        if task == "sql":
            assert ex["question"] and ex["context"].startswith("CREATE TABLE") and ex["answer"]
        else:
            assert (
                ex["tests"] and all(t.startswith("assert") for t in ex["tests"]) and "\r" not in ex["output"]
            )
            assert ex["input"].startswith("Your code should pass these tests:")


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name", ["sql_create_context/spider_intersect_val_executable.jsonl", "spider/dev_14db.jsonl"]
)
def test_real_db_ids_resolve(shared_data, name):
    examples = load_file(shared_data / name, "sql", db_dir=shared_data / "spider" / "database")
    assert len({ex["db_path"] for ex in examples}) == 14
    assert all(Path(ex["db_path"]).is_file() for ex in examples)


@pytest.mark.shared_data
def test_real_split_keeps_duplicate_questions_out_of_test(shared_data):
    splits = load_splits(
        DataConfig(source=str(shared_data / "sql_create_context" / "spider_intersect_val.jsonl"))
    )
    train = {(ex["question"], ex["context"]) for ex in splits["train"]}
    assert splits["test"] and not any((ex["question"], ex["context"]) in train for ex in splits["test"])


# --------------------------------------------------------------------------------------------- benchmarks


def test_defog_alternatives_and_categories(tmp_path):
    db = tmp_path / "shop.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE item (id INTEGER, name TEXT)").connection.close()
    write_csv(tmp_path / "q.csv", [
        {"db_name": "shop", "query_category": "join", "question": "Items?",
         "query": "SELECT id FROM item;SELECT name FROM item WHERE name = 'a;b';SELECT id, name FROM item;"},
        {"db_name": "shop", "query_category": "where", "question": "One?", "query": "SELECT 1 FROM item"},
        {"db_name": "elsewhere", "query_category": "where", "question": "No db", "query": "SELECT 1"},
    ])
    raises(["elsewhere"], load_file, tmp_path / "q.csv", "sql", db_dir=tmp_path)
    first, second = load_file(tmp_path / "q.csv", "sql", db_dir=tmp_path, skip_missing_db=True)
    assert first["answer"] == "SELECT id FROM item" and first["category"] == "join"
    assert first["alternatives"] == ["SELECT id FROM item", "SELECT name FROM item WHERE name = 'a;b'",
                                      "SELECT id, name FROM item"]
    assert "alternatives" not in second and second["category"] == "where"


def test_bird_style_records(tmp_path):
    rows = [{"question": "Oldest?", "evidence": "oldest refers to MAX(age)", "db_id": "x",
             "SQL": "SELECT MAX(age) FROM t", "difficulty": "simple", "context": "CREATE TABLE t (age INT)"}]
    (example,) = load_file(write_jsonl(tmp_path / "bird.jsonl", rows), "sql")
    assert example["answer"] == "SELECT MAX(age) FROM t" and example["category"] == "simple"
    assert example["question"] == "Oldest?\nHint: oldest refers to MAX(age)"


HUMANEVAL_ROW = {"task_id": "HumanEval/0", "prompt": "def add(a, b):\n    \"\"\"Sum.\"\"\"\n",
                 "canonical_solution": "    return a + b\n", "entry_point": "add",
                 "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}


def test_humaneval_loads_as_its_harness_runs_it(tmp_path):
    (example,) = load_file(write_jsonl(tmp_path / "he.jsonl", [HUMANEVAL_ROW]), "code")
    assert example["tests"] == ["check(add)"] and example["setup"] == HUMANEVAL_ROW["test"]
    assert example["output"] == HUMANEVAL_ROW["prompt"] + HUMANEVAL_ROW["canonical_solution"]
    assert example["input"] == HUMANEVAL_ROW["prompt"] and example["entry_point"] == "add"


def test_tests_that_never_run_anything_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "he.jsonl", [HUMANEVAL_ROW])
    columns = {"instruction": "prompt", "output": "canonical_solution", "tests": "test"}
    raises(["line 1", "never run anything", "check", "entry_point"], load_file, path, "code", columns=columns)


def test_mbpp_official_splits(tmp_path):
    rows = [{"task_id": i, "text": f"Task {i}", "code": f"def f{i}():\n    return {i}",
             "test_list": [f"assert f{i}() == {i}"], "test_setup_code": ""} for i in range(1, 975)]
    splits = load_splits(DataConfig(task="code", source=str(write_jsonl(tmp_path / "mbpp.jsonl", rows))))
    sizes = {name: len(rows) for name, rows in splits.items()}
    assert sizes == {"train": 374, "dev": 90, "test": 500, "prompt": 10}
    assert splits["test"][0]["instruction"] == "Task 11" and splits["dev"][0]["instruction"] == "Task 511"
    assert {ex["instruction"] for ex in splits["train"]} == {f"Task {i}" for i in range(601, 975)}


def test_widened_training_schemas_hold_the_gold_tables_with_all_their_known_columns_and_k_others():
    from shared.data.loaders import _columns, _statements, widen_schemas

    train = [
        {"question": "q1", "context": "CREATE TABLE head (age INTEGER)", "answer": "SELECT COUNT(*) FROM head WHERE age > 56"},
        {"question": "q2", "context": "CREATE TABLE head (name VARCHAR, Age INTEGER); CREATE TABLE dept (id VARCHAR)",
         "answer": "SELECT name FROM head"},
        {"question": "q3", "context": "CREATE TABLE singer (name VARCHAR)", "answer": "SELECT name FROM singer"},
        {"question": "q4", "context": "CREATE TABLE stadium (capacity INTEGER)", "answer": "SELECT MAX(capacity) FROM stadium"},
        {"question": "q5", "context": "CREATE TABLE t (a INT)", "answer": "SELECT a FROM t", "db_path": "/x.sqlite"},
    ]
    wide = widen_schemas(train, 2, seed=0)
    assert wide[4] is train[4]  # a record with its own database keeps its schema
    first = {_columns(s)[0]: [c for c, _ in _columns(s)[1]] for s in _statements(wide[0]["context"])}
    assert first["head"] == ["age", "name"]  # every column known for `head`, Age and age being one (SQLite's case)
    assert len(first) == 3 and "head" in first  # its own table and 2 others
    assert [e["question"] for e in wide] == [e["question"] for e in train] and wide[0]["answer"] == train[0]["answer"]
    assert widen_schemas(train, 2, seed=0) == wide and widen_schemas(train, 2, seed=1) != wide  # by seed
    assert train[0]["context"] == "CREATE TABLE head (age INTEGER)"  # the input is not changed


def test_widen_schemas_changes_training_data_only(tmp_path):
    import json

    from shared.config import DataConfig
    from shared.data.loaders import load_splits

    rows = [{"question": f"q{i}", "context": f"CREATE TABLE t{i} (c{i} INTEGER)", "answer": f"SELECT c{i} FROM t{i}"}
            for i in range(30)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[20:]))
    splits = load_splits(DataConfig(task="sql", source=str(tmp_path), train_file="train.jsonl", dev_file="dev.jsonl",
                                    widen_schemas=3))
    assert all(e["context"].count("CREATE TABLE") == 4 for e in splits["train"])
    assert [e["context"] for e in splits["dev"]] == [r["context"] for r in rows[20:]]
