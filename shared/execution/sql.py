"""Runs model-written SQL against SQLite, and compares results.

    from shared.execution.sql import run_query, results_match, has_order_by
    gold, pred = run_query(db, gold_sql), run_query(db, predicted_sql)
    correct = pred.ok and gold.ok and results_match(pred.rows, gold.rows, ordered=has_order_by(gold_sql))

What reaches SQLite is exactly one read-only query, checked by four independent layers:
1. sqlglot (sqlite dialect) must parse the text as exactly one statement, a SELECT / UNION / INTERSECT /
   EXCEPT (with or without WITH), with no write, DDL, ATTACH or PRAGMA node anywhere inside it and no call
   to a denied function (`load_extension`, ...). Anything else is refused with a reason and never run.
   Text over MAX_SQL_CHARS (20,000 characters) or holding a NUL byte is refused before parsing (a 10 MB
   query took sqlglot 76 s and 2.4 GB); any exception of the parser (RecursionError at ~45 nested
   parentheses included) is a refusal with its reason, never an escape.
2. The database is opened read-only through a URI (`mode=ro&immutable=1`): SQLite itself refuses writes.
   `immutable=1` also skips file locking and never creates -journal/-wal/-shm files, so the file is
   byte-identical afterwards; that is right only because evaluation databases do not change while read.
3. An authorizer allows SELECT, READ, FUNCTION (minus the denied names) and RECURSIVE, and denies every
   other action (ATTACH, PRAGMA, any write or schema change) while the statement is prepared.
4. `sqlite3.Cursor.execute` runs one statement only and raises on trailing SQL; extensions stay disabled.

Each call opens its own connection ("a fresh read-only SQLite per example"): no state, temp table or
cache survives from one query to the next, so results cannot depend on evaluation order.

Where it runs: in a warm pool of worker processes (2 by default), never in the caller. Each worker has an
address-space limit (RLIMIT_AS, `memory_mb`, 512 MB by default), so a query that builds huge values fails
inside the worker ("out of memory") instead of growing the scorer (often a training worker). A worker
stops its own query at `timeout_s` through SQLite's progress handler (checked every 1000 VM steps); a
single long call that the handler cannot interrupt (a quadratic LIKE, `printf('%.*c', 1e9, 'x')`) is
ended by the caller, which kills the worker at 1.15 x `timeout_s` + 50 ms and starts a fresh one (reaping
and starting happen in the background), so every query returns within 1.5 x its limit. Results are capped inside the worker before they are sent: `max_rows`
rows (more is a failure, not a truncation, since a truncated result could match by accident), 1 MB per
value, and MAX_RESULT_BYTES (32 MB) for the whole result as sent, so the caller never holds more.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import itertools
import logging
import math
import os
import pickle
import queue
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from shared.execution.sqlite_worker import (  # noqa: F401 - the limits and the read-only connection, re-exported
    DENIED_FUNCTIONS,
    MAX_RESULT_BYTES,
    MAX_VALUE_BYTES,
    connect_read_only as _connect_read_only,
)

# sqlglot logs a warning for each text it parses as an opaque command ("contains unsupported syntax"): for
# model output that is a verdict with its reason here, not a log line per prediction.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

DIALECT = "sqlite"
MAX_SQL_CHARS = 20_000  # Spider's longest gold is ~600 characters; sqlglot parses 20 kB in ~0.15 s
MEMORY_MB = 512  # address space of one worker: Python + sqlite3 take ~40 MB of it
KILL_AFTER = 1.15  # the caller kills a worker that has not answered by KILL_AFTER x timeout_s + 50 ms
POOL_SIZE = 2
MATCH_MODES = ("spider", "strict")

_QUERY_TYPES = (exp.Select, exp.Union, exp.Intersect, exp.Except)
# Nodes that must not occur anywhere inside an accepted query (SQLite would refuse most of them inside a
# SELECT anyway; sqlglot parses e.g. `WITH x AS (DELETE ... RETURNING *) SELECT ...`).
_FORBIDDEN_NODES = (
    exp.Insert, exp.Update, exp.Delete, exp.Drop, exp.Create, exp.Alter, exp.Command, exp.Pragma,
    exp.Attach, exp.Detach, exp.Merge, exp.Transaction, exp.Commit, exp.Rollback, exp.Set, exp.Use,
)


@dataclass
class SqlResult:
    ok: bool
    rows: list[tuple] | None
    error: str | None


def parse_sql(sql: str) -> list[exp.Expression]:
    """sqlglot's statements of `sql`; raises ValueError with the reason for anything it cannot take: too
    long, a NUL byte, a parse error, or any exception of the parser (RecursionError on deep nesting)."""
    if not isinstance(sql, str):
        raise ValueError(f"not text: {type(sql).__name__}")
    if len(sql) > MAX_SQL_CHARS:
        raise ValueError(f"too long: {len(sql):,} characters (at most {MAX_SQL_CHARS:,})")
    if "\x00" in sql:
        raise ValueError("holds a NUL byte")
    try:
        return [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except SqlglotError as e:
        raise ValueError(f"does not parse: {_first_line(str(e))}") from None
    except RecursionError:
        raise ValueError("does not parse: nested too deeply") from None
    except Exception as e:  # noqa: BLE001 - whatever the parser does with model output is a failed query
        raise ValueError(f"does not parse: {type(e).__name__}: {_first_line(str(e))}") from None


def _cached_when_short(fn):
    """An lru_cache (golds repeat at every evaluation) holding texts up to MAX_SQL_CHARS only: 8192 x 20 kB
    at most; a longer text is refused before parsing anyway."""
    cached = functools.lru_cache(maxsize=8192)(fn)

    @functools.wraps(fn)
    def wrapper(sql):
        return cached(sql) if isinstance(sql, str) and len(sql) <= MAX_SQL_CHARS else fn(sql)

    wrapper.cache_clear = cached.cache_clear
    return wrapper


@_cached_when_short
def check_read_only_query(sql: str) -> str | None:
    """Why `sql` may not run (a short reason), or None when it is exactly one read-only query."""
    return analyze_query(sql)[0]


def analyze_query(sql: str) -> tuple[str | None, list[exp.Expression] | None]:
    """(why `sql` may not run or None, its parsed statements or None) from one parse: the scorer needs
    the check and, sometimes, exact match (same_sql) of every prediction; parsing is most of the time."""
    try:
        statements = parse_sql(sql)
    except ValueError as e:
        return str(e), None
    try:
        if len(statements) != 1:
            return f"expected exactly one statement, got {len(statements)}", statements
        query = _unwrap(statements[0])
        if not isinstance(query, _QUERY_TYPES):
            return f"not a query: {type(query).__name__} statement", statements
        for node in query.walk():
            if isinstance(node, _FORBIDDEN_NODES):
                return f"{type(node).__name__} inside a query", statements
            if isinstance(node, exp.Func) and _function_name(node) in DENIED_FUNCTIONS:
                return f"function {_function_name(node)}() is not allowed", statements
    except RecursionError:
        return "nested too deeply", None
    return None, statements


def same_sql(sql: str, statements: list[exp.Expression] | None, golds: list[str]) -> bool:
    """Exact match: normalize_sql(sql) equals that of a gold, with `statements` (analyze_query's) reused
    and the rendering skipped when the plain texts already agree."""
    plain = _plain(sql)
    if any(plain == _plain(g) for g in golds):
        return True
    try:
        normalized = _render(statements) if statements is not None else plain
    except RecursionError:
        normalized = plain
    return any(normalized == normalize_sql(g) for g in golds)


def run_query(db_path: str | Path, sql: str, timeout_s: float = 2.0, max_rows: int = 10_000,
              memory_mb: int = MEMORY_MB, checked: bool = False) -> SqlResult:
    """Runs one checked read-only query in a pool worker; never raises for bad SQL, and returns within
    1.5 x timeout_s whatever the query calls. `checked=True` skips the check when the caller has just
    had check_read_only_query pass the same text (the scorer runs one prediction on k databases)."""
    return run_queries([(db_path, sql)], timeout_s, max_rows, memory_mb, checked)[0]


def run_queries(jobs: list[tuple[str | Path, str]], timeout_s: float = 2.0, max_rows: int = 10_000,
                memory_mb: int = MEMORY_MB, checked: bool = False) -> list[SqlResult]:
    """(database, query) pairs run in order by one worker, in one round trip (a gold and its prediction:
    each trip costs ~0.5-2 ms of process wake-ups on a busy machine). Each query keeps its own limit: the
    worker answers one by one and is killed when an answer is 1.15 x timeout_s late; queries after a
    killed one come back "not run"."""
    results: list[SqlResult | None] = [None] * len(jobs)
    requests, where = [], []
    for i, (db, sql) in enumerate(jobs):
        reason = None if checked else check_read_only_query(sql)
        if reason is not None:
            results[i] = SqlResult(False, None, f"refused: {reason}")
        else:
            requests.append((str(db), sql, float(timeout_s), int(max_rows)))
            where.append(i)
    if requests:
        for i, answer in zip(where, _pool(memory_mb).run(requests, timeout_s), strict=True):
            results[i] = answer
    return results


def results_match(pred_rows: list[tuple], gold_rows: list[tuple], ordered: bool, mode: str = "strict") -> bool:
    """Same rows (values normalized), as a sequence when `ordered`, else as a multiset.

    mode "strict": column order matters (rows are compared as tuples). mode "spider": as the official
    Spider exec match (test-suite-sql-eval `result_eq`), the prediction's columns may come in any order,
    one permutation for all rows. Column names never matter. Two empty results match in both modes.
    """
    if mode not in MATCH_MODES:
        raise ValueError(f"unknown match mode {mode!r}; expected one of {', '.join(MATCH_MODES)}")
    pred = [normalize_row(r) for r in pred_rows]
    gold = [normalize_row(r) for r in gold_rows]
    if mode == "strict" or not pred or not gold:
        return pred == gold if ordered else Counter(pred) == Counter(gold)
    if len(pred) != len(gold) or len(pred[0]) != len(gold[0]):
        return False
    return any(
        _same_rows([tuple(r[j] for j in perm) for r in pred], gold, ordered)
        for perm in _column_permutations(pred, gold)
    )


def _same_rows(pred: list[tuple], gold: list[tuple], ordered: bool) -> bool:
    return pred == gold if ordered else Counter(pred) == Counter(gold)


def _column_permutations(pred: list[tuple], gold: list[tuple]):
    """Orders of the prediction's columns that can make it equal to the gold: gold column i can only be a
    prediction column with the same multiset of values. Exact (the official evaluator prunes by sampled
    rows), and small: real results rarely have two columns with equal value multisets."""
    width = len(gold[0])
    gold_cols = [Counter(r[i] for r in gold) for i in range(width)]
    pred_cols = [Counter(r[j] for r in pred) for j in range(width)]
    candidates = [[j for j in range(width) if pred_cols[j] == gold_cols[i]] for i in range(width)]
    if any(not c for c in candidates):
        return
    for perm in itertools.product(*candidates):
        if len(set(perm)) == width:
            yield perm


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


@_cached_when_short
def has_order_by(sql: str) -> bool:
    """True when the query's outermost statement has ORDER BY (the gold's row order is then part of it).
    Cached: it is asked of the same golds at every evaluation."""
    try:
        statements = parse_sql(sql)
    except ValueError:
        return False
    return bool(statements) and _unwrap(statements[0]).args.get("order") is not None


@_cached_when_short
def normalize_sql(sql: str) -> str:
    """Canonical text for exact match: sqlglot's sqlite rendering, unquoted identifiers lower-cased,
    comments dropped. Text sqlglot cannot parse is lower-cased with whitespace collapsed."""
    try:
        return _render(parse_sql(sql))
    except (ValueError, RecursionError):
        return _plain(sql)


def _render(statements: list[exp.Expression]) -> str:
    return "; ".join(s.sql(dialect=DIALECT, normalize=True, pretty=False, comments=False) for s in statements)


def _plain(sql) -> str:
    return " ".join(str(sql)[:MAX_SQL_CHARS].lower().strip().rstrip(";").split())


def split_statements(text: str) -> list[str]:
    """`a; b;` -> ["a", "b"], splitting only at semicolons outside quotes and comments (defog's golds list
    several acceptable queries this way)."""
    parts, start, i, quote = [], 0, 0, None
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"`[":
            quote = "]" if c == "[" else c
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif c == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


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


# ------------------------------------------------------------------------------------------ worker pool


class _Worker:
    """One worker process: requests and answers are length-prefixed pickles on its stdin and stdout."""

    def __init__(self, memory_mb: int):
        root = str(Path(__file__).resolve().parents[2])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": root}
        code = f"from shared.execution.sqlite_worker import main; main({int(memory_mb)})"
        self.ready = False
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, close_fds=True, start_new_session=True,
        )

    def ask(self, requests: list[tuple], wait_s: float) -> list[SqlResult]:
        """The worker's answers, in order, each within wait_s of the one before (or of the request); fewer
        than asked when one came late or the worker died."""
        payload = pickle.dumps(requests)
        try:
            self.proc.stdin.write(struct.pack("!I", len(payload)) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return []
        fd = self.proc.stdout.fileno()
        if not self.ready:  # a fresh worker imports for ~40 ms (longer on a busy machine): not the query's time
            self.ready = _read_exact(fd, 1, time.monotonic() + 60.0) == b"R"
            if not self.ready:
                return []
        answers: list[SqlResult] = []
        for _ in requests:
            deadline = time.monotonic() + wait_s
            header = _read_exact(fd, 4, deadline)
            if header is None:
                break
            (size,) = struct.unpack("!I", header)
            body = _read_exact(fd, size, deadline) if size <= MAX_RESULT_BYTES + 4096 else None
            if body is None:
                break
            answers.append(SqlResult(*pickle.loads(body)))
        return answers

    def signal_kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        self.signal_kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _exited(pid: int) -> bool:
    """Whether a child has exited, without reaping it. A reaped pid is free for the kernel to hand out again
    (pid_max is 32768 here, and a busy machine wraps it in minutes), so a killpg after reaping can end another
    process group: a sandbox, a Ray worker. Kill first, reap after."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _Pool:
    """Warm workers, started on first use and replaced whenever one is killed or dies."""

    def __init__(self, size: int, memory_mb: int):
        self.memory_mb = memory_mb
        self.idle: queue.Queue[_Worker] = queue.Queue()
        self.all: set[_Worker] = set()
        self.lock = threading.Lock()
        for _ in range(size):
            self._add()

    def _add(self) -> None:
        worker = _Worker(self.memory_mb)
        with self.lock:
            self.all.add(worker)
        self.idle.put(worker)

    def run(self, requests: list[tuple], timeout_s: float) -> list[SqlResult]:
        worker = self.idle.get()
        answers = worker.ask(requests, KILL_AFTER * timeout_s + 0.05)
        if len(answers) == len(requests):
            self.idle.put(worker)
            return answers
        died = _exited(worker.proc.pid)
        worker.signal_kill()  # before anything reaps the worker: see _exited
        # Reaping the old worker and forking a new one (slow from a big training process) happen after
        # this query has returned.
        threading.Thread(target=self._replace, args=(worker,), daemon=True).start()
        if died:
            answers.append(SqlResult(False, None, "sqlite worker died (out of memory?)"))
        else:
            answers.append(SqlResult(False, None, f"timeout after {timeout_s:g} s (worker killed)"))
        skipped = SqlResult(False, None, "not run: an earlier query of its batch stopped the worker")
        return answers + [skipped] * (len(requests) - len(answers))

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self.lock:
            self.all.discard(worker)
        self._add()

    def close(self) -> None:
        with self.lock:
            workers, self.all = list(self.all), set()
        for worker in workers:
            worker.kill()


_POOLS: dict[int, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(memory_mb: int) -> _Pool:
    with _POOLS_LOCK:
        if memory_mb not in _POOLS:
            _POOLS[memory_mb] = _Pool(POOL_SIZE, memory_mb)
        return _POOLS[memory_mb]


@atexit.register
def close_workers() -> None:
    """Ends every worker process (also at exit; a worker whose caller vanished ends on its closed stdin)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


def _read_exact(fd: int, n: int, deadline: float) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)





# ----------------------------------------------------------------------------------------------- helpers


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


def _parse_long_schema(context: str) -> list[exp.Expression]:
    """A schema longer than a query may be (defog's have ~60 tables): parsed statement by statement."""
    return [s for part in split_statements(context) for s in parse_sql(part)]


@functools.cache
def _schema_dir() -> tempfile.TemporaryDirectory:
    """One private temp folder per process (removed at exit): nobody else can plant files in it."""
    return tempfile.TemporaryDirectory(prefix="sql-schema-")


def _unwrap(node: exp.Expression) -> exp.Expression:
    """`(SELECT ...)` at the top level is the SELECT inside it."""
    while isinstance(node, exp.Subquery):
        node = node.this
    return node


def _function_name(node: exp.Func) -> str:
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else text
