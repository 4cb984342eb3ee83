"""Runs model-written SQL against SQLite, and compares results.

    from shared.execution.sql import run_query, results_match, has_order_by
    gold, pred = run_query(db, gold_sql), run_query(db, predicted_sql)
    correct = pred.ok and gold.ok and results_match(pred.rows, gold.rows, ordered=has_order_by(gold_sql))

What reaches SQLite is exactly one read-only query, checked by four independent layers:
1. sqlglot (sqlite dialect) must parse the text as exactly one statement, a SELECT / UNION / INTERSECT /
   EXCEPT (with or without WITH), with no write, DDL, ATTACH or PRAGMA node anywhere inside it and no call
   to a denied function (`load_extension`, ...). Anything else is refused with a reason and never run.
2. The database is opened read-only through a URI (`mode=ro&immutable=1`): SQLite itself refuses writes.
   `immutable=1` also skips file locking and never creates -journal/-wal/-shm files, so the file is
   byte-identical afterwards; that is right only because evaluation databases do not change while read.
3. An authorizer allows SELECT, READ, FUNCTION (minus the denied names) and RECURSIVE, and denies every
   other action (ATTACH, PRAGMA, any write or schema change) while the statement is prepared.
4. `sqlite3.Cursor.execute` runs one statement only and raises on trailing SQL; extensions stay disabled.

Each call opens its own connection ("a fresh read-only SQLite per example"): no state, temp table or
cache survives from one query to the next, so results cannot depend on evaluation order.

Limits: `timeout_s` of wall time, enforced by a progress handler checked every 1000 SQLite VM steps (an
endless recursive CTE or a huge cross join comes back as "timeout"); `max_rows` rows (more is a failure,
not a truncation, since a truncated result could match by accident); 1 MB per value and 64 MB per result,
so a query cannot fill the memory of the process that evaluates it (often a training worker).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

DIALECT = "sqlite"
# Functions that touch files or the process; the Python sqlite3 module defines none but load_extension,
# the others are sqlite3-shell functions, denied by name in case a build links them in.
DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
MAX_VALUE_BYTES = 1_000_000  # SQLITE_LIMIT_LENGTH: the longest string or blob a query may build
MAX_RESULT_BYTES = 64_000_000  # text and blob bytes of a whole result
_PROGRESS_STEPS = 1000  # VM instructions between deadline checks: ~tens of microseconds

_QUERY_TYPES = (exp.Select, exp.Union, exp.Intersect, exp.Except)
# Nodes that must not occur anywhere inside an accepted query (SQLite would refuse most of them inside a
# SELECT anyway; sqlglot parses e.g. `WITH x AS (DELETE ... RETURNING *) SELECT ...`).
_FORBIDDEN_NODES = (
    exp.Insert, exp.Update, exp.Delete, exp.Drop, exp.Create, exp.Alter, exp.Command, exp.Pragma,
    exp.Attach, exp.Detach, exp.Merge, exp.Transaction, exp.Commit, exp.Rollback, exp.Set, exp.Use,
)
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})


@dataclass
class SqlResult:
    ok: bool
    rows: list[tuple] | None
    error: str | None


def check_read_only_query(sql: str) -> str | None:
    """Why `sql` may not run (a short reason), or None when it is exactly one read-only query."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except SqlglotError as e:
        return f"does not parse: {_first_line(str(e))}"
    if len(statements) != 1:
        return f"expected exactly one statement, got {len(statements)}"
    query = _unwrap(statements[0])
    if not isinstance(query, _QUERY_TYPES):
        return f"not a query: {type(query).__name__} statement"
    for node in query.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            return f"{type(node).__name__} inside a query"
        if isinstance(node, exp.Func) and _function_name(node) in DENIED_FUNCTIONS:
            return f"function {_function_name(node)}() is not allowed"
    return None


