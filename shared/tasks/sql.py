"""Text-to-SQL, scored by execution: the predicted and the gold query run on the same SQLite database and
their results are compared (as lists when the gold has a top-level ORDER BY, else as multisets).

    task = SqlTask(timeout_s=2.0)
    task.score(["SELECT count(*) FROM singer"], [{"question": ..., "context": ..., "answer": ...}])
    # {"eval/sql_exec_acc": 1.0, "eval/sql_exact_match": 1.0, "eval/sql_valid_rate": 1.0}

An example is the loaders' normalized dict: question, context (CREATE TABLE statements), answer (gold SQL),
and optionally db_path (a SQLite file with data; a db_id is resolved to it by the loader). Without db_path
both queries run on an empty database built from the context: that only checks that the prediction runs
and agrees with the gold on empty tables (a weak signal: any query that returns no rows, or COUNT(*) = 0,
"matches"), so report such numbers as such.
"""

from __future__ import annotations

from shared.execution.sql import SqlResult, has_order_by, normalize_sql, results_match, run_query, schema_db


class SqlTask:
    name = "sql"
    metric = "eval/sql_exec_acc"

    def __init__(self, timeout_s: float = 2.0, max_rows: int = 10_000):
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        # Gold results by (database, gold SQL): evaluation repeats on the same examples every few hundred
        # steps, and the gold never changes.
        self._gold: dict[tuple[str, str], SqlResult] = {}

    def score_one(self, prediction: str, example: dict) -> dict:
        """{"correct", "exact_match", "executed" (the prediction ran), "error" (None when correct)}."""
        gold_sql = example["answer"]
        exact_match = normalize_sql(prediction) == normalize_sql(gold_sql)
        try:
            db = str(example.get("db_path") or schema_db(example["context"]))
        except ValueError as e:
            return {"correct": False, "exact_match": exact_match, "executed": False, "error": f"schema: {e}"}
        pred = run_query(db, prediction, self.timeout_s, self.max_rows)
        gold = self._gold_result(db, gold_sql)
        if not gold.ok:
            return {"correct": False, "exact_match": exact_match, "executed": pred.ok,
                    "error": f"gold failed: {gold.error}"}
        if not pred.ok:
            return {"correct": False, "exact_match": exact_match, "executed": False, "error": pred.error}
        correct = results_match(pred.rows, gold.rows, ordered=has_order_by(gold_sql))
        return {"correct": correct, "exact_match": exact_match, "executed": True,
                "error": None if correct else "different result"}

    def score(self, predictions: list[str], examples: list[dict]) -> dict[str, float]:
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        if not examples:
            raise ValueError("nothing to score: no examples")
        details = [self.score_one(p, e) for p, e in zip(predictions, examples, strict=True)]
        n = len(details)
        return {
            "eval/sql_exec_acc": sum(d["correct"] for d in details) / n,
            "eval/sql_exact_match": sum(d["exact_match"] for d in details) / n,
            "eval/sql_valid_rate": sum(d["executed"] for d in details) / n,
        }

    def _gold_result(self, db: str, gold_sql: str) -> SqlResult:
        key = (db, gold_sql)
        if key not in self._gold:
            self._gold[key] = run_query(db, gold_sql, self.timeout_s, self.max_rows)
        return self._gold[key]

