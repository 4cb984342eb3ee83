"""Task data -> normalized examples, whatever the source: the bundled generators, a hub dataset or local files.

    from shared.data import load_splits
    splits = load_splits(cfg.data)  # {"train": [...], "dev": [...], "test": [...]} (+ "test_unseen": bundled SQL)

Every example is a plain dict with one set of field names per task (FIELDS):
    sql:  question, context (CREATE TABLE statements), answer (gold SQL), and optionally db_id, db_path
          (absolute path of the SQLite file the answer is executed against), category, evidence, and
          alternatives (when the answer holds several `;`-separated queries: any one counts; answer is
          then the first)
    code: instruction, input ("" when none), output (reference code), tests (statements that must run
          without error: asserts, or a call such as `check(f)`), setup (code run after the solution and
          before the tests, "" when none), and entry_point for HumanEval

Formats recognized as they are, with no `data.columns` mapping (ALIASES):
    b-mc2/sql-create-context  question, context, answer
    Spider-style              question, query (-> answer), db_id, and context (or, with data.db_dir set,
                              the CREATE TABLE statements read from the database itself)
    defog sql-eval            question, query (several acceptable golds separated by `;`), db_name
                              (-> db_id), query_category (-> category); context read from the database
    BIRD-style                question, evidence, db_id, SQL (-> answer), difficulty (-> category); the
                              evidence is appended to the question ("Hint: ..."), as the model needs it
    MBPP                      text, code, test_list, test_setup_code, task_id -> instruction, output, tests,
                              setup; its instructions do not name the function, so, as in the MBPP paper's
                              prompt, `input` carries the tests ("Your code should pass these tests: ...").
                              A source holding the full 974 tasks splits by task_id as the paper does:
                              prompt 1-10 (few-shot), test 11-510, dev (validation) 511-600, train 601-974
    HumanEval                 task_id, prompt, canonical_solution, test, entry_point -> input = prompt (the
                              signature and docstring), output = prompt + canonical_solution, setup = test
                              (which defines `check(candidate)`), tests = ["check(<entry_point>)"]
    alpaca + tests            instruction, input, output, and tests (or test_list)
Tests that run nothing (only definitions, like HumanEval's `test` mapped on its own through data.columns:
it defines `check` and never calls it, so every prediction would pass) are refused at load.
Anything else maps its columns: `data.columns.question=text`.

Local files: .jsonl, .jsonl.gz, .json (a list of records, or JSON lines as `Dataset.to_json` writes them),
.json.gz, .csv, .parquet, or a folder of them. Every value is type-checked; a bad file raises `DataError`
naming the file (or hub id), the row and the column.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import random
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from shared.config import DataConfig

FIELDS = {
    "sql": ("question", "context", "answer", "db_id", "db_path", "category", "evidence"),
    "code": ("instruction", "input", "output", "tests", "setup"),
}
REQUIRED = {"sql": ("question", "context", "answer"), "code": ("instruction", "output", "tests")}
# Source columns tried, in order, for each field that data.columns does not map.
ALIASES = {
    "sql": {
        "question": ("question",),
        "context": ("context",),
        "answer": ("answer", "query", "SQL"),
        "db_id": ("db_id", "db_name"),
        "db_path": ("db_path",),
        "category": ("category", "query_category", "difficulty"),
        "evidence": ("evidence",),
    },
    "code": {
        "instruction": ("instruction", "text"),
        "input": ("input",),
        "output": ("output", "code"),
        "tests": ("tests", "test_list"),
        "setup": ("setup", "test_setup_code"),
    },
}
_TEXT_FIELDS = {"question", "context", "answer", "instruction", "output"}  # required, non-empty strings
_CODE_FIELDS = {"output", "setup"}  # line ends -> \n: MBPP's code has \r\n ones the model should not learn
MBPP_TESTS_HEADER = "Your code should pass these tests:"
# MBPP's official split by task_id (Austin et al. 2021, and its README): the ranges, inclusive.
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "dev": (511, 600), "train": (601, 974)}
HUMANEVAL_COLUMNS = ("prompt", "test", "entry_point")
HUMANEVAL_INSTRUCTION = "Complete the Python function below so that it does what its docstring says."

DATA_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json", ".csv", ".parquet")
# File-name prefixes (before the first "." or "-", so HF's "train-00000-of-00001.parquet" counts) of the
# split files in a folder source, and hub split names, tried in order.
SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"), "test": ("test",)}
# Splits a source does not provide are cut from train: 5% each, at least 1 example.
CUT_FRACTION = {"dev": 0.05, "test": 0.05}


class DataError(ValueError):
    """Data that cannot be used. The message names the file (or hub id), and the row or column."""


@dataclass
class _Table:
    """Raw rows of one split as read: `name` says where they came from in messages."""

    name: str
    rows: list[tuple[str, dict]]  # (where in the file, e.g. "line 7" or "row 7"; the record)
    base_dir: Path | None = None  # relative db_path values are resolved against it


# --------------------------------------------------------------------------------------------- entry


def load_splits(data: DataConfig) -> dict[str, list[dict]]:
    """The normalized splits of `data`: train (shuffled with data.seed, capped), dev, test (source order)."""
    if data.source == "bundled":
        origin = f"bundled {data.task} data"
        for key in ("train_file", "dev_file", "test_file"):
            if getattr(data, key) is not None:
                raise DataError(
                    f"data.{key} is set but data.source is 'bundled'; point data.source at the dataset "
                    f"(a hub id, a file or a folder) whose splits data.{key} names"
                )
        splits = {
            name: _normalize(_Table(f"{origin} split {name!r}", _numbered(rows)), data.task, {}, None)
            for name, rows in _bundled(data).items()
        }
    else:
        origin = data.source
        tables = _hub_tables(data) if _is_hub(data.source) else _local_tables(data)
        db_dir = Path(data.db_dir).expanduser().resolve() if data.db_dir else None
        splits = {name: _normalize(t, data.task, data.columns, db_dir) for name, t in tables.items()}
        mbpp = _mbpp_official_splits(tables, splits) if data.task == "code" and not data.columns else None
        splits = mbpp or _cut_missing(splits, data.task, data.seed, origin)

    train = list(splits["train"])
    if data.widen_schemas and data.task == "sql":
        train = widen_schemas(train, data.widen_schemas, data.seed)
    random.Random(data.seed).shuffle(train)
    splits["train"] = train[: data.max_train_examples] if data.max_train_examples else train
    for name, rows in splits.items():
        if not rows:
            raise DataError(f"{origin}: split {name!r} is empty")
    return splits


def load_file(
    path: str | Path,
    task: str = "sql",
    columns: dict[str, str] | None = None,
    db_dir: str | Path | None = None,
    skip_missing_db: bool = False,
) -> list[dict]:
    """One local file (any supported format), normalized, in file order: for evaluation and benchmarks.
    `skip_missing_db` leaves out rows whose db_id has no database in db_dir (defog ships 7 of its 11)."""
    if task not in FIELDS:
        raise DataError(f"unknown task {task!r}; expected 'sql' or 'code'")
    path = Path(path).expanduser()
    db = Path(db_dir).expanduser().resolve() if db_dir else None
    rows = _read_rows(path)
    if skip_missing_db and db is not None:
        rows = [(w, r) for w, r in rows if _has_db(db, r.get("db_id", r.get("db_name")))]
    return _normalize(_Table(str(path), rows, path.parent), task, columns or {}, db)


def _has_db(db_dir: Path, db_id) -> bool:
    return isinstance(db_id, str) and any(
        p.is_file() for p in (db_dir / db_id / f"{db_id}.sqlite", db_dir / f"{db_id}.sqlite")
    )


def _mbpp_official_splits(tables: dict[str, _Table], splits: dict[str, list[dict]]) -> dict | None:
    """MBPP's own splits by task_id, for a single MBPP file that holds its train range (601-974)."""
    if set(tables) != {"train"}:
        return None
    ids = [row.get("task_id") for _, row in tables["train"].rows]
    if not all(isinstance(i, int) for i in ids) or not any(601 <= i <= 974 for i in ids):
        return None
    if not {"text", "code", "test_list"} <= set(tables["train"].rows[0][1]):
        return None
    out: dict[str, list[dict]] = {name: [] for name in ("train", "dev", "test", "prompt")}
    for task_id, example in zip(ids, splits["train"], strict=True):
        name = next((n for n, (lo, hi) in MBPP_SPLITS.items() if lo <= task_id <= hi), None)
        if name is not None:
            out[name].append(example)
    return {name: rows for name, rows in out.items() if rows}