def run_query(db_path: str | Path, sql: str, timeout_s: float = 2.0, max_rows: int = 10_000) -> SqlResult:
    """Runs one checked read-only query on a fresh read-only connection; never raises for bad SQL."""
    reason = check_read_only_query(sql)
    if reason is not None:
        return SqlResult(False, None, f"refused: {reason}")
    try:
        conn = _connect_read_only(db_path)
    except sqlite3.Error as e:
        return SqlResult(False, None, f"cannot open {db_path}: {e}")
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    try:
        cursor = conn.execute(sql)
        rows = _fetch_capped(cursor, max_rows)
    except sqlite3.OperationalError as e:
        if str(e) == "interrupted":
            return SqlResult(False, None, f"timeout after {timeout_s:g} s")
        return SqlResult(False, None, f"sqlite: {e}")
    except _ResultTooLarge as e:
        return SqlResult(False, None, str(e))
    except (sqlite3.Error, ValueError, OverflowError) as e:
        return SqlResult(False, None, f"sqlite: {e}")
    finally:
        conn.close()
    return SqlResult(True, rows, None)


def results_match(pred_rows: list[tuple], gold_rows: list[tuple], ordered: bool) -> bool:
    """Same rows (values normalized), as a sequence when `ordered`, else as a multiset.

    Column order matters (rows are compared as tuples); column names do not.
    """
    pred = [normalize_row(r) for r in pred_rows]
    gold = [normalize_row(r) for r in gold_rows]
    return pred == gold if ordered else Counter(pred) == Counter(gold)


def normalize_row(row: tuple) -> tuple:
    return tuple(normalize_value(v) for v in row)


def normalize_value(value):
    """Floats equal to an int become that int (3.0 == 3); other floats keep 6 significant digits, so
    AVG() computed in a different order still compares equal. Text, blobs and NULL are left as they are."""
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
            return int(value)
        return float(f"{value:.6g}") if math.isfinite(value) else value
    return value


def has_order_by(sql: str) -> bool:
    """True when the query's outermost statement has ORDER BY (the gold's row order is then part of it)."""
    try:
        statement = sqlglot.parse_one(sql, read=DIALECT)
    except SqlglotError:
        return False
    return _unwrap(statement).args.get("order") is not None


