"""Facts about a sweep's trials, in one place: their states, how they are ranked, the flat config keys,
the trial number, and each task's accuracy metric. The driver's summary (sweeps/run.py), the report
(sweeps/report.py) and the Prometheus gauges (sweeps/metrics.py) all use these, so a trial is called the
same thing, and sits at the same place, everywhere.
"""

from __future__ import annotations

import math
from typing import Any

from shared.tasks import TASKS

# The Optuna trial number: names a trial across Tune, Optuna, folders and the leaderboard. It rides in the
# trial's config beside the sampled keys.
TRIAL_NUMBER = "trial_number"

# Each task's accuracy on the dev split, as the task itself names it: {"sql": "eval/sql_exec_acc", ...}.
TASK_METRIC = {name: task.metric for name, task in TASKS.items()}

# A trial's state, one vocabulary. Tune marks a trial that ASHA stopped TERMINATED, like one that ran to the
# end; the steps it trained tell them apart.
PENDING, RUNNING, FINISHED, STOPPED, FAILED, NO_RESULT = (
    "pending", "running", "finished", "stopped", "failed", "no_result")
STATES = (PENDING, RUNNING, FINISHED, STOPPED, FAILED, NO_RESULT)
STATE_NOTE = {
    PENDING: "not started when the sweep ended (interrupted; resume it to finish)",
    RUNNING: "still running when the sweep ended (interrupted; resume it to finish)",
    FINISHED: "trained its full step budget",
    STOPPED: "ended by the scheduler (ASHA) before its step budget",
    FAILED: "raised an error after its retries (its last reported values are kept)",
    NO_RESULT: "never reported a result",
}


def trial_state(status: str | None, steps: int | None, max_steps: int, failed: bool = False) -> str:
    """status: Tune's (PENDING, RUNNING, PAUSED, TERMINATED, ERROR) or None where unknown; steps: the last
    train/steps the trial reported, None if it reported nothing. A trial that ended before max_steps without
    an error was stopped by ASHA (or cut by train.max_time_s)."""
    if failed or status == "ERROR":
        return FAILED
    if status in ("PENDING", "PAUSED"):
        return PENDING
    if status == "RUNNING":
        return RUNNING
    if steps is None:
        return NO_RESULT
    return FINISHED if steps >= max_steps else STOPPED


def rank_key(mode: str, state: str, best: float | None, last: float | None, loss: float | None = None,
             steps: int | None = 0) -> tuple:
    """The leaderboard's order: the best value a trial reached at any report (the values ASHA compared),
    ties (common for accuracy on small slices) by the better last value, then the lower eval/loss reached,
    then fewer steps. Failed and unscored trials last."""
    sign = -1 if mode == "max" else 1
    return (state == FAILED or best is None, sign * (best or 0.0), sign * (last or 0.0),
            math.inf if loss is None else loss, steps or 0)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'lora': {'rank': 8}, 'train.learning_rate': 1e-3} -> {'lora.rank': 8, 'train.learning_rate': 1e-3}.
    An empty dict is a value, not a branch (kept as {})."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, name + ".")
        else:
            flat[name] = value
    return flat
