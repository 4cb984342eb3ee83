"""What the server says about a generated query, without running it: parsed by sqlglot, checked against
the schema the caller sent, one read-only SELECT/WITH, and transpiled to the caller's dialect.

    tables = parse_schema("CREATE TABLE singer (name TEXT, age INT)")     # SchemaError if not DDL
    check = check_sql("SELECT name FROM singer WHERE age > 30", tables, dialect="postgres")
    check.valid, check.reason, check.sql

The model writes SQLite (the prompt says so, shared/prompts.py); the checks run on that text and only the
answer is transpiled. Nothing here executes anything: the request's SQL is only parsed. The caller runs
the answer on its own database, so a valid query is one that is safe there, in any target dialect:
- Functions: only those of a read-only query (aggregates, window, string, math, date, JSON, CASE/CAST),
  from an allow-list, since the caller's dialect has functions SQLite lacks. Everything else is refused by
  name, with its kind where it is a known danger: file (pg_read_file, lo_export, LOAD_FILE, OPENROWSET),
  network (dblink_exec), sleep (pg_sleep, SLEEP, BENCHMARK), session (set_config, current_user), sequence
  (nextval) and admin (pg_terminate_backend, xp_cmdshell). Table-valued functions are refused.
- Tables: every table reference is an unqualified name of the caller's schema, or a CTE visible in the
  scope where it is used (a CTE defined inside a subquery does not count outside it). `other_schema.t` and
  `db.main.t` are refused, and so are qualified column names (`db.t.col`).
- Nothing raises for any model output: a query sqlglot cannot parse, or nests too deeply to walk
  (RecursionError), is `valid: false` with the reason. A schema that cannot be parsed, for any reason, is a
  SchemaError (the server's 400).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

from shared.execution.sql import DIALECT, check_read_only_query, create_table_statements

# Dialects a caller may ask for: sqlglot's own names (sqlite, postgres, mysql, bigquery, snowflake, ...).
DIALECTS = tuple(sorted(name for name in Dialect.classes if name))


# Functions of a read-only SQLite query that sqlglot models as classes (the names it parses them into:
# substr -> Substring, instr -> StrPosition, strftime -> TimeToStr, iif -> If, ifnull -> Coalesce, ...).
ALLOWED_FUNCTION_CLASSES = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atan2", "Atanh", "Avg", "Case", "Cast", "Ceil", "Chr",
    "Coalesce", "Concat", "ConcatWs", "Cos", "Cosh", "Count", "CumeDist", "Date", "Degrees", "DenseRank", "Exp",
    "FirstValue", "Floor", "Format", "Greatest", "GroupConcat", "Hex", "If", "JSONExtract", "JSONExtractScalar",
    "JSONObject", "JSONType", "Lag", "LastValue", "Lead", "Least", "Length", "Ln", "Log", "Lower", "Max", "Min",
    "NthValue", "Ntile", "Nullif", "PercentRank", "Pi", "Pow", "Radians", "Rand", "Rank", "Replace", "Round",
    "RowNumber", "Sign", "Sin", "Sinh", "Soundex", "Sqrt", "StrPosition", "Substring", "Sum", "Tan", "Tanh",
    "TimeToStr", "Trim", "Trunc", "TryCast", "TsOrDsToTimestamp", "Typeof", "Unicode", "Upper", "Mod",
    "Exists", "Any", "All",  # subquery predicates
})
# SQLite functions of a read-only query that sqlglot does not model (it parses them as Anonymous).
ALLOWED_FUNCTION_NAMES = frozenset({
    "datetime", "julianday", "json_array", "json_array_length", "json_valid", "likelihood", "likely",
    "octet_length", "printf", "quote", "time", "timediff", "total", "unixepoch", "unlikely", "ltrim", "rtrim",
    "instr", "substr", "ifnull", "iif", "char", "glob", "sign", "log10", "log2", "ceiling", "power", "pow",
})
# Known dangers, named in the refusal. Lower-case names as written, across dialects.
DANGEROUS_FUNCTIONS = {
    "file": {"pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_file_write", "lo_import",
             "lo_export", "lo_get", "lo_put", "lo_from_bytea", "load_file", "readfile", "writefile",
             "load_extension", "read_csv", "read_csv_auto", "read_parquet", "read_json", "read_text", "read_blob",
             "openrowset", "opendatasource", "openxml", "to_file", "pg_read_server_files"},
    "network": {"dblink", "dblink_exec", "dblink_connect", "dblink_send_query", "openquery", "http_get",
                "http_post", "utl_http", "utl_inaddr", "inet_server_addr", "inet_client_addr"},
    "sleep": {"pg_sleep", "pg_sleep_for", "pg_sleep_until", "sleep", "benchmark", "waitfor", "dbms_lock"},
    "session": {"set_config", "current_setting", "pg_advisory_lock", "pg_advisory_xact_lock", "pg_try_advisory_lock",
                "get_lock", "release_lock", "current_user", "session_user", "user", "system_user", "version",
                "database", "schema", "current_schema", "current_database", "current_role", "connection_id",
                "pg_backend_pid", "last_insert_id", "row_count", "found_rows", "sys_context", "txid_current"},
    "sequence": {"nextval", "currval", "setval", "lastval", "next_value_for", "sequence_next"},
    "admin": {"pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_promote",
              "pg_switch_wal", "pg_create_restore_point", "xp_cmdshell", "sp_executesql", "sp_oacreate",
              "sys_exec", "sys_eval", "query_to_xml", "dbms_pipe", "exec", "execute", "shell", "system",
              "pg_reload_hba", "lo_unlink", "pg_logical_emit_message"},
}
_KIND_OF = {name: kind for kind, names in DANGEROUS_FUNCTIONS.items() for name in names}
_KIND_OF.update({"currentuser": "session", "sessionuser": "session", "currentrole": "session",
                 "currentschema": "session", "currentdatabase": "session", "currentversion": "session",
                 "readcsv": "file", "readparquet": "file", "tofile": "file", "nextvaluefor": "sequence"})
# Operators sqlglot models as functions: not calls, always allowed.
_OPERATORS = (exp.Connector, exp.Binary, exp.Unary, exp.Paren)


class SchemaError(ValueError):
    """The request's schema is not a list of CREATE TABLE statements (or names no column)."""