def _bundled(data: DataConfig) -> dict[str, list[dict]]:
    # Imported here: the generators build databases and run code, which loading a file never needs.
    if data.task == "sql":
        from shared.data.sqlgen import bundled_sql_splits

        return bundled_sql_splits(seed=data.seed)
    from shared.data.codegen import bundled_code_splits

    return bundled_code_splits(seed=data.seed)


def _numbered(rows: list[dict]) -> list[tuple[str, dict]]:
    return [(f"row {i}", row) for i, row in enumerate(rows, 1)]


# --------------------------------------------------------------------------------------------- sources


def _is_hub(source: str) -> bool:
    """A hub id is 'org/name' or 'name' and is not an existing path; anything path-like must exist."""
    if Path(source).expanduser().exists():
        return False
    if (
        source.startswith(("/", "./", "../", "~"))
        or source.count("/") > 1
        or source.lower().endswith(DATA_SUFFIXES)
    ):
        raise DataError(f"data.source: {source!r} does not exist")
    return True


def _hub_tables(data: DataConfig) -> dict[str, _Table]:
    """Hub splits: data.<split>_file names a hub split; without it the usual names are tried."""
    try:
        import datasets

        loaded = datasets.load_dataset(data.source)
    except Exception as e:  # network, auth, missing dataset, missing library: all mean the same to a user
        raise DataError(
            f"hub dataset {data.source!r} could not be loaded ({type(e).__name__}: {e}). Offline, download "
            "it to a local file and point data.source at it, or run where the hub is reachable"
        ) from e
    tables = {}
    for split, named in (("train", data.train_file), ("dev", data.dev_file), ("test", data.test_file)):
        candidates = (named,) if named else SPLIT_NAMES[split]
        found = next((c for c in candidates if c in loaded), None)
        if found is None and (named or split == "train"):
            raise DataError(
                f"hub dataset {data.source!r} has no split {candidates[0]!r}"
                + (f" (data.{split}_file)" if named else "")
                + f"; its splits: {', '.join(loaded)}"
            )
        if found is not None:
            rows = _numbered(loaded[found].to_list())
            tables[split] = _Table(f"hub dataset {data.source!r} split {found!r}", rows)
    return tables


