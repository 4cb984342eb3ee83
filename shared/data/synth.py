"""Populated SQLite test databases synthesized from CREATE TABLE statements, for SQL data that comes with
a schema and no database (b-mc2/sql-create-context and its like).

    from shared.data.synth import populated_databases, synthesize_database
    dbs = populated_databases(context, gold_sql, question)       # k = 3 paths, cached by schema and literals
    path = synthesize_database(context, "x.sqlite", seed=7)  # one database, no hints

A prediction is scored correct only when it matches the gold on every database (the idea of distilled test
suites: Zhong, Yu and Klein, EMNLP 2020). What makes the databases tell near-misses apart:
- the gold's and the question's literals are seeded into the columns they are compared with, with their
  neighbours (v - 1, v + 1 for a number), so a changed constant or a dropped condition changes the result;
- each column draws from a small pool of values of its own (text values carry the column's name), so
  values repeat (COUNT vs COUNT(DISTINCT)) and another column gives other values;
- columns joined in the gold, declared as foreign keys, or named alike share one pool of small integers
  or words, so joins return rows;
- the gold must return rows (not only NULL or 0) on at least one database; otherwise more seeds are tried
  (up to 4 x k), and the last try is kept.
Everything is deterministic by seed. Types follow the declared type (INT/REAL/NUMERIC/DATE/...), and an
untyped or VARCHAR column compared with numbers in the gold gets numbers. Limits: values never satisfy
a complex predicate on purpose (a LIKE pattern gets one matching value; functions of columns are not
solved), so a gold can need the retry above; tables get 4 to 12 rows.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sqlite3
import tempfile
import time
from functools import cache
from pathlib import Path

ROWS = (4, 12)  # rows per table, drawn per database
K_DATABASES = 3
_NUMERIC_TYPES = ("INT", "REAL", "NUM", "DEC", "FLOAT", "DOUBLE")
_DATE_TYPES = ("DATE", "TIME")
_ID = re.compile(r"(^id$|_?id$|^id_|code$|_no$)", re.IGNORECASE)
_CACHE: dict[str, list[Path]] = {}


def populated_databases(context: str, gold_sql: str = "", question: str = "", k: int = K_DATABASES,
                   seed: int = 0) -> list[Path]:
    """k populated databases for one example, the gold returning rows on at least one of them (when it can
    run at all). Cached per process by (schema, literals, joins, k, seed). Raises ValueError when the
    schema does not build."""
    from shared.execution.sql import create_table_statements

    columns = {c.lower() for s in create_table_statements(context) for c, _ in _table_columns(s)[1]}
    hints = query_hints(gold_sql, question, columns)
    key = hashlib.sha256(repr((context, hints, k, seed)).encode()).hexdigest()[:24]
    if key in _CACHE and all(p.exists() for p in _CACHE[key]):
        return _CACHE[key]
    folder = Path(_cache_dir().name)
    paths = [synthesize_database(context, folder / f"{key}-{i}.sqlite", seed=_seed(seed, i), hints=hints)
             for i in range(k)]
    if gold_sql and not any(_returns_rows(p, gold_sql) for p in paths):
        for attempt in range(k, 4 * k):
            extra = synthesize_database(context, folder / f"{key}-try{attempt}.sqlite",
                                        seed=_seed(seed, attempt), hints=hints)
            paths[-1] = extra
            if _returns_rows(extra, gold_sql):
                break
    _CACHE[key] = paths
    return paths


def synthesize_database(context: str, path: str | Path, *, seed: int = 0, hints: dict | None = None,
                        rows: tuple[int, int] = ROWS) -> Path:
    """One SQLite file at `path` with the tables of `context` (CREATE TABLE statements only), filled with
    values of the declared types; `hints` (query_hints) seeds literals and shared join pools."""
    from shared.execution.sql import create_table_statements

    hints = hints or {"literals": {}, "loose": [], "joins": []}
    statements = create_table_statements(context)
    tables = [_table_columns(s) for s in statements]
    rng = random.Random(seed)
    domains = _domains(tables, hints["joins"])
    pools = {d: _pool(rng, d, members, hints) for d, members in _domain_members(tables, domains).items()}
    path = Path(path)
    partial = path.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}.partial")
    conn = sqlite3.connect(partial)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        for statement, (table, columns, _) in zip(statements, tables, strict=True):
            conn.execute(statement)
            if not columns:
                continue
            n = rng.randint(*rows)
            names = ", ".join(f'"{c}"' for c, _ in columns)
            marks = ", ".join("?" for _ in columns)
            for _ in range(n):
                row = [_draw(rng, pools[domains[c.lower()]], dense=seed % 2 == 0, nullable=seed % 2 == 1)
                       for c, _ in columns]
                conn.execute(f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({marks})', row)
        conn.commit()
    except sqlite3.Error as e:
        partial.unlink(missing_ok=True)
        raise ValueError(f"schema does not build in SQLite: {e}") from e
    finally:
        conn.close()
    os.replace(partial, path)
    return path


def query_hints(sql: str, question: str = "", columns: set[str] | None = None) -> dict:
    """What the gold and the question say about the data: {"literals": {column (lower case): [values]},
    "loose": [values tied to no column], "joins": [(column, column)] equated in the gold}. With the schema's
    `columns`, a double-quoted name that is no column is the string SQLite takes it for (Spider writes
    `country = "USA"`)."""
    from sqlglot import exp

    from shared.execution.sql import parse_sql

    literals: dict[str, list] = {}
    loose: list = [v for v in _question_values(question)]
    joins: list[tuple[str, str]] = []
    try:
        statements = parse_sql(sql) if sql else []
    except ValueError:
        statements = []
    comparisons = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.In,
                   exp.Between, exp.Glob)
    tied: set[int] = set()
    for statement in statements:
        for node in statement.walk():
            if not isinstance(node, comparisons):
                continue
            operands = list(node.iter_expressions())
            values = [v for v in operands if _literal(v) is not None or _quoted_text(v, columns)]
            cols = [c for c in operands if isinstance(c, exp.Column) and not _quoted_text(c, columns)]
            values += [v for part in node.args.get("expressions") or [] if _literal(v := part) is not None]
            if isinstance(node, exp.Between):
                values += [node.args[k] for k in ("low", "high") if _literal(node.args.get(k)) is not None]
            if len(cols) == 2 and isinstance(node, exp.EQ):
                joins.append((cols[0].name.lower(), cols[1].name.lower()))
            for column in cols[:1]:
                for v in values:
                    value = _literal(v) if _literal(v) is not None else v.name
                    if isinstance(node, (exp.Like, exp.ILike)) and isinstance(value, str):
                        value = _like_example(value)
                    literals.setdefault(column.name.lower(), []).append(value)
                    tied.add(id(v))
        for node in statement.find_all(exp.Literal):
            if id(node) not in tied and _literal(node) is not None:
                loose.append(_literal(node))
    return {"literals": {k: list(dict.fromkeys(v)) for k, v in literals.items()},
            "loose": list(dict.fromkeys(loose)), "joins": list(dict.fromkeys(joins))}


# --------------------------------------------------------------------------------------------- helpers


def _seed(seed: int, i: int) -> int:
    return seed * 1_000_003 + i


@cache
def _cache_dir() -> tempfile.TemporaryDirectory:
    """One private temp folder per process (removed at exit)."""
    return tempfile.TemporaryDirectory(prefix="sql-synth-")


def _returns_rows(path: Path, sql: str) -> bool:
    from shared.execution.sql import run_query

    result = run_query(path, sql, timeout_s=2.0, max_rows=10_000)
    return bool(result.ok and any(any(v not in (None, 0, "") for v in row) for row in result.rows))


def _table_columns(statement: str) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """(table, [(column, declared type upper-cased)], [(column, referenced column)]) of one CREATE TABLE statement (already sqlglot's
    rendering), read back through SQLite itself so quoting is never guessed."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(statement)
        table = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        foreign = conn.execute(f'PRAGMA foreign_key_list("{table}")').fetchall()
    finally:
        conn.close()
    columns = [(name, (ctype or "").upper()) for _, name, ctype, *_ in info]
    return table, columns, [(f[3].lower(), (f[4] or f[3]).lower()) for f in foreign]


