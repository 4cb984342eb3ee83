"""Sandboxed executors for model output: SQL on read-only SQLite (sql.py), Python in a subprocess
(python.py)."""