def _local_tables(data: DataConfig) -> dict[str, _Table]:
    """A file is the train split; a folder's files are split by name (or pooled); data.*_file override."""
    source = Path(data.source).expanduser()
    base = source if source.is_dir() else source.parent
    files = _folder_splits(source) if source.is_dir() else {"train": [source]}
    for split, named in (("train", data.train_file), ("dev", data.dev_file), ("test", data.test_file)):
        if named is None:
            continue
        path = Path(named).expanduser()
        if not path.is_absolute() and not path.exists() and (base / path).exists():
            path = base / path
        if split == "train" and source.is_file() and path.resolve() != source.resolve():
            raise DataError(
                f"data.train_file {named!r} and data.source {data.source!r} name different files; "
                "set data.source to their folder, or leave data.train_file unset"
            )
        files[split] = [path]
    if "train" not in files:
        raise DataError(
            f"{source}: has {', '.join(files)} split files but no train file; set data.train_file"
        )
    tables = {}
    for split, paths in files.items():
        rows = [row for path in paths for row in _labelled(path, len(paths) > 1)]
        tables[split] = _Table(", ".join(str(p) for p in paths), rows, base)
    return tables


def _labelled(path: Path, name_file: bool) -> list[tuple[str, dict]]:
    rows = _read_rows(path)
    return [(f"{path.name} {where}", row) for where, row in rows] if name_file else rows