def normalize_sql(sql: str) -> str:
    """Canonical text for exact match: sqlglot's sqlite rendering, unquoted identifiers lower-cased,
    comments dropped. Text sqlglot cannot parse is lower-cased with whitespace collapsed."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
        return "; ".join(
            s.sql(dialect=DIALECT, normalize=True, pretty=False, comments=False) for s in statements
        )
    except SqlglotError:
        return " ".join(sql.lower().strip().rstrip(";").split())


def schema_db(context: str) -> Path:
    """An empty SQLite database built from CREATE TABLE statements (e.g. b-mc2/sql-create-context's
    `context`), for data without a real database. Cached per process by the context's hash.

    Only CREATE TABLE statements (not CREATE TABLE ... AS SELECT) are accepted, and what runs is sqlglot's
    rendering of what it parsed, under an authorizer that allows table creation only. Raises ValueError
    naming the offending statement otherwise.
    """
    key = hashlib.sha256(context.encode()).hexdigest()[:24]
    path = Path(_schema_dir().name) / f"{key}.sqlite"
    if path.exists():
        return path
    ddl = create_table_statements(context)
    partial = path.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}.partial")
    conn = sqlite3.connect(partial)
    try:
        conn.execute("PRAGMA journal_mode=OFF")  # a half-built file is thrown away, never recovered
        conn.execute("PRAGMA synchronous=OFF")  # no fsync per statement: 14 ms -> <1 ms per schema
        conn.set_authorizer(_ddl_authorizer)
        for statement in ddl:
            conn.execute(statement)
        conn.commit()
    except sqlite3.Error as e:
        partial.unlink(missing_ok=True)
        raise ValueError(f"schema does not build in SQLite: {e}") from e
    finally:
        conn.close()
    os.replace(partial, path)  # atomic: two threads building the same schema both end with a whole file
    return path


# ----------------------------------------------------------------------------------------------- helpers


class _ResultTooLarge(Exception):
    pass


def _connect_read_only(db_path: str | Path) -> sqlite3.Connection:
    path = Path(db_path).resolve()
    if not path.is_file():
        raise sqlite3.OperationalError("no such database file")
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None)
    if hasattr(conn, "enable_load_extension"):  # absent where Python was built without extension support
        conn.enable_load_extension(False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_query_authorizer)
    return conn


def _query_authorizer(action, arg1, arg2, db_name, trigger):
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_sequence"})


def _ddl_authorizer(action, arg1, arg2, db_name, trigger):
    """CREATE TABLE writes its row into sqlite_master and may create the automatic index of a UNIQUE or
    PRIMARY KEY constraint; nothing else is allowed."""
    if action in (sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_READ):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_CREATE_INDEX and (arg1 or "").startswith("sqlite_autoindex_"):
        return sqlite3.SQLITE_OK
    if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE) and arg1 in _SCHEMA_TABLES:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def create_table_statements(context: str) -> list[str]:
    """The CREATE TABLE statements of a context, one per table. b-mc2/sql-create-context often repeats a
    table (once per alias of a self-join) or a column; those are merged, first definition winning, as
    SQLite would refuse the second."""
    try:
        statements = [s for s in sqlglot.parse(context, read=DIALECT) if s is not None]
    except SqlglotError as e:
        raise ValueError(f"schema does not parse: {_first_line(str(e))}") from e
    if not statements:
        raise ValueError("schema has no CREATE TABLE statement")
    tables: dict[str, exp.Create] = {}
    for s in statements:
        if not (isinstance(s, exp.Create) and s.kind == "TABLE" and isinstance(s.this, exp.Schema)):
            raise ValueError(f"schema may only hold CREATE TABLE statements, got: {s.sql(DIALECT)[:80]}")
        if s.expression is not None:
            raise ValueError(f"schema may not hold CREATE TABLE ... AS, got: {s.sql(DIALECT)[:80]}")
        name = s.this.this.name.lower()
        repeated = name in tables
        table = tables.setdefault(name, s.copy())
        parts, seen = [], set()
        for part in table.this.expressions + (s.this.expressions if repeated else []):
            if isinstance(part, exp.ColumnDef):
                if part.name.lower() in seen:
                    continue
                seen.add(part.name.lower())
            elif repeated and part.parent is s.this:
                continue  # a repeated table's constraints (a second PRIMARY KEY) would not build
            parts.append(part.copy())
        table.this.set("expressions", parts)
    return [t.sql(dialect=DIALECT) for t in tables.values()]


@functools.cache
def _schema_dir() -> tempfile.TemporaryDirectory:
    """One private temp folder per process (removed at exit): nobody else can plant files in it."""
    return tempfile.TemporaryDirectory(prefix="sql-schema-")


def _fetch_capped(cursor: sqlite3.Cursor, max_rows: int) -> list[tuple]:
    rows: list[tuple] = []
    size = 0
    while True:
        chunk = cursor.fetchmany(min(1000, max_rows + 1 - len(rows)))
        if not chunk:
            return rows
        rows.extend(chunk)
        if len(rows) > max_rows:
            raise _ResultTooLarge(f"too many rows (more than {max_rows})")
        size += sum(len(v) for row in chunk for v in row if isinstance(v, (str, bytes)))
        if size > MAX_RESULT_BYTES:
            raise _ResultTooLarge(f"result too large (more than {MAX_RESULT_BYTES} bytes of text)")


def _unwrap(node: exp.Expression) -> exp.Expression:
    """`(SELECT ...)` at the top level is the SELECT inside it."""
    while isinstance(node, exp.Subquery):
        node = node.this
    return node


def _function_name(node: exp.Func) -> str:
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else text
