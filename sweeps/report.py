"""The report of a finished sweep: a leaderboard (CSV + Markdown) and report.md with plots.

    python -m sweeps.report ray_results/sql-asha --objective eval/sql_exec_acc --mode max --out artifacts/report

`write_report(source, out_dir, objective, mode)` takes a `ray.tune.ResultGrid` (what `Tuner.fit()` returns)
or an experiment folder (restored with `tune.ExperimentAnalysis`, no running cluster needed) and writes:

    leaderboard.csv / leaderboard.md   one row per trial, best first, failed trials last
    report.md                          summary, best config as dotted overrides, the plots, the leaderboard
    history.png                        objective per trial in start order, with the best-so-far line
    importance.png                     parameter importances (optuna, PED-ANOVA), from 3 trials on
    curves.png                         objective and eval/loss against training step; x where ASHA stopped
    params.png                         objective against each sampled numeric hyperparameter

Everything after loading works on `TrialRecord`s (id, flat config, per-report history, error), so the
tables and plots are tested on synthetic records without Ray. States are sweeps/trials.py's: a trial is
"stopped" when it ended without error before the step budget (Tune marks scheduler stops TERMINATED like
finished trials), so the budget is read from the trial's `train.max_steps` if it was sampled, else it is the most steps any trial
trained (override with max_steps=). A trial cut by `train.max_time_s` also reads as stopped early.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps.space import to_overrides
from sweeps.trials import (
    FAILED, FINISHED, NO_RESULT, PENDING, RUNNING, STATE_NOTE, STOPPED, TASK_METRIC, TRIAL_NUMBER, flatten, rank_key,
    trial_state,
)

STEP_KEYS = ("train/steps", "training_iteration")  # the x axis of a trial's history, first one present
LOSS_KEY = "eval/loss"
# Task accuracies shown beside the objective when it is another metric (the sweep ranks on sweep/objective:
# accuracy with an eval/loss tie-break, sweeps/config.py).
ACCURACY_KEYS = tuple(TASK_METRIC.values())
WALL_KEY = "time_total_s"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the report needs it. history: one row per report, columns are metric names; status:
    Tune's status of the trial (TERMINATED, ERROR, RUNNING, PENDING...) where known; order: its place in
    the order trials were created."""

    trial_id: str
    config: dict[str, Any]
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    error: str | None = None
    status: str | None = None
    order: int = 0


# ------------------------------------------------------------------------------------------- loading


def load_records(source) -> tuple[list[TrialRecord], str]:
    """A ResultGrid or an experiment folder -> (records in trial-creation order, experiment path).

    Metrics and errors come from the ResultGrid's results; each trial's config, status and creation
    order from the experiment state (tune.ExperimentAnalysis), which has them also for a trial that
    failed or never started before its first report (its Result then carries no config)."""
    from ray import tune

    if isinstance(source, str | Path):
        analysis = tune.ExperimentAnalysis(str(Path(source).expanduser().resolve()))
        grid = tune.ResultGrid(analysis)
    else:
        grid = source
        analysis = tune.ExperimentAnalysis(grid.experiment_path, storage_filesystem=grid.filesystem)
    trials = {t.trial_id: t for t in analysis.trials}
    records = [_record(result, trials.get((result.metrics or {}).get("trial_id"))) for result in grid]
    return in_start_order(records), str(grid.experiment_path)


def in_start_order(records: list[TrialRecord]) -> list[TrialRecord]:
    """By the sweep's trial number where every trial has one, else by creation order (stable)."""
    if records and all(isinstance(r.config.get(TRIAL_NUMBER), int) for r in records):
        return sorted(records, key=lambda r: (r.config[TRIAL_NUMBER], r.order))
    return sorted(records, key=lambda r: r.order)


def _record(result, trial=None) -> TrialRecord:
    metrics = result.metrics or {}
    trial_id = str(metrics.get("trial_id") or (trial.trial_id if trial else Path(str(result.path)).name))
    config = result.config or (trial.config if trial else {})
    history = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
    history = history.drop(columns=[c for c in history.columns if c.startswith("config/")])
    return TrialRecord(
        trial_id=trial_id, config=flatten(config), history=history.reset_index(drop=True),
        error=_error_line(result.error) if result.error else None,
        status=trial.status if trial else None, order=_creation_index(trial),
    )


