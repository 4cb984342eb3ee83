"""SQL execution: only one read-only query ever runs, limits hold, and results compare as they should."""

import hashlib
import sqlite3
import time

import pytest

from shared.config import EvalConfig
from shared.execution import sql as sqlexec
from shared.execution.sql import (
    check_read_only_query,
    has_order_by,
    normalize_sql,
    results_match,
    run_query,
    schema_db,
)
from shared.tasks import get_task
from shared.tasks.sql import SqlTask


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path):
    """A small database; after the test, the file must be byte-identical and alone in its folder."""
    path = tmp_path / "concert.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, age INTEGER, rating REAL);"
        "CREATE TABLE numbers (n INTEGER);"
    )
    conn.executemany(
        "INSERT INTO singer VALUES (?, ?, ?, ?)",
        [(1, "Ann", 30, 4.5), (2, "Bob", 25, 3.25), (3, "Cid", 41, 4.5), (4, "Dee", 25, None)],
    )
    conn.executemany("INSERT INTO numbers VALUES (?)", [(i,) for i in range(1000)])
    conn.commit()
    conn.close()
    before = _digest(path)
    yield path
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["concert.sqlite"]


def test_a_query_runs_and_returns_rows(db):
    result = run_query(db, "SELECT name FROM singer WHERE age = 25 ORDER BY name")
    assert (result.ok, result.rows, result.error) == (True, [("Bob",), ("Dee",)], None)


def test_sqlite_errors_come_back_as_failures(db):
    result = run_query(db, "SELECT no_such_column FROM singer")
    assert not result.ok and "no such column" in result.error
    missing = run_query(db.parent / "missing.sqlite", "SELECT 1")
    assert not missing.ok and "cannot open" in missing.error


