"""What the server says about a generated query, without running it: parsed by sqlglot, checked against
the schema the caller sent, one read-only SELECT/WITH, and transpiled to the caller's dialect.

    tables = parse_schema("CREATE TABLE singer (name TEXT, age INT)")     # SchemaError if not DDL
    check = check_sql("SELECT name FROM singer WHERE age > 30", tables, dialect="postgres")
    check.valid, check.reason, check.sql

The model writes SQLite (the prompt says so, shared/prompts.py); the checks run on that text and only the
answer is transpiled. Nothing here executes anything: the request's SQL is only parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify

from shared.execution.sql import DIALECT, check_read_only_query, create_table_statements

# Dialects a caller may ask for: sqlglot's own names (sqlite, postgres, mysql, bigquery, snowflake, ...).
DIALECTS = tuple(sorted(name for name in Dialect.classes if name))


class SchemaError(ValueError):
    """The request's schema is not a list of CREATE TABLE statements (or names no column)."""


@dataclass(frozen=True)
class SqlCheck:
    sql: str  # the query in the requested dialect (the model's text where it did not parse)
    valid: bool
    reason: str | None  # why it is not valid: parse error, not read-only, unknown table or column


def parse_schema(ddl: str) -> dict[str, dict[str, str]]:
    """CREATE TABLE statements -> {table: {column: type}}, names lower-cased. Anything else is refused."""
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
    """Is `sql` one read-only query over `tables` (every table and column exists)? Returns it transpiled."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; one of: {', '.join(DIALECTS)}")
    reason = check_read_only_query(sql)
    if reason is not None:
        return SqlCheck(sql, False, reason)
    query = _strings_for_unknown_quoted_names(sqlglot.parse_one(sql, read=DIALECT), tables)
    ctes = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    for table in query.find_all(exp.Table):
        name = table.name.lower()
        if name and name not in tables and name not in ctes:
            return SqlCheck(sql, False, f"unknown table {table.name!r}; the schema has: {', '.join(sorted(tables))}")
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