@dataclass(frozen=True)
class SqlCheck:
    sql: str  # the query in the requested dialect (the model's text where it did not parse)
    valid: bool
    reason: str | None  # why it is not valid: parse error, not read-only, unknown table or column


def parse_schema(ddl: str) -> dict[str, dict[str, str]]:
    """CREATE TABLE statements -> {table: {column: type}}, names lower-cased. Anything else is refused,
    and every failure to parse (deep nesting included) is a SchemaError that names it."""
    try:
        return _parse_schema(ddl)
    except SchemaError:
        raise
    except RecursionError:
        raise SchemaError("schema is nested too deeply to parse") from None
    except (ValueError, SqlglotError) as e:
        raise SchemaError(str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__) from None
    except Exception as e:  # sqlglot on input it does not expect: still the caller's schema that is wrong
        raise SchemaError(f"schema could not be read ({type(e).__name__}: {str(e)[:200]})") from None


def _parse_schema(ddl: str) -> dict[str, dict[str, str]]:
    try:
        statements = create_table_statements(ddl)
    except ValueError as e:
        raise SchemaError(str(e)) from None
    tables: dict[str, dict[str, str]] = {}
    for text in statements:
        create = sqlglot.parse_one(text, read=DIALECT)
        columns = {c.name.lower(): (c.args["kind"].sql(DIALECT) if c.args.get("kind") else "TEXT")
                   for c in create.this.expressions if isinstance(c, exp.ColumnDef)}
        if not columns:
            raise SchemaError(f"table {create.this.this.name!r} has no columns")
        tables[create.this.this.name.lower()] = columns
    return tables