def _domains(tables, joins) -> dict[str, str]:
    """column name (lower case) -> its domain: names equated by a join or a foreign key share one."""
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, columns, foreign in tables:
        for c, _ in columns:
            find(c.lower())
        for a, b in foreign:
            parent[find(a)] = find(b)
    for a, b in joins:
        parent[find(a)] = find(b)
    return {c: find(c) for c in list(parent)}


def _domain_members(tables, domains) -> dict[str, list[tuple[str, str]]]:
    members: dict[str, list[tuple[str, str]]] = {}
    for _, columns, _ in tables:
        for c, ctype in columns:
            members.setdefault(domains[c.lower()], []).append((c.lower(), ctype))
    return members


def _pool(rng: random.Random, domain: str, members: list[tuple[str, str]], hints: dict) -> dict:
    """The values a domain's columns draw from: seeded literals (and their neighbours), then random ones."""
    seeded = [v for c, _ in members for v in hints["literals"].get(c, [])]
    types = " ".join(t for _, t in members)
    numeric = any(k in types for k in _NUMERIC_TYPES) or (seeded and all(_is_number(v) for v in seeded))
    date = any(k in types for k in _DATE_TYPES) and not numeric
    shared = len(members) > 1 or any(_ID.search(c) for c, _ in members)
    near: list = []
    for v in seeded:
        if _is_number(v):
            step = 1 if float(v) == int(float(v)) else 0.5
            near += [_num(float(v) - step), _num(float(v) + step)]
    values: list = list(seeded) + near
    size = rng.randint(3, 6)
    if shared:  # join keys: small integers (or words) that every member can hold
        values += list(range(1, size + 2)) if numeric or not seeded else [f"{domain} {i}" for i in range(size)]
    elif numeric:
        base = rng.choice([1, 10, 100, 1000])
        values += [rng.randint(0, 9 * base) for _ in range(size)]
    elif date:
        values += [f"{rng.randint(1990, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" for _ in range(size)]
    else:
        loose = [v for v in hints["loose"] if isinstance(v, str)]
        values += [f"{domain} {rng.randint(1, 99)}" for _ in range(size)]
        values += rng.sample(loose, min(len(loose), 2))
    return {"exact": list(dict.fromkeys(seeded)), "near": list(dict.fromkeys(near)),
            "all": list(dict.fromkeys(values))}


