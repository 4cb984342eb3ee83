"""The worker process that runs checked SQL for shared/execution/sql.py: standard library only, so a fresh
worker starts in ~40 ms (importing sqlglot would take ~200 ms).

    python -c "from shared.execution.sqlite_worker import main; main(512)"   # started by sql.py's pool

It reads length-prefixed pickled requests (a list of (db_path, sql, timeout_s, max_rows)) on stdin and
answers each query, as soon as it is done, with (ok, rows, error) the same way on stdout; it exits when
stdin closes (its caller ended). Its address space is capped (RLIMIT_AS), so SQLite runs out of memory
here, never in the scorer.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import struct
import sys
import time
from pathlib import Path

# Functions that touch files or the process; the Python sqlite3 module defines none but load_extension,
# the others are sqlite3-shell functions, denied by name in case a build links them in.
DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
MAX_VALUE_BYTES = 1_000_000  # SQLITE_LIMIT_LENGTH: the longest string or blob a query may build
MAX_RESULT_BYTES = 32_000_000  # a whole result as sent (pickled); numbers count 9 bytes while fetching
_PROGRESS_STEPS = 1000  # VM instructions between deadline checks: ~tens of microseconds
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})


def main(memory_mb: int) -> None:
    """The loop of one worker process: read a request, run it, answer; exit when stdin closes."""
    import resource

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # No PR_SET_PDEATHSIG: it fires when the *thread* that started us ends (the scorer starts workers from
    # short-lived threads). A vanished caller closes our stdin instead, and a running query stops at its
    # deadline or when our parent changes (checked with the deadline).
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"R")  # ready: the caller's deadlines start after this
    stdout.flush()
    out_of_memory = (False, None, f"out of memory (worker limit {memory_mb} MB)")
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return
        for job in pickle.loads(stdin.read(struct.unpack("!I", header)[0])):
            try:
                body = pickle.dumps(execute(*job))
            except MemoryError:
                body = pickle.dumps(out_of_memory)
            if len(body) > MAX_RESULT_BYTES:
                body = pickle.dumps((False, None, f"result too large (more than {MAX_RESULT_BYTES} bytes)"))
            stdout.write(struct.pack("!I", len(body)) + body)
            stdout.flush()


def execute(db_path: str, sql: str, timeout_s: float, max_rows: int) -> tuple[bool, list | None, str | None]:
    """One query on a fresh read-only connection: (ok, rows, error)."""
    try:
        conn = connect_read_only(db_path)
    except sqlite3.Error as e:
        return False, None, f"cannot open {db_path}: {e}"
    deadline = time.monotonic() + timeout_s
    parent = os.getppid()
    conn.set_progress_handler(lambda: time.monotonic() > deadline or os.getppid() != parent, _PROGRESS_STEPS)
    try:
        cursor = conn.execute(sql)
        rows = _fetch_capped(cursor, max_rows)
    except sqlite3.OperationalError as e:
        if str(e) == "interrupted":
            return False, None, f"timeout after {timeout_s:g} s"
        return False, None, f"sqlite: {e}"
    except _ResultTooLarge as e:
        return False, None, str(e)
    except (sqlite3.Error, ValueError, OverflowError) as e:
        return False, None, f"sqlite: {e}"
    finally:
        conn.close()
    return True, rows, None


def connect_read_only(db_path: str | Path) -> sqlite3.Connection:
    path = Path(db_path).resolve()
    if not path.is_file():
        raise sqlite3.OperationalError("no such database file")
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None)
    if hasattr(conn, "enable_load_extension"):  # absent where Python was built without extension support
        conn.enable_load_extension(False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_query_authorizer)
    conn.text_factory = lambda b: b.decode(errors="replace")  # a stray Latin-1 byte is not a failure
    return conn


class _ResultTooLarge(Exception):
    pass


def _query_authorizer(action, arg1, arg2, db_name, trigger):
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


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
        size += sum(len(v) if isinstance(v, (str, bytes)) else 9 for row in chunk for v in row)
        if size > MAX_RESULT_BYTES:
            raise _ResultTooLarge(f"result too large (more than {MAX_RESULT_BYTES} bytes)")