def _folder_splits(folder: Path) -> dict[str, list[Path]]:
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES))
    if not found:
        raise DataError(f"{folder}: folder holds no data files ({', '.join(DATA_SUFFIXES)})")
    splits: dict[str, list[Path]] = {}
    others = []
    for path in found:
        prefix = path.name.lower().split(".")[0].split("-")[0]
        split = next((s for s, names in SPLIT_NAMES.items() if prefix in names), None)
        if split is None:
            others.append(path.name)
        else:
            splits.setdefault(split, []).append(path)
    if not splits:
        return {"train": found}  # no split names: one pool, cut below
    if others:
        raise DataError(
            f"{folder}: holds split files ({', '.join(p.name for ps in splits.values() for p in ps)}) and "
            f"files named for no split ({', '.join(others)}); rename or move them, or name each split "
            "with data.train_file / data.dev_file / data.test_file"
        )
    return splits


# --------------------------------------------------------------------------------------------- reading


def _read_rows(path: Path) -> list[tuple[str, dict]]:
    """The records of one file, each with where it is ("line 7" for JSON lines, else "row 7")."""
    lower = path.name.lower()
    if not lower.endswith(DATA_SUFFIXES):
        raise DataError(f"{path}: unsupported file type; expected one of {', '.join(DATA_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        if lower.endswith((".jsonl", ".jsonl.gz")):
            rows = _read_jsonl(path)
        elif lower.endswith((".json", ".json.gz")):
            rows = _read_json(path)
        elif lower.endswith(".csv"):
            rows = _read_csv(path)
        else:
            rows = _read_parquet(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None
    if not rows:
        raise DataError(f"{path}: file is empty (no records)")
    return rows


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    rows = []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(record).__name__}")
            rows.append((f"line {lineno}", record))
    return rows


def _read_json(path: Path) -> list[tuple[str, dict]]:
    with _open_text(path) as f:
        text = f.read()
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON lines under a .json name, as Dataset.to_json writes them
            return _read_jsonl(path)
        raise DataError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    if isinstance(data, dict):
        # {"data": [records]} wraps a list; any other object is one record.
        lists = [
            v for v in data.values() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)
        ]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for i, record in enumerate(data, 1):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {i}: expected a JSON object, got {type(record).__name__}")
    return [(f"record {i}", record) for i, record in enumerate(data, 1)]


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    csv.field_size_limit(2**31 - 1)  # the default 128 KiB cuts long schemas
    rows = []
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        try:
            for i, record in enumerate(reader, 1):
                if None in record:
                    raise DataError(
                        f"{path}: row {i}: has more fields than the header ({len(reader.fieldnames)} columns)"
                    )
                rows.append((f"row {i}", record))
        except csv.Error as e:
            raise DataError(f"{path}: line {reader.line_num}: invalid CSV ({e})") from None
    return rows


