"""Evaluation tasks: one small object per task, one interface (`name`, `metric`, `score_one`, `score`).

    from shared.tasks import get_task
    task = get_task("sql", cfg.eval)  # from the eval config: sql_timeout_s, sql_max_rows, sql_match, sql_databases
    metrics = task.score(predictions, examples)  # {"eval/sql_exec_acc": ..., ...}
"""

from __future__ import annotations

from shared.tasks.code import CodeTask
from shared.tasks.sql import SqlTask

TASKS = {"sql": SqlTask, "code": CodeTask}


def get_task(name: str, eval_cfg=None, **options):
    """The task object for "sql" or "code". Its settings come from `eval_cfg` (an EvalConfig: sql_timeout_s,
    sql_max_rows, sql_match and sql_databases, or py_timeout_s and py_memory_mb) when given; `options`
    override them."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    if eval_cfg is not None:
        if name == "sql":
            limits = {"timeout_s": eval_cfg.sql_timeout_s, "max_rows": eval_cfg.sql_max_rows,
                      "match": eval_cfg.sql_match, "databases": eval_cfg.sql_databases}
        else:
            limits = {"timeout_s": eval_cfg.py_timeout_s, "memory_mb": eval_cfg.py_memory_mb}
        options = limits | options
    return TASKS[name](**options)
