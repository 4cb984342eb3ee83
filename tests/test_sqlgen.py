"""The bundled SQL data keeps its held-out schemas out of training, and names made up for training are usable."""

from __future__ import annotations

import random
import re
import sqlite3

import pytest

from shared.data import sqlgen
from shared.execution.sql import create_table_statements

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def identifiers(context: str) -> set[str]:
    """Table and column names declared by CREATE TABLE text."""
    names = set()
    for statement in create_table_statements(context):
        table, body = re.match(r"CREATE TABLE (\w+) \((.*)\)", statement, re.S).groups()
        names |= {table} | {part.split()[0] for part in body.split(",") if not part.strip().startswith(("FOREIGN", "("))}
    return {n.strip().lower() for n in names}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return sqlgen.bundled_sql_splits(0, root=tmp_path_factory.mktemp("sqlgen"))


def test_held_out_names_are_never_training_schema_names(splits):
    held_out = sqlgen.held_out_names()
    assert {"wards", "patients", "airlines", "flights", "blood_group", "fleet_size"} <= held_out
    trained = {n for name in ("train", "dev", "test") for ex in splits[name] for n in identifiers(ex["context"])}
    assert len({ex["db_id"] for ex in splits["train"]}) >= sqlgen.N_COMPOSED, "hundreds of training schemas"
    assert not trained & held_out
    unseen = {n for ex in splits["test_unseen"] for n in identifiers(ex["context"])} - {"id", "ward_id", "airline_id"}
    assert unseen <= held_out, "every held-out name is covered by held_out_names"


def test_pretraining_documents_and_drills_never_use_a_held_out_name():
    rng = random.Random(3)
    docs = sqlgen.pretrain_documents(rng, 300) + sqlgen.recall_documents(rng, 300)
    words = {w.lower() for doc in docs for w in WORD.findall(doc)}
    assert not words & sqlgen.held_out_names()
    # and the made-up names are there: no short list of familiar ones
    assert len(words & set(sqlgen.name_vocabulary())) > 500


def test_vocabulary_names_run_in_sqlite_and_parse_in_the_scorer():
    vocab = sqlgen.name_vocabulary()
    assert len(vocab) > 1000
    assert "select" not in vocab and "exclude" not in vocab  # SQLite takes `exclude`; sqlglot does not parse it
    rng = random.Random(0)
    for _ in range(40):
        db = sqlgen.random_database(rng, novel=1.0)
        sqlgen.populate(db, rng)
        con = sqlite3.connect(":memory:")
        con.executescript(db.ddl())
        create_table_statements(db.ddl())  # parses
        for _, sql in sqlgen.questions(db, rng):
            con.execute(sql)
        con.close()


def test_synthesized_rows_answer_the_questions(tmp_path):
    """Composed schemas with rows from the test-database synthesizer: the questions' values come from those rows,
    and each gold query returns rows (examples_for runs them)."""
    rng = random.Random(5)
    kept = 0
    for i in range(6):
        db = sqlgen.random_database(rng)
        path = tmp_path / f"db{i}.sqlite"
        if not sqlgen.populate_synthesized(db, path, seed=2 * i):
            assert not path.exists()
            continue
        kept += 1
        rows = sqlite3.connect(path).execute(f"SELECT COUNT(*) FROM {db.child.name}").fetchone()[0]
        assert rows == len(db.rows[db.child.name]) >= 4
        examples = sqlgen.examples_for(db, path, rng, 20)
        assert len(examples) >= 20
        values = {str(v) for t in db.tables for r in db.rows[t.name] for v in r.values()}
        quoted = [v for ex in examples for v in re.findall(r"'([^']*)'", ex["answer"])]
        assert quoted and all(v.replace("''", "'") in values for v in quoted)
    assert kept >= 4