def _read_parquet(path: Path) -> list[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    return _numbered(table.to_pylist())


# --------------------------------------------------------------------------------------------- normalizing


def _normalize(table: _Table, task: str, columns: dict[str, str], db_dir: Path | None) -> list[dict]:
    if not table.rows:
        raise DataError(f"{table.name}: has no rows")
    present = list(dict.fromkeys(key for _, row in table.rows for key in row))
    if task == "code" and not columns and all(c in present for c in HUMANEVAL_COLUMNS):
        return [_humaneval_example(f"{table.name}: {where}", row) for where, row in table.rows]
    mapping = _map_columns(table.name, task, present, columns, db_dir)
    # MBPP's text does not name the function its tests call; its paper puts the tests in the prompt.
    is_mbpp = task == "code" and mapping["instruction"] == "text" and mapping["tests"] == "test_list"
    tests_as_input = is_mbpp and "input" not in mapping
    db_cache: dict[str, str] = {}
    out = []
    for where, row in table.rows:
        example = _example(f"{table.name}: {where}", task, row, mapping)
        if task == "sql":
            _attach_db(example, f"{table.name}: {where}", db_dir, table.base_dir, db_cache)
            _split_alternatives(example)
            if example.get("evidence"):
                example["question"] = f"{example['question']}\nHint: {example['evidence']}"
        else:
            _check_tests_run(f"{table.name}: {where}", example)
            if tests_as_input:
                example["input"] = "\n".join([MBPP_TESTS_HEADER, *example["tests"]])
        out.append(example)
    return out


def _humaneval_example(where: str, row: dict) -> dict:
    """HumanEval as its harness runs it: program = prompt + completion, then `test`, then check(entry_point)."""
    for column in (*HUMANEVAL_COLUMNS, "canonical_solution"):
        if not isinstance(row.get(column), str) or not row[column].strip():
            raise DataError(f"{where}: column {column!r} must be a non-empty string")
    entry = row["entry_point"].strip()
    if not entry.isidentifier():
        raise DataError(f"{where}: column 'entry_point' is not a function name: {_short(entry)}")
    return {
        "instruction": HUMANEVAL_INSTRUCTION, "input": row["prompt"],
        "output": _unix_lines(row["prompt"] + row["canonical_solution"]),
        "tests": [f"check({entry})"], "setup": _unix_lines(row["test"]), "entry_point": entry,
    }


def _check_tests_run(where: str, example: dict) -> None:
    """Refuses tests that only define things: they cannot fail, so every prediction would pass."""
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom,
                   ast.Assign, ast.AnnAssign, ast.Pass)
    defined = []
    for test in example["tests"]:
        try:
            body = ast.parse(test).body
        except (SyntaxError, ValueError):
            return  # a test that does not parse fails when run: it does not pass everything
        if any(not isinstance(node, definitions) for node in body):
            return
        defined += [n.name for n in body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    names = ", ".join(dict.fromkeys(defined)) or "nothing"
    raise DataError(
        f"{where}: the tests never run anything (they only define {names}), so every prediction would pass. "
        "HumanEval's `test` defines check(candidate) without calling it: load HumanEval as it is (columns "
        "prompt, canonical_solution, test, entry_point, with no data.columns), or add a test that calls it"
    )


def _split_alternatives(example: dict) -> None:
    """defog lists several acceptable golds in one cell, separated by `;`: any one counts."""
    from shared.execution.sql import split_statements

    alternatives = split_statements(example["answer"])
    if len(alternatives) > 1:
        example["answer"], example["alternatives"] = alternatives[0], alternatives


def _map_columns(
    name: str, task: str, present: list[str], columns: dict[str, str], db_dir: Path | None
) -> dict[str, str]:
    """field -> source column: data.columns first, then the recognized formats' names."""
    unknown = sorted(set(columns) - set(FIELDS[task]))
    if unknown:
        raise DataError(
            f"data.columns: {', '.join(unknown)} is not a {task} field; the {task} fields are "
            f"{', '.join(FIELDS[task])}"
        )
    mapping = {}
    for field in FIELDS[task]:
        if field in columns:
            if columns[field] not in present:
                raise DataError(
                    f"{name}: data.columns.{field}={columns[field]!r} names no column; "
                    f"columns present: {', '.join(present)}"
                )
            mapping[field] = columns[field]
        else:
            found = next((c for c in ALIASES[task][field] if c in present), None)
            if found is not None:
                mapping[field] = found
    # A Spider-style source without context gets the schema from its database.
    schema_from_db = task == "sql" and ("db_path" in mapping or ("db_id" in mapping and db_dir is not None))
    for field in REQUIRED[task]:
        if field not in mapping and not (field == "context" and schema_from_db):
            hint = " (or, for rows with a db_id, set data.db_dir)" if field == "context" else ""
            raise DataError(
                f"{name}: no column for {field!r}; columns present: {', '.join(present)}. "
                f"Map one with data.columns.{field}=<column>{hint}"
            )
    return mapping


def _example(where: str, task: str, row: dict, mapping: dict[str, str]) -> dict:
    example = {}
    for field, column in mapping.items():
        label = f"column {column!r}" if column == field else f"column {column!r} ({field})"
        if column not in row:
            if field in REQUIRED[task] and not (
                field == "context" and ("db_id" in mapping or "db_path" in mapping)
            ):
                raise DataError(f"{where}: missing {label}")
            continue
        value = _check_value(where, label, field, row[column])
        if value is not None:
            example[field] = value
    if task == "code":
        example.setdefault("input", "")
        example.setdefault("setup", "")
        example = {f: example[f] for f in FIELDS["code"]}
    return example


def _check_value(where: str, label: str, field: str, value):
    """A field's value, type-checked; None for an absent optional value."""
    if field == "tests":
        return _check_tests(where, label, value)
    if value is None or (isinstance(value, str) and not value.strip()):
        if field in _TEXT_FIELDS:
            raise DataError(f"{where}: {label} is empty")
        return "" if field in ("input", "setup") else None
    if not isinstance(value, str):
        raise DataError(f"{where}: {label} must be a string, got {type(value).__name__} {_short(value)}")
    return _unix_lines(value) if field in _CODE_FIELDS else value


def _check_tests(where: str, label: str, value) -> list[str]:
    """A list of assert statements; a CSV cell holding a JSON/Python list literal, or one test, also works."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                raise DataError(f"{where}: {label} is not a valid list of tests: {_short(value)}") from None
    elif isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise DataError(f"{where}: {label} must be a list of test strings, got {type(value).__name__}")
    if not value:
        raise DataError(f"{where}: {label} is empty; a code example needs at least one test")
    for i, test in enumerate(value):
        if not isinstance(test, str) or not test.strip():
            raise DataError(
                f"{where}: {label} item {i} must be a non-empty string, got {type(test).__name__} {_short(test)}"
            )
    return [_unix_lines(test) for test in value]


def _unix_lines(code: str) -> str:
    """Python reads \r\n and a lone \r as line ends too; the model should learn only \n."""
    return code.replace("\r\n", "\n").replace("\r", "\n")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _attach_db(example: dict, where: str, db_dir: Path | None, base_dir: Path | None, cache: dict) -> None:
    """db_id -> db_path under data.db_dir; relative db_path -> absolute; missing context -> the DB's schema."""
    if db_dir is not None and "db_id" in example:
        example["db_path"] = _db_file(db_dir, example["db_id"], where)
    elif "db_path" in example:
        path = Path(example["db_path"]).expanduser()
        path = path if path.is_absolute() else (base_dir or Path.cwd()) / path
        if not path.is_file():
            raise DataError(f"{where}: db_path {example['db_path']!r} does not exist")
        example["db_path"] = str(path.resolve())
    if "context" not in example:
        if "db_path" not in example:
            raise DataError(f"{where}: no context, and no database to read the schema from")
        if example["db_path"] not in cache:
            cache[example["db_path"]] = _schema_of(example["db_path"], where)
        example["context"] = cache[example["db_path"]]
    order = [f for f in FIELDS["sql"] if f in example]
    example.update({f: example.pop(f) for f in order})


def _db_file(db_dir: Path, db_id: str, where: str) -> str:
    for path in (db_dir / db_id / f"{db_id}.sqlite", db_dir / f"{db_id}.sqlite"):
        if path.is_file():
            return str(path)
    raise DataError(
        f"{where}: no database for db_id {db_id!r} in {db_dir} "
        f"(looked for {db_id}/{db_id}.sqlite and {db_id}.sqlite)"
    )


def _schema_of(db_path: str, where: str) -> str:
    """The CREATE TABLE statements of a SQLite file, opened read-only."""
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
            statements = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
            ).fetchall()
    except sqlite3.Error as e:
        raise DataError(f"{where}: cannot read the schema of {db_path} ({e})") from None
    if not statements:
        raise DataError(f"{where}: database {db_path} has no tables")
    return "\n".join(sql.strip().rstrip(";") + ";" for (sql,) in statements)