def _draw(rng: random.Random, pool: dict, dense: bool, nullable: bool):
    """A literal-dense database (every other one) puts the gold's literals in 60% of the cells of their
    columns, so rows that meet several conditions at once exist; the others 30%, and neighbours 15%."""
    if nullable and rng.random() < 0.05:
        return None
    x = rng.random()
    if pool["exact"] and x < (0.6 if dense else 0.3):
        return rng.choice(pool["exact"])
    if pool["near"] and x > 0.85:
        return rng.choice(pool["near"])
    return rng.choice(pool["all"])


def _quoted_text(node, columns: set[str] | None) -> bool:
    from sqlglot import exp

    return (columns is not None and isinstance(node, exp.Column) and not node.table
            and node.this.args.get("quoted") and node.name.lower() not in columns)


def _literal(node):
    """A literal's Python value (numbers as int or float), else None."""
    from sqlglot import exp

    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        value = _literal(node.this)
        return -value if value is not None else None
    if not isinstance(node, exp.Literal):
        return None
    if node.is_string:
        return node.this
    try:
        number = float(node.this)
    except ValueError:
        return None
    return int(number) if number.is_integer() and "." not in node.this else number


def _like_example(pattern: str) -> str:
    """One value that matches a LIKE pattern: % -> "x", _ -> "y"."""
    return pattern.replace("%", "x").replace("_", "y")


def _question_values(question: str) -> list:
    quoted = re.findall(r"[\"'“‘]([^\"'”’]{1,40})[\"'”’]", question)
    numbers = [int(n) for n in re.findall(r"(?<![\w.])(\d{1,9})(?![\w.])", question)]
    return quoted + numbers


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _num(x: float):
    return int(x) if float(x).is_integer() else x
