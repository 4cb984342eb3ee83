"""Text-to-SQL, scored by execution: the predicted and the gold query run on the same SQLite databases and
their results are compared.

    task = SqlTask(timeout_s=2.0, match="spider")
    task.score(["SELECT count(*) FROM singer"], [{"question": ..., "context": ..., "answer": ...}])
    # {"eval/sql_exec_acc": 1.0, "eval/sql_exec_acc_spider": 1.0, "eval/sql_exact_match": 1.0,
    #  "eval/sql_valid_rate": 1.0}

An example is the loaders' normalized dict: question, context (CREATE TABLE statements), answer (gold SQL),
and optionally db_path (a SQLite file with data; a db_id is resolved to it by the loader), alternatives
(several acceptable golds, as defog lists them: any one counts) and category.

Databases: with db_path, that one. Without it, `databases` (3 by default) populated databases synthesized
from the context, the gold's literals seeded in (shared/data/synth.py); the prediction is correct only if
it matches the gold on every one of them. On 200 b-mc2/sql-create-context records the fixed wrong query
`SELECT <first column> FROM <first table>` scores 0.0 this way (0.685 on one empty database).

Match modes (`match`, eval.sql_match; the metric eval/sql_exec_acc_<mode> names the one used, and
eval/sql_exec_acc repeats it for the sweep's objective):
- "spider": the official Spider exec match (taoyds/test-suite-sql-eval `eval_exec_match`, as run with
  --keep_distinct): rows as a multiset, as a list when the gold orders its result; the prediction's
  columns in any order (one permutation for all rows); two empty results match. Where it departs on
  purpose (each seen on Spider dev):
  * ORDER BY counts only at the gold's top level: the official looks for the text "order by" anywhere, so
    `SELECT name FROM t WHERE id IN (SELECT id FROM u ORDER BY x LIMIT 3)` makes it compare row order
    that SQLite does not define.
  * Floats compare at 6 significant digits (3.0 == 3 as in the official): AVG() summed in another order
    gives 0.30000000000000004 against 0.3, which the official calls different.
  * Text is not rewritten: the official turns `> =` into `>=` (and `YEAR(CURDATE())` into 2020) before
    running; here `> =` is a syntax error, scored as such.
- "strict": as "spider" but column order counts (rows are compared as tuples).

Scoring never dies: a prediction that breaks the parser (deep nesting, 10 MB of text, NUL bytes) or
anything else is scored as a failure with its reason; one bad prediction never loses the others' scores.
"""

from __future__ import annotations

from shared.execution.sql import (
    MATCH_MODES,
    SqlResult,
    analyze_query,
    check_read_only_query,
    has_order_by,
    results_match,
    run_queries,
    same_sql,
)


_GOLD_CACHE: dict[tuple, SqlResult] = {}
_GOLD_CACHE_SIZE = 50_000  # results of at most 10,000 rows each; Spider's are ~3 rows on average