# --------------------------------------------------------------------------------------------- splitting


def _prompt_key(task: str, example: dict) -> tuple[str, str]:
    if task == "sql":
        return example["question"], example["context"]
    return example["instruction"], example["input"]


def _cut_missing(splits: dict[str, list[dict]], task: str, seed: int, origin: str) -> dict[str, list[dict]]:
    """Cuts dev and test, where the source has none, from train. Examples with the same prompt stay in one
    split (sql-create-context repeats questions), so no test prompt is also a training prompt."""
    missing = [s for s in ("dev", "test") if s not in splits]
    if not missing:
        return splits
    pool = splits["train"]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, example in enumerate(pool):
        groups.setdefault(_prompt_key(task, example), []).append(i)
    keys = list(groups)
    if len(keys) < len(missing) + 1:
        raise DataError(
            f"{origin}: {len(pool)} examples ({len(keys)} distinct prompts) are too few to cut "
            f"{' and '.join(missing)} from train: at least {len(missing) + 1} distinct prompts are needed, "
            "or name the splits with data.dev_file / data.test_file"
        )
    random.Random(seed).shuffle(keys)
    pos = 0
    for n, split in enumerate(missing):
        want = max(1, round(CUT_FRACTION[split] * len(pool)))
        reserve = len(missing) - n  # a group for each later split and for train
        taken: list[int] = []
        while len(taken) < want and pos < len(keys) - reserve:
            taken += groups[keys[pos]]
            pos += 1
        splits[split] = [pool[i] for i in sorted(taken)]  # source order: eval takes a fixed first-N slice
    splits["train"] = [pool[i] for i in sorted(i for k in keys[pos:] for i in groups[k])]
    return {name: splits[name] for name in ("train", "dev", "test")}