def check_sql(sql: str, tables: dict[str, dict[str, str]], dialect: str = DIALECT) -> SqlCheck:
    """Is `sql` one read-only query over `tables` (every table and column exists), with only the functions
    of a read-only query? Returns it transpiled. Raises only for an unknown dialect (the caller's error)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; one of: {', '.join(DIALECTS)}")
    try:
        return _check_sql(sql, tables, dialect)
    except RecursionError:
        return SqlCheck(sql, False, "nested too deeply to check (recursion limit)")
    except Exception as e:  # sqlglot on SQL it does not expect: never a 500
        return SqlCheck(sql, False, f"could not be checked ({type(e).__name__}: {str(e).strip()[:200]})")


def _check_sql(sql: str, tables: dict[str, dict[str, str]], dialect: str) -> SqlCheck:
    reason = check_read_only_query(sql)
    if reason is not None:
        return SqlCheck(sql, False, reason)
    query = _strings_for_unknown_quoted_names(sqlglot.parse_one(sql, read=DIALECT), tables)
    reason = _refused_function(query, dialect) or _refused_reference(query, tables)
    if reason is not None:
        return SqlCheck(sql, False, reason)
    try:
        qualify(query.copy(), schema=tables, dialect=DIALECT, validate_qualify_columns=True, identify=False)
    except OptimizeError as e:
        return SqlCheck(sql, False, f"not over the schema: {str(e).splitlines()[0]}")
    except SqlglotError as e:  # a construct the qualifier cannot follow: valid SQL, not checked against the schema
        return SqlCheck(sql, False, f"could not be checked against the schema: {str(e).splitlines()[0]}")
    try:
        out = query.sql(dialect=dialect)
    except SqlglotError as e:
        return SqlCheck(sql, False, f"cannot be written in {dialect}: {str(e).splitlines()[0]}")
    return SqlCheck(out, True, None)


def _refused_function(query: exp.Expression, dialect: str) -> str | None:
    """The first function that is not one of a read-only query, named, with its kind where known."""
    for node in query.find_all(exp.Func):
        if isinstance(node, _OPERATORS):
            continue
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            if name in ALLOWED_FUNCTION_NAMES:
                continue
        elif type(node).__name__ in ALLOWED_FUNCTION_CLASSES:
            continue
        else:
            name = node.sql_name().lower()
        kind = _KIND_OF.get(name) or _KIND_OF.get(type(node).__name__.lower())
        what = f"{'an' if kind == 'admin' else 'a'} {kind} function" if kind else "not a function of a read-only query"
        return f"function {name}() is not allowed in a {dialect} query: {what}"
    return None


def _refused_reference(query: exp.Expression, tables: dict[str, dict[str, str]]) -> str | None:
    """A table that is not an unqualified name of the schema or a CTE in scope, a table-valued function,
    or a column qualified with a schema or database."""
    known = ", ".join(sorted(tables))
    in_scope: set[int] = set()
    for scope in traverse_scope(query):
        ctes = {name.lower() for name in scope.cte_sources}
        for table in scope.tables:
            in_scope.add(id(table))
            reason = _refused_table(table, tables, ctes, known)
            if reason:
                return reason
    for table in query.find_all(exp.Table):  # any the scopes did not reach: no CTE counts for it
        if id(table) not in in_scope:
            reason = _refused_table(table, tables, set(), known)
            if reason:
                return reason
    for column in query.find_all(exp.Column):
        if column.args.get("db") is not None or column.args.get("catalog") is not None:
            return f"column {column.sql(DIALECT)}: qualify columns with a table of the schema only"
    return None


def _refused_table(table: exp.Table, tables: dict, ctes: set[str], known: str) -> str | None:
    if not isinstance(table.this, exp.Identifier):
        inner = table.this
        name = inner.name if isinstance(inner, exp.Anonymous) else getattr(inner, "sql_name", lambda: "")()
        return f"table-valued function {(name or type(inner).__name__).lower()}() is not allowed: tables of the schema only"
    if table.args.get("db") is not None or table.args.get("catalog") is not None:
        return f"table {table.sql(DIALECT)} is not in the schema: tables of the schema only, unqualified ({known})"
    name = table.name.lower()
    if name in ctes:
        return None
    if name not in tables:
        return f"unknown table {table.name!r}; the schema has: {known}"
    return None


def _strings_for_unknown_quoted_names(query: exp.Expression, tables: dict[str, dict[str, str]]) -> exp.Expression:
    """SQLite reads a double-quoted name that is no column as a string ("USA"), and so do SQLite-trained
    models and datasets (Spider). The same here: such a name becomes a string literal, so that it is
    checked as SQLite would run it and transpiled as a string ('USA') to other dialects."""
    known = {c for columns in tables.values() for c in columns}
    known |= {a.alias.lower() for a in query.find_all(exp.Alias)}
    for column in list(query.find_all(exp.Column)):
        ident = column.this
        if (isinstance(ident, exp.Identifier) and ident.quoted and not column.table
                and ident.name.lower() not in known):
            column.replace(exp.Literal.string(ident.name))
    return query