ATTACKS = [
    "DROP TABLE singer",
    "DELETE FROM singer",
    "INSERT INTO singer VALUES (9, 'Eve', 1, 1.0)",
    "UPDATE singer SET age = 0",
    "REPLACE INTO singer VALUES (1, 'Eve', 1, 1.0)",
    "SELECT 1; DROP TABLE singer",
    "SELECT * FROM singer; DELETE FROM singer",
    "ATTACH DATABASE '{dir}/evil.sqlite' AS evil",
    "SELECT 1; ATTACH DATABASE '{dir}/evil.sqlite' AS evil",
    "PRAGMA writable_schema = ON",
    "PRAGMA table_info(singer)",
    "SELECT load_extension('/tmp/x.so')",
    "SELECT name, LOAD_EXTENSION('x') FROM singer",
    "VACUUM",
    "VACUUM INTO '{dir}/copy.sqlite'",
    "CREATE TABLE t (x)",
    "CREATE TRIGGER t AFTER INSERT ON singer BEGIN DELETE FROM singer; END",
    "WITH gone AS (DELETE FROM singer RETURNING *) SELECT * FROM gone",
    "BEGIN; DELETE FROM singer; COMMIT",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_anything_but_one_query_is_refused_and_never_run(db, attack):
    attack = attack.format(dir=db.parent)
    assert check_read_only_query(attack) is not None
    result = run_query(db, attack)
    assert not result.ok and result.error.startswith("refused:")
    assert run_query(db, "SELECT count(*) FROM singer").rows == [(4,)]


@pytest.mark.parametrize(
    "statement",
    ["DELETE FROM singer", "ATTACH DATABASE '{dir}/evil.sqlite' AS evil", "PRAGMA writable_schema = ON",
     "CREATE TABLE t (x)", "SELECT load_extension('x')"],
)
def test_sqlite_layers_refuse_on_their_own(db, statement):
    # Past the parser: the read-only, authorized connection that run_query uses still refuses.
    conn = sqlexec._connect_read_only(db)
    try:
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(statement.format(dir=db.parent))
    finally:
        conn.close()


def test_endless_recursive_cte_stops(db):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
    start = time.monotonic()
    capped = run_query(db, endless, timeout_s=1.0, max_rows=10_000)
    counted = run_query(db, endless.replace("SELECT x FROM c", "SELECT count(*) FROM c"), timeout_s=1.0)
    assert not capped.ok and capped.error.startswith("too many rows")
    assert not counted.ok and counted.error.startswith("timeout")
    assert time.monotonic() - start < 1.0 + 2.0


def test_huge_cross_join_times_out(db):
    start = time.monotonic()
    result = run_query(db, "SELECT count(*) FROM numbers a, numbers b, numbers c", timeout_s=0.5)
    assert not result.ok and result.error.startswith("timeout")
    assert time.monotonic() - start < 0.5 + 1.5


def test_row_cap_is_a_failure_not_a_truncation(db):
    assert run_query(db, "SELECT n FROM numbers", max_rows=1000).ok
    result = run_query(db, "SELECT n FROM numbers", max_rows=999)
    assert not result.ok and "too many rows" in result.error


def test_giant_values_are_refused(db):
    result = run_query(db, "SELECT randomblob(200000000)")
    assert not result.ok and "too big" in result.error


# ------------------------------------------------------------------------------------------ comparison


def test_results_compare_as_multisets_unless_ordered():
    assert results_match([(1,), (2,), (2,)], [(2,), (1,), (2,)], ordered=False)
    assert not results_match([(1,), (2,)], [(1,), (2,), (2,)], ordered=False)  # multiplicity counts
    assert not results_match([(2,), (1,)], [(1,), (2,)], ordered=True)
    assert results_match([(1,), (2,)], [(1,), (2,)], ordered=True)
    assert not results_match([(1, "a")], [("a", 1)], ordered=False)  # column order counts


def test_values_are_normalized():
    assert results_match([(0.1 + 0.2,)], [(0.3,)], ordered=True)
    assert results_match([(3.0,)], [(3,)], ordered=True)
    assert results_match([(2.0 / 3.0,)], [(0.666667,)], ordered=True)
    assert not results_match([(1.5,)], [(1.6,)], ordered=True)
    assert not results_match([("1",)], [(1,)], ordered=True)
    assert results_match([(None, "x")], [(None, "x")], ordered=True)


def test_order_by_is_detected_at_the_top_level_only():
    assert has_order_by("SELECT name FROM singer ORDER BY age")
    assert has_order_by("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1")
    assert not has_order_by("SELECT name FROM (SELECT name FROM singer ORDER BY age)")
    assert not has_order_by("SELECT count(*) FROM singer")


def test_normalize_sql():
    a = normalize_sql("select T1.Name  from Singer as T1\n order by t1.age;")
    assert a == normalize_sql("SELECT t1.name FROM singer AS t1 ORDER BY t1.age")
    assert a != normalize_sql("SELECT t1.name FROM singer AS t1 ORDER BY t1.age DESC")
    # Unparseable text: lower-cased, whitespace collapsed.
    assert normalize_sql("SELEC  Name FRM") == "selec name frm"


# -------------------------------------------------------------------------------------------- schema_db


def test_schema_db_builds_empty_tables_from_create_table_context():
    context = "CREATE TABLE head (age INTEGER, name VARCHAR); CREATE TABLE head (head_id INTEGER, Age INT)"
    path = schema_db(context)  # b-mc2 repeats a table per alias; the columns are merged
    assert run_query(path, "SELECT count(*) FROM head WHERE age > 56 AND head_id = 1").rows == [(0,)]
    assert schema_db(context) == path  # cached


@pytest.mark.parametrize(
    "context",
    [
        "CREATE TABLE a (x INTEGER); DROP TABLE a",
        "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1)",
        "CREATE TABLE a AS SELECT 1 AS x",
        "CREATE VIEW v AS SELECT 1",
        "ATTACH DATABASE '/tmp/evil.sqlite' AS evil",
        "CREATE TABLE a (x); CREATE TRIGGER t AFTER INSERT ON a BEGIN DELETE FROM a; END",
        "PRAGMA writable_schema = ON",
        "",
    ],
)
def test_schema_db_refuses_anything_but_create_table(context):
    with pytest.raises(ValueError):
        schema_db(context)


# ---------------------------------------------------------------------------------------------- SqlTask


def _example(db, answer):
    return {"question": "?", "context": "", "answer": answer, "db_path": str(db)}


def test_sql_task_scores_by_execution(db):
    task = get_task("sql")
    assert isinstance(task, SqlTask) and task.metric == "eval/sql_exec_acc"
    example = _example(db, "SELECT name FROM singer WHERE age = 25")
    same = task.score_one("select NAME from singer where age=25", example)
    assert same == {"correct": True, "exact_match": True, "executed": True, "error": None}
    other_query_same_rows = task.score_one("SELECT name FROM singer WHERE age < 26", example)
    assert other_query_same_rows["correct"] and not other_query_same_rows["exact_match"]
    assert not task.score_one("SELECT name FROM singer WHERE age = 25 LIMIT 0", example)["correct"]
    assert not task.score_one("DROP TABLE singer", example)["executed"]


def test_sql_task_takes_its_limits_from_the_eval_config():
    task = get_task("sql", EvalConfig(sql_timeout_s=0.5, sql_max_rows=7))
    assert (task.timeout_s, task.max_rows) == (0.5, 7)
    assert get_task("sql", EvalConfig(), max_rows=3).max_rows == 3
    with pytest.raises(ValueError):
        get_task("sql-but-misspelled")


def test_sql_task_respects_order_only_when_the_gold_orders(db):
    task = SqlTask()
    ordered = _example(db, "SELECT name FROM singer ORDER BY age, name")
    unordered = _example(db, "SELECT name FROM singer")
    reversed_order = "SELECT name FROM singer ORDER BY age DESC, name DESC"
    assert not task.score_one(reversed_order, ordered)["correct"]
    assert task.score_one(reversed_order, unordered)["correct"]


def test_sql_task_counts_a_failing_gold_as_incorrect(db):
    result = SqlTask().score_one("SELECT 1", _example(db, "SELECT nope FROM singer"))
    assert not result["correct"] and result["error"].startswith("gold failed")


def test_sql_task_without_database_uses_the_schema():
    example = {"question": "?", "context": "CREATE TABLE head (age INTEGER)",
               "answer": "SELECT count(*) FROM head"}
    task = SqlTask()
    assert task.score_one("SELECT COUNT(*) FROM head", example)["correct"]
    assert not task.score_one("SELECT count(*) FROM nowhere", example)["executed"]


def test_sql_task_score_aggregates(db):
    examples = [_example(db, "SELECT count(*) FROM singer"), _example(db, "SELECT max(age) FROM singer")]
    metrics = SqlTask().score(["SELECT count(*) FROM singer", "SELECT min(age) FROM singer"], examples)
    assert metrics == {"eval/sql_exec_acc": 0.5, "eval/sql_exec_acc_spider": 0.5, "eval/sql_exact_match": 0.5,
                       "eval/sql_valid_rate": 1.0}
    strict = SqlTask(match="strict").score(["SELECT count(*) FROM singer", "SELECT min(age) FROM singer"], examples)
    assert strict["eval/sql_exec_acc_strict"] == 0.5 and "eval/sql_exec_acc_spider" not in strict
    with pytest.raises(ValueError):
        SqlTask().score(["SELECT 1"], examples)