class SqlTask:
    name = "sql"
    metric = "eval/sql_exec_acc"

    def __init__(self, timeout_s: float = 2.0, max_rows: int = 10_000, match: str = "spider",
                 databases: int = 3, seed: int = 0):
        if match not in MATCH_MODES:
            raise ValueError(f"unknown match mode {match!r}; expected one of {', '.join(MATCH_MODES)}")
        if databases < 1:
            raise ValueError(f"databases must be at least 1, got {databases}")
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.match = match
        self.databases = databases
        self.seed = seed

    def score_one(self, prediction: str, example: dict) -> dict:
        """{"correct", "exact_match", "executed" (the prediction ran), "error" (None when correct)}."""
        try:
            return self._score_one(prediction, example)
        except Exception as e:  # noqa: BLE001 - one bad prediction never loses the others' scores
            return {"correct": False, "exact_match": False, "executed": False,
                    "error": f"scorer: {type(e).__name__}: {str(e)[:200]}"}

    def score(self, predictions: list[str], examples: list[dict]) -> dict[str, float]:
        return summarize(self.score_all(predictions, examples), self.match)

    def score_all(self, predictions: list[str], examples: list[dict]) -> list[dict]:
        """score_one of every pair, in order; as many at a time as the pool has workers (while one waits
        for its worker, the other parses)."""
        from concurrent.futures import ThreadPoolExecutor

        from shared.execution.sql import POOL_SIZE

        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        if not examples:
            raise ValueError("nothing to score: no examples")
        with ThreadPoolExecutor(max_workers=POOL_SIZE) as pool:
            return list(pool.map(self.score_one, predictions, examples))

    def databases_for(self, example: dict) -> list[str]:
        """The databases an example is scored on: its own, or the synthesized ones."""
        if example.get("db_path"):
            return [str(example["db_path"])]
        from shared.data.synth import populated_databases

        paths = populated_databases(example["context"], _golds(example)[0], example.get("question", ""),
                               k=self.databases, seed=self.seed)
        return [str(p) for p in paths]

    def _score_one(self, prediction: str, example: dict) -> dict:
        golds = _golds(example)
        if not isinstance(prediction, str):
            prediction = "" if prediction is None else str(prediction)
        # One parse for the check and exact match (parsing is most of the scoring time). Exact match is
        # rendered only where it can hold: the same query as a gold that runs gives the gold's result.
        reason, statements = analyze_query(prediction)
        verdict = {"correct": False, "exact_match": False, "executed": False}
        try:
            dbs = self.databases_for(example)
        except ValueError as e:
            return verdict | {"error": f"schema: {e}", "exact_match": same_sql(prediction, statements, golds)}
        if reason is not None:
            return verdict | {"error": f"refused: {reason}"}
        preds = self._run(dbs, golds, prediction)
        failed = next((p for p in preds if not p.ok), None)
        if failed is not None:
            return verdict | {"error": failed.error}
        verdict["executed"] = True
        gold_error = None
        for gold_sql in golds:
            results = [self._gold_result(db, gold_sql) for db in dbs]
            failed = next((g for g in results if not g.ok), None)
            if failed is not None:
                gold_error = gold_error or failed.error
                continue
            ordered = has_order_by(gold_sql)
            if all(results_match(p.rows, g.rows, ordered, self.match) for p, g in zip(preds, results, strict=True)):
                return verdict | {"correct": True, "error": None,
                                  "exact_match": same_sql(prediction, statements, golds)}
            gold_error = gold_error or ""
        if gold_error:
            return verdict | {"error": f"gold failed: {gold_error}",
                              "exact_match": same_sql(prediction, statements, golds)}
        return verdict | {"error": "different result"}

    def _run(self, dbs: list[str], golds: list[str], prediction: str) -> list[SqlResult]:
        """The prediction's results on dbs; the golds not yet cached run in the same worker round trip
        (first, so a runaway prediction cannot keep them from running)."""
        missing = [(db, g) for g in golds for db in dbs if self._gold_key(db, g) not in _GOLD_CACHE]
        if len(_GOLD_CACHE) + len(missing) > _GOLD_CACHE_SIZE:
            _GOLD_CACHE.clear()
        runnable = []
        for db, g in missing:
            reason = check_read_only_query(g)  # cached per gold text
            if reason is None:
                runnable.append((db, g))
            else:
                _GOLD_CACHE[self._gold_key(db, g)] = SqlResult(False, None, f"refused: {reason}")
        jobs = runnable + [(db, prediction) for db in dbs]
        results = run_queries(jobs, self.timeout_s, self.max_rows, checked=True)
        for (db, g), result in zip(runnable, results, strict=False):
            if not (result.error or "").startswith("not run"):
                _GOLD_CACHE[self._gold_key(db, g)] = result
        preds = results[len(runnable):]
        # A gold that stopped the worker leaves the prediction unrun: run it on its own.
        return [run_queries([(db, prediction)], self.timeout_s, self.max_rows, checked=True)[0]
                if (p.error or "").startswith("not run") else p for db, p in zip(dbs, preds, strict=True)]

    def _gold_key(self, db: str, gold_sql: str) -> tuple:
        return (db, gold_sql, self.timeout_s, self.max_rows)

    def _gold_result(self, db: str, gold_sql: str) -> SqlResult:
        """Cached for the process (evaluation repeats on the same examples at every rung, a new task object
        each time, and neither gold nor database changes), up to _GOLD_CACHE_SIZE results."""
        key = self._gold_key(db, gold_sql)
        if key not in _GOLD_CACHE:
            if len(_GOLD_CACHE) >= _GOLD_CACHE_SIZE:
                _GOLD_CACHE.clear()
            _GOLD_CACHE[key] = run_queries([(db, gold_sql)], self.timeout_s, self.max_rows)[0]
        return _GOLD_CACHE[key]


def summarize(details: list[dict], match: str) -> dict[str, float]:
    """The task's metrics from score_one verdicts."""
    n = len(details)
    accuracy = sum(d["correct"] for d in details) / n
    return {
        "eval/sql_exec_acc": accuracy,
        f"eval/sql_exec_acc_{match}": accuracy,
        "eval/sql_exact_match": sum(d["exact_match"] for d in details) / n,
        "eval/sql_valid_rate": sum(d["executed"] for d in details) / n,
    }


def _golds(example: dict) -> list[str]:
    return list(example.get("alternatives") or [example["answer"]])