def _creation_index(trial) -> int:
    """Tune tags each trial '<index>_<params>' in the order it creates them."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return int(head) if head.isdigit() else 10**9


def _error_line(error: BaseException) -> str:
    """The line that names the exception: a RayTaskError's text is a traceback, and its last line may be
    Ray's own ('An unexpected internal error occurred...') with the cause a few lines above it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", line)]
    text = named[-1] if named else f"{type(error).__name__}: {lines[-1] if lines else ''}"
    return text if len(text) <= 200 else text[:197] + "..."


# ----------------------------------------------------------------------------------------- the table


def choose_metric(records: list[TrialRecord], objective: str, mode: str, fallback: str) -> tuple[str, str]:
    """The objective if any trial reported it, else the fallback (minimized when it is a loss)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if any(_series(r, objective).size for r in records):
        return objective, mode
    if any(_series(r, fallback).size for r in records):
        return fallback, "min" if fallback.endswith("loss") else mode
    return objective, mode


def _series(record: TrialRecord, key: str) -> pd.Series:
    if key not in record.history.columns:
        return pd.Series(dtype=float)
    return pd.to_numeric(record.history[key], errors="coerce").dropna()


def _best_of(record: TrialRecord, key: str, mode: str) -> float | None:
    values = _series(record, key)
    return (float(values.max()) if mode == "max" else float(values.min())) if values.size else None


def _last(record: TrialRecord, key: str) -> float | None:
    values = _series(record, key)
    return float(values.iloc[-1]) if values.size else None


def steps_of(record: TrialRecord) -> pd.Series:
    """The training step of every report (train/steps, else Tune's training_iteration)."""
    for key in STEP_KEYS:
        if key in record.history.columns:
            return pd.to_numeric(record.history[key], errors="coerce")
    return pd.Series(range(1, len(record.history) + 1), dtype=float)


def steps_done(record: TrialRecord) -> int:
    steps = steps_of(record).dropna()
    return int(steps.iloc[-1]) if steps.size else 0


def swept_params(records: list[TrialRecord]) -> tuple[list[str], dict[str, Any]]:
    """(hyperparameters that vary across trials, sorted; {name: value} of those that are the same in all).
    Hyperparameters are the config's dotted keys (lora.rank); others, like trial_number, are not."""
    names = sorted({k for r in records for k, v in r.config.items() if "." in k and _is_scalar(v)})
    varying, fixed = [], {}
    for name in names:
        values = {repr(r.config.get(name)) for r in records}
        if len(values) > 1:
            varying.append(name)
        else:
            fixed[name] = next(r.config.get(name) for r in records)
    return varying, fixed


def _is_scalar(value) -> bool:
    return isinstance(value, bool | int | float | str) or value is None


def leaderboard(records: list[TrialRecord], metric: str, mode: str, max_steps: int | None = None) -> list[dict]:
    """One dict per trial, best first: position, trial_id, state, the swept parameters, <metric> best and
    last, eval/loss, steps, wall_s, error. Ranked on the best value each trial reached; ties (common for
    accuracy on small dev slices) go to the better last value, then the lower eval/loss reached, then fewer
    steps. Trials with an error or no value come last."""
    params, _ = swept_params(records)
    accuracies = [k for k in ACCURACY_KEYS if k != metric and any(_series(r, k).size for r in records)]
    numbered = any(TRIAL_NUMBER in r.config for r in records)
    longest = max((steps_done(r) for r in records), default=0)
    rows = []
    for r in records:
        values = _series(r, metric)
        best = (values.max() if mode == "max" else values.min()) if values.size else None
        steps = steps_done(r)
        budget = max_steps or r.config.get("train.max_steps") or longest
        state = trial_state(r.status, None if r.history.empty else steps, budget, failed=bool(r.error))
        rows.append({
            **({TRIAL_NUMBER: r.config.get(TRIAL_NUMBER)} if numbered else {}),
            "trial_id": r.trial_id,
            "state": state,
            **{p: r.config.get(p) for p in params},
            f"{metric} best": None if best is None else float(best),
            f"{metric} last": None if best is None else float(values.iloc[-1]),
            **{f"{k} best": _best_of(r, k, "max") for k in accuracies},
            **({LOSS_KEY: _last(r, LOSS_KEY)} if metric != LOSS_KEY else {}),
            "steps": steps,
            "wall_s": _last(r, WALL_KEY),
            "error": r.error or "",
        })
    lowest_loss = {r.trial_id: _best_of(r, LOSS_KEY, "min") for r in records}
    rows.sort(key=lambda row: rank_key(mode, row["state"], row[f"{metric} best"], row[f"{metric} last"],
                                       lowest_loss[row["trial_id"]], row["steps"]))
    return [{"position": i, **row} for i, row in enumerate(rows, 1)]


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["position", "trial_id", "state"])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "_no trials_\n"
    cols = [c for c in rows[0] if c != "error" or any(row["error"] for row in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# -------------------------------------------------------------------------------------- importances


def param_importances(rows: list[dict], params: list[str], metric: str, mode: str) -> tuple[dict[str, float], str]:
    """PED-ANOVA importances (optuna's default evaluator) on a study rebuilt from the leaderboard rows.

    Every trial with a value counts, early-stopped ones with the best value they reached (the numbers
    ASHA itself compared). PED-ANOVA asks how much each parameter's distribution among the top trials
    differs from its distribution among all; the top is the best 10%, but at least 2 trials (its minimum)
    and at most half. fANOVA would need scikit-learn, which nothing else here uses. Returns ({}, reason)
    when there is nothing to say: fewer than 3 such trials, no parameter that varies, an evaluator error."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    done = [row for row in rows if row[f"{metric} best"] is not None and row["state"] != FAILED]
    if len(done) < 3:
        return {}, f"{len(done)} trial(s) with a value of {metric}; importances need at least 3"
    distributions = {p: d for p in params if (d := _distribution([row[p] for row in done])) is not None}
    if not distributions:
        return {}, "no swept parameter varies across the completed trials"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for row in done:
            study.add_trial(optuna.trial.create_trial(
                params={p: _param_value(row[p], d) for p, d in distributions.items()},
                distributions=distributions, value=row[f"{metric} best"],
            ))
        top = min(0.5, max(0.1, 2 / len(done)))
        evaluator = PedAnovaImportanceEvaluator(target_quantile=top)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "prefer at least 5 trials above the quantile": said in the note
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as e:
        return {}, f"optuna could not compute importances: {e}"
    finally:
        optuna.logging.set_verbosity(verbosity)
    return dict(importances), f"PED-ANOVA over {len(done)} trials (top {top:.0%} against all)"


def _distribution(values: list):
    """The optuna distribution that spans the observed values (log scale when they span 10x or more)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if any(v is None for v in values) or len({repr(v) for v in values}) < 2:
        return None
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        lo, hi = min(values), max(values)
        log = lo > 0 and hi / lo >= 10
        if all(isinstance(v, int) for v in values):
            return IntDistribution(int(lo), int(hi), log=log)
        return FloatDistribution(float(lo), float(hi), log=log)
    return CategoricalDistribution(sorted({str(v) for v in values}))


def _param_value(value, distribution):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(distribution, CategoricalDistribution):
        return str(value)
    return float(value) if isinstance(distribution, FloatDistribution) else int(value)


# -------------------------------------------------------------------------------------------- plots
# The object-oriented matplotlib API on an Agg canvas: no pyplot, no global backend switch.


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


STATE_STYLE = {  # colour, marker
    FINISHED: ("tab:blue", "o"),
    STOPPED: ("tab:orange", "v"),
    FAILED: ("tab:red", "X"),
    RUNNING: ("tab:purple", "s"),
    PENDING: ("tab:purple", "s"),
    NO_RESULT: ("tab:gray", "."),
}


def plot_history(records: list[TrialRecord], rows: list[dict], metric: str, mode: str, path: Path) -> Path | None:
    """The best value of each trial in start order, coloured by state, and the best-so-far line (which
    skips failed trials, as the leaderboard does)."""
    by_id = {row["trial_id"]: row for row in rows}
    points = [(i, by_id[r.trial_id]) for i, r in enumerate(records) if by_id[r.trial_id][f"{metric} best"] is not None]
    if not points:
        return None
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    for state, (colour, marker) in STATE_STYLE.items():
        xs = [i for i, row in points if row["state"] == state]
        ys = [row[f"{metric} best"] for i, row in points if row["state"] == state]
        if xs:
            ax.scatter(xs, ys, c=colour, marker=marker, label=state.replace("_", " "), zorder=3)
    best, line = None, []
    for i, row in points:
        if row["state"] == FAILED:  # a failed trial's numbers are not a result one could use
            continue
        value = row[f"{metric} best"]
        best = value if best is None else (max(best, value) if mode == "max" else min(best, value))
        line.append((i, best))
    if line:
        ax.step([x for x, _ in line] + [points[-1][0]], [y for _, y in line] + [line[-1][1]], where="post", c="k",
                lw=1.5, label="best so far")
    ax.set(xlabel="trial (start order)", ylabel=f"{metric} (best of trial)", title=f"Optimization history ({mode})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path, dpi=110)
    return path


def plot_importances(importances: dict[str, float], path: Path) -> Path | None:
    if not importances:
        return None
    names = list(importances)[::-1]
    fig = _figure(6, 0.5 * len(names) + 1.5)
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for y, n in enumerate(names):
        ax.text(importances[n], y, f" {importances[n]:.2f}", va="center", fontsize="small")
    ax.set(xlabel="importance (PED-ANOVA, sums to 1)", title="Which hyperparameters mattered", xlim=(0, 1.1))
    fig.savefig(path, dpi=110)
    return path


def plot_curves(records: list[TrialRecord], rows: list[dict], metric: str, path: Path) -> Path | None:
    """Per trial: metric and eval/loss against training step. The best trial is drawn thick; an x marks
    the last report of a trial that ASHA stopped, a red X one that failed."""
    keys = [metric] + ([LOSS_KEY] if metric != LOSS_KEY else [])
    keys = [k for k in keys if any(_series(r, k).size for r in records)]
    if not keys:
        return None
    by_id = {row["trial_id"]: row for row in rows}
    best_id = rows[0]["trial_id"] if rows and rows[0][f"{metric} best"] is not None else None
    fig = _figure(6 * len(keys), 4.2)
    axes = [fig.add_subplot(1, len(keys), i + 1) for i in range(len(keys))]
    colours = _colour_cycle(len(records))
    for r, colour in zip(records, colours, strict=True):
        state = by_id[r.trial_id]["state"]
        for ax, key in zip(axes, keys, strict=True):
            if key not in r.history.columns:
                continue
            frame = pd.DataFrame({"step": steps_of(r), "y": pd.to_numeric(r.history[key], errors="coerce")}).dropna()
            if frame.empty:
                continue
            thick = r.trial_id == best_id
            ax.plot(frame["step"], frame["y"], c=colour, lw=2.6 if thick else 1.0, alpha=1.0 if thick else 0.75,
                    marker=".", ms=4, label=f"{r.trial_id}{' (best)' if thick else ''}", zorder=3 if thick else 2)
            if state in (STOPPED, FAILED):
                early = state == STOPPED
                ax.scatter(frame["step"].iloc[-1:], frame["y"].iloc[-1:], marker="x" if early else "X",
                           c="k" if early else "tab:red", s=40, zorder=4)
    for ax, key in zip(axes, keys, strict=True):
        ax.set(xlabel="training step", ylabel=key, title=key)
        ax.grid(alpha=0.3)
    if any(row["state"] == STOPPED for row in rows):
        axes[0].scatter([], [], marker="x", c="k", label="stopped by ASHA")
    if len(records) <= 12:  # one entry per trial; beyond that a legend hides the curves
        axes[0].legend(fontsize="x-small", loc="best")
    fig.suptitle("Learning curves")
    fig.savefig(path, dpi=110)
    return path


def _colour_cycle(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i if n <= 10 else i / max(n - 1, 1)) for i in range(n)]


def plot_params(rows: list[dict], params: list[str], metric: str, path: Path) -> Path | None:
    """The trial's best metric against each numeric swept parameter (log x for ones spanning 10x)."""
    done = [row for row in rows if row[f"{metric} best"] is not None]
    numeric = [p for p in params if all(isinstance(row[p], int | float) and not isinstance(row[p], bool)
                                         for row in done if row[p] is not None)]
    numeric = [p for p in numeric if any(row[p] is not None for row in done)]
    if not done or not numeric:
        return None
    fig = _figure(4 * len(numeric), 3.8)
    for i, p in enumerate(numeric):
        ax = fig.add_subplot(1, len(numeric), i + 1, sharey=fig.axes[0] if i else None)
        for state, (colour, marker) in STATE_STYLE.items():
            pts = [(row[p], row[f"{metric} best"]) for row in done if row["state"] == state and row[p] is not None]
            if pts:
                ax.scatter(*zip(*pts, strict=True), c=colour, marker=marker, label=state.replace("_", " "))
        values = [row[p] for row in done if row[p] is not None]
        if min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        ax.set(xlabel=p, ylabel=metric if i == 0 else None)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize="x-small", loc="best")
    fig.suptitle(f"{metric} (best of trial) against each hyperparameter")
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------- report


def write_report(source, out_dir, objective: str, mode: str, fallback: str = "eval/loss", *,
                 max_steps: int | None = None, rerun: str | None = None, notes: str = "") -> dict:
    """Leaderboard, plots and report.md for a sweep. source: a ResultGrid, an experiment folder, or a
    list of TrialRecords. rerun: the command that runs one trial of this sweep (`python -m shared.trial --config
    <its trial YAML> <its trial.overrides>`); the report adds the best sample's overrides to it. Returns the
    paths written and the best trial's id, config and metrics."""
    if isinstance(source, list):
        records, experiment = in_start_order(source), "(records)"
    else:
        records, experiment = load_records(source)
    return report_from_records(records, Path(out_dir), objective, mode, fallback, max_steps=max_steps,
                               experiment=experiment, rerun=rerun, notes=notes)


def report_from_records(records: list[TrialRecord], out_dir: Path, objective: str, mode: str,
                        fallback: str = "eval/loss", *, max_steps: int | None = None, experiment: str = "",
                        rerun: str | None = None, notes: str = "") -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    metric, metric_mode = choose_metric(records, objective, mode, fallback)
    rows = leaderboard(records, metric, metric_mode, max_steps=max_steps)
    params, fixed = swept_params(records)
    importances, importance_note = param_importances(rows, params, metric, metric_mode)

    table = markdown_table(rows)
    csv_path = write_csv(rows, out_dir / "leaderboard.csv")
    md_path = out_dir / "leaderboard.md"
    md_path.write_text(f"# Leaderboard: {metric} ({metric_mode})\n\n{table}")
    plots = {
        "history": plot_history(records, rows, metric, metric_mode, out_dir / "history.png"),
        "importance": plot_importances(importances, out_dir / "importance.png"),
        "curves": plot_curves(records, rows, metric, out_dir / "curves.png"),
        "params": plot_params(rows, params, metric, out_dir / "params.png"),
    }
    plots = {name: str(p) for name, p in plots.items() if p is not None}
    best = _best(records, rows, metric, metric_mode)
    report_path = out_dir / "report.md"
    report_path.write_text(_report_text(
        experiment, records, rows, metric, metric_mode, objective, fixed, importance_note, plots, table, best,
        rerun,
    ) + (f"\n{notes}\n" if notes else ""))
    return {
        "out_dir": str(out_dir),
        "leaderboard_csv": str(csv_path),
        "leaderboard_md": str(md_path),
        "report_md": str(report_path),
        "plots": plots,
        "objective": metric,
        "mode": metric_mode,
        "num_trials": len(records),
        "state_counts": _counts(rows),
        "importances": importances,
        "importance_note": importance_note,
        "best": best,
    }


def _best(records: list[TrialRecord], rows: list[dict], metric: str, mode: str) -> dict | None:
    """The top row's trial: its config and the metrics of the report where it reached its best value."""
    if not rows or rows[0][f"{metric} best"] is None:
        return None
    record = next(r for r in records if r.trial_id == rows[0]["trial_id"])
    values = _series(record, metric)
    at = values.idxmax() if mode == "max" else values.idxmin()
    report = {column: record.history[column].loc[at] for column in record.history.columns}  # keeps each dtype
    metrics = {k: _plain(v) for k, v in report.items() if _is_scalar(_plain(v)) and not pd.isna(v)}
    return {"trial_id": record.trial_id, "config": record.config, "metrics": metrics,
            "value": rows[0][f"{metric} best"], "state": rows[0]["state"]}


def _plain(value):
    """numpy scalars -> Python scalars, so the returned dict is JSON-ready."""
    return value.item() if hasattr(value, "item") else value


def _counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def _report_text(experiment, records, rows, metric, mode, objective, fixed, importance_note, plots, table,
                 best, rerun) -> str:
    counts = _counts(rows)
    total_steps = sum(row["steps"] for row in rows)
    total_wall = sum(row["wall_s"] or 0.0 for row in rows)
    out = [f"# Sweep report\n\nExperiment: `{experiment}`\n"]
    out.append(f"- Objective: **{metric}** ({mode})" + (
        f" -- no trial reported `{objective}`, so trials are ranked on the fallback" if metric != objective else ""))
    out.append(f"- Trials: {len(records)} (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
    out.append(f"- Trial-steps spent: {total_steps}; trial wall time: {total_wall / 60:.1f} min in all")
    if best:
        overrides = " ".join(shlex.quote(f"{k}={v}") for k, v in to_overrides(best["config"]).items()
                             if _is_scalar(v))
        out.append(f"- Best: trial `{best['trial_id']}`, {metric} = {best['value']:.4g} ({best['state']})\n")
        if rerun:
            out.append("Rerun the best trial alone, without Ray (the sweep's trial config and the best sample):\n")
            out.append(f"```\n{rerun} {overrides}\n```\n")
        else:
            out.append("The best sample, as dotted overrides of the trial config the sweep started from (its trial "
                       f"YAML and trial.overrides): `{overrides}`\n")
    else:
        out.append("- No trial reported a value: see the errors below.\n")
    sections = [
        ("history", "Optimization history", "Each point is one trial's best value, in the order trials "
         "started; the line is the best found so far. A search that learns climbs early and flattens."),
        ("importance", "Parameter importances", f"{importance_note}. How much of the variation in {metric} "
         "each swept parameter explains; with few trials read it as a hint, not a measurement."),
        ("curves", "Learning curves", "One line per trial against training step; the best trial is thick. "
         "x: where ASHA stopped a trial (its last rung)."),
        ("params", "Objective against each hyperparameter", "Each point is a trial's best value."),
    ]
    for key, title, caption in sections:
        out.append(f"## {title}\n")
        if key in plots:
            out.append(f"![{title}]({Path(plots[key]).name})\n\n{caption}\n")
        else:
            out.append(f"_Not drawn: {importance_note if key == 'importance' else 'no data for it'}._\n")
    out.append("## Leaderboard\n")
    out.append("State: " + "; ".join(f"{s} = {STATE_NOTE[s]}" for s in counts) + ".\n")
    out.append(table)
    if fixed:
        out.append("\n## The same in every trial\n")
        out.extend(f"- `{k}` = {v}" for k, v in fixed.items())
        out.append("")
    errors = [row for row in rows if row["error"]]
    if errors:
        out.append("\n## Errors\n")
        out.extend(f"- `{row['trial_id']}`: {row['error']}" for row in errors)
        out.append("")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeps.report",
                                 description="Leaderboard, plots and report.md of a finished Tune sweep.")
    ap.add_argument("experiment", help="experiment folder (holds experiment_state-*.json)")
    ap.add_argument("--objective", default="eval/sql_exec_acc", help="metric to rank by (default eval/sql_exec_acc)")
    ap.add_argument("--mode", choices=["min", "max"], default="max")
    ap.add_argument("--fallback", default="eval/loss", help="ranked on when no trial reported the objective")
    ap.add_argument("--max-steps", type=int, default=None, help="the step budget of a full trial")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default <experiment>/report)")
    args = ap.parse_args(argv)
    if not Path(args.experiment).expanduser().is_dir():
        print(f"error: {args.experiment} is not a folder", file=sys.stderr)
        return 2
    out = args.out or Path(args.experiment).expanduser() / "report"
    result = write_report(args.experiment, out, args.objective, args.mode, args.fallback, max_steps=args.max_steps)
    print(Path(result["leaderboard_md"]).read_text())
    print(f"report: {result['report_md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