_TABLE = re.compile(r"^\s*CREATE TABLE\s+([\w\"`\[\]]+)\s*\((.*)\)\s*;?\s*$", re.I | re.S)


def _statements(context: str) -> list[str]:
    """A schema's CREATE TABLE statements, one string each."""
    starts = [m.start() for m in re.finditer(r"CREATE\s+TABLE\b", context, re.I)]
    return [context[a:b].strip().rstrip(";").strip() for a, b in zip(starts, starts[1:] + [len(context)], strict=True)]


def _columns(statement: str) -> tuple[str, list[tuple[str, str]]] | None:
    """'CREATE TABLE t (a VARCHAR, b INTEGER)' -> ('t', [('a', 'VARCHAR'), ('b', 'INTEGER')]); None when it holds
    more than plain columns (constraints, nested parentheses): such a statement is kept as it is."""
    m = _TABLE.match(statement)
    if not m or "(" in m.group(2):
        return None
    cols = []
    for part in m.group(2).split(","):
        words = part.split()
        if len(words) != 2:
            return None
        cols.append((words[0], words[1]))
    return m.group(1), cols


def widen_schemas(examples: list[dict], k: int, seed: int) -> list[dict]:
    """Training records with wider schemas (data.widen_schemas): each table of a record's schema gets the columns
    every record gives a table of that name (names compared as SQLite does, ignoring case; the first spelling and
    type seen), and k tables of other records join it; the statements are shuffled. Records with a database of
    their own are left as they are. Deterministic by seed."""
    known: dict[str, dict[str, tuple[str, str]]] = {}  # table (lower case) -> column (lower case) -> (as written, type)
    names: dict[str, str] = {}  # table (lower case) -> as first written
    for ex in examples:
        for statement in _statements(ex["context"]):
            parsed = _columns(statement)
            if parsed:
                names.setdefault(parsed[0].lower(), parsed[0])
                table = known.setdefault(parsed[0].lower(), {})
                for col, typ in parsed[1]:  # SQLite's names are case-insensitive: one column per name
                    table.setdefault(col.lower(), (col, typ))
    rng = random.Random(seed)
    pool = sorted(known)

    def render(name: str) -> str:
        return f"CREATE TABLE {names[name]} ({', '.join(f'{c} {t}' for c, t in known[name].values())})"

    out = []
    for ex in examples:
        if ex.get("db_path"):
            out.append(ex)
            continue
        statements, own = [], set()
        for statement in _statements(ex["context"]):
            parsed = _columns(statement)
            own.add((parsed[0] if parsed else statement).lower())
            statements.append(render(parsed[0].lower()) if parsed else statement)
        others = [n for n in pool if n not in own]
        statements += [render(n) for n in rng.sample(others, min(k, len(others)))]
        rng.shuffle(statements)
        out.append({**ex, "context": "; ".join(statements)})
    return out
