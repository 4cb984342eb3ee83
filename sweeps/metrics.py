"""The sweep's own metrics, exported through ray.util.metrics to the cluster's Prometheus endpoint (and the
dashboard's Metrics view), updated from a Tune callback in the driver.

    qlora_sweep_trials{sweep, state}         trials by state (sweeps/trials.py): pending, running, finished
                                             (ran to train.max_steps), stopped (by ASHA), failed (after
                                             retries), no_result
    qlora_sweep_retries{sweep}               trial restarts after a crash or out-of-memory
    qlora_sweep_best_objective{sweep, metric} best sweep/objective reported so far (any rung)

Ray prefixes application metrics with "ray_" on the endpoint (ray_qlora_sweep_trials...). The trial table
itself is Tune's own, in the job's logs.
"""

from __future__ import annotations

import math

from ray.tune import Callback
from ray.util.metrics import Gauge

from sweeps.trials import STATES, trial_state


class SweepMetrics(Callback):
    """Holds the gauges (state across Tune's events) and refreshes them from the trial list."""

    def __init__(self, sweep_id: str, objective: str, mode: str, max_steps: int):
        self.sweep_id, self.objective, self.mode, self.max_steps = sweep_id, objective, mode, max_steps
        self.trials = Gauge("qlora_sweep_trials", "Trials of the sweep by state", tag_keys=("sweep", "state"))
        self.retries = Gauge("qlora_sweep_retries", "Trial restarts after a crash or OOM", tag_keys=("sweep",))
        self.best = Gauge(
            "qlora_sweep_best_objective", "Best objective reported so far", tag_keys=("sweep", "metric")
        )
        self.n_retries = 0
        self.best_value = math.nan

    def _refresh(self, trials) -> None:
        counts = dict.fromkeys(STATES, 0)
        for t in trials:
            counts[trial_state(t.status, (t.last_result or {}).get("train/steps"), self.max_steps)] += 1
        for state, n in counts.items():
            self.trials.set(n, tags={"sweep": self.sweep_id, "state": state})
        self.retries.set(self.n_retries, tags={"sweep": self.sweep_id})
        if not math.isnan(self.best_value):
            self.best.set(self.best_value, tags={"sweep": self.sweep_id, "metric": self.objective})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._refresh(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.objective)
        if value is not None and math.isfinite(value):
            better = value > self.best_value if self.mode == "max" else value < self.best_value
            if math.isnan(self.best_value) or better:
                self.best_value = value
        self._refresh(trials)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.n_retries += 1
        self._refresh(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._refresh(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._refresh(trials)

    def on_experiment_end(self, trials, **info):
        self._refresh(trials)
