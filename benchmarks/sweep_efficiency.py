"""Sweep efficiency on the micro model, in one run: ASHA + TPE against an exhaustive grid over the same
discrete space, and random search and Optuna alone given the trial-steps ASHA + TPE spent.

    python -m benchmarks.sweep_efficiency                       # the micro model, 12-point grid: ~2 h on 2 cores
    python -m benchmarks.sweep_efficiency --smoke               # a tiny model, 4-point grid: a few minutes
    python -m benchmarks.sweep_efficiency --ranks 8,32 --lrs 1e-3,3e-3 --steps 40 --json-out eff.json

Three Tune runs and one Optuna study in one process (one local Ray for the Tune runs), one trial at a time (two trainings on 2 cores slow both
10-40x, measured), every trial the sweep's own trainable (sweeps/trainable.py through sweeps/run.py),
reporting dev metrics every --grace steps:

    grid       tune.grid_search over ranks x alpha multipliers x learning rates, every trial --steps long
    asha+tpe   the sweep itself (sweeps.run.make_tuner): OptunaSearch (TPE) over the same discrete values,
               ASHA on train/steps (grace --grace, factor --reduction-factor, max_t --steps), --asha-trials
               samples (default: half the grid's points)
    random     random samples of the same values, trained --steps long, as many as fit in the trial-steps
               asha+tpe spent (at least one)
    optuna     Optuna alone, no Ray (what a user would pick instead): TPE (same seed and start-up) with
               Optuna's own SuccessiveHalvingPruner (min resource --grace, factor --reduction-factor), the
               same trial recipe (shared.trial.run_trial) in this process, trials drawn until their steps
               reach what asha+tpe spent. It trains TPE's repeats again; the sweep does not (sweeps/dedupe.py)

Printed per method: trials, trial-steps (optimizer steps summed over trials), CPU-seconds (trial wall time
x the CPUs each trial holds, evaluation included), wall time of the whole run, the best dev accuracy and
eval/loss found at any report, both against the grid, and the best of each within asha+tpe's trial-steps
(acc@N, loss@N: what the method had found when it had spent that much). The goals: asha+tpe within 0.02 of
the grid's best dev accuracy for at most 30% of the grid's trial-steps, and at least as good as Optuna
alone at equal trial-steps. With --out, a method the folder holds finished is read back (figures and wall
time) instead of run again; an unfinished Tune run resumes with its finished trials.

Why half the grid's points, and factor 4: run one trial at a time, asynchronous ASHA is generous. The first
trial to reach a rung always goes on, and every later one goes on when it beats the top quarter so far.
Simulated with the defaults (rungs at 5 and 20 of 80 steps), 6 samples spend ~23% of the 12-point grid's
trial-steps when trials are in random order and ~28% when each sample is better than the last (TPE
learning); 12 samples would spend 37-52%. On the micro model, short runs may leave accuracy
at 0 for everyone; eval/loss then still tells the methods apart. Each run's leaderboard and plots go to
<out>/<method>/report (sweeps/report.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from shared.config import ConfigError
from shared.paths import REPO_ROOT, cache_dir
from sweeps.config import OBJECTIVE

GOAL_GAP = 0.02  # asha+tpe's best dev accuracy may be this far below the grid's
GOAL_STEP_RATIO = 0.30  # ...while spending at most this share of the grid's trial-steps
METHODS = ("grid", "asha+tpe", "random", "optuna")


def parse_floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.sweep_efficiency",
        description="ASHA + TPE vs an exhaustive grid vs budget-matched random search and Optuna alone, on the micro "
        "model.",
    )
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny model (built once, seconds) and a 2x2 grid of 12-step trials: a few minutes on 2 CPUs")
    ap.add_argument("--sweep", type=Path, default=REPO_ROOT / "configs" / "sweeps" / "sql_smoke.yaml",
                    help="sweep YAML whose objective, resources and failure settings are used (default sql_smoke.yaml)")
    ap.add_argument("--trial-config", default=None,
                    help="trial YAML of every trial (default configs/sql_micro.yaml; --smoke: sql_micro_smoke.yaml)")
    ap.add_argument("--model", default=None,
                    help="base model: a local folder or embedded:micro-llama (default: the trial YAML's; "
                    "--smoke: the tiny smoke build)")
    ap.add_argument("--ranks", type=parse_ints, default=None, help="grid values of lora.rank (default 8,16,32,64)")
    ap.add_argument("--alpha-multipliers", type=parse_floats, default=None,
                    help="grid values of lora.alpha_multiplier, alpha = rank x this (default 2)")
    ap.add_argument("--lrs", type=parse_floats, default=None,
                    help="grid values of train.learning_rate (default 3e-4,1e-3,3e-3)")
    ap.add_argument("--steps", type=int, default=None, help="steps of a full trial = ASHA's max_t (default 80)")
    ap.add_argument("--grace", type=int, default=None,
                    help="ASHA's grace period, and the steps between dev reports of every method (default 5)")
    ap.add_argument("--reduction-factor", type=int, default=None,
                    help="ASHA keeps the top 1/this at a rung (default 4; --smoke: 3)")
    ap.add_argument("--asha-trials", type=int, default=None,
                    help="samples ASHA + TPE draws (default: half the grid's points, rounded up)")
    ap.add_argument("--startup-trials", type=int, default=None,
                    help="TPE's random start-up samples (default a third of --asha-trials, at least 2)")
    ap.add_argument("--eval-slice", type=int, default=None, help="dev examples scored at every report (default 50)")
    ap.add_argument("--cpus", type=int, default=0, help="CPUs of each trial and of the local Ray (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of TPE and of the random search")
    ap.add_argument("--address", default=None,
                    help="Ray cluster to run on (default: a new local Ray with --cpus CPUs, whatever else is running)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder of the runs and reports (default: a temporary one); the folder of an interrupted "
                    "run resumes it, keeping its finished trials")
    ap.add_argument("--json-out", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    smoke = args.smoke
    defaults = dict(ranks=[4, 8] if smoke else [8, 16, 32, 64], alpha_multipliers=[2.0],
                    lrs=[1e-3, 1e-2] if smoke else [3e-4, 1e-3, 3e-3],
                    steps=12 if smoke else 80, grace=4 if smoke else 5, reduction_factor=3 if smoke else 4,
                    eval_slice=8 if smoke else 50,
                    trial_config="configs/sql_micro_smoke.yaml" if smoke else "configs/sql_micro.yaml")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.alpha_multipliers = [int(m) if float(m).is_integer() else m for m in args.alpha_multipliers]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods or set(args.methods) - set(METHODS):
        ap.error(f"--methods: unknown {sorted(set(args.methods) - set(METHODS))}; valid: {', '.join(METHODS)}")
    if {"random", "optuna"} & set(args.methods) and "asha+tpe" not in args.methods:
        ap.error("--methods: random and optuna take their budget from asha+tpe; run it too")
    if not (args.ranks and args.alpha_multipliers and args.lrs):
        ap.error("--ranks, --alpha-multipliers and --lrs each need at least one value")
    if args.grace >= args.steps or args.steps % args.grace:
        ap.error(f"--grace ({args.grace}) must be below --steps ({args.steps}) and divide it")
    if args.reduction_factor < 2:
        ap.error("--reduction-factor must be at least 2")
    args.asha_trials = args.asha_trials or max(1, math.ceil(grid_size(args) / 2))
    args.startup_trials = args.startup_trials or max(2, args.asha_trials // 3)
    return args


def grid_size(args) -> int:
    return len(args.ranks) * len(args.alpha_multipliers) * len(args.lrs)


def discrete_space(args) -> dict[str, list]:
    """The one space all three methods search: lora.rank x lora.alpha_multiplier x train.learning_rate."""
    return {"lora.rank": args.ranks, "lora.alpha_multiplier": args.alpha_multipliers, "train.learning_rate": args.lrs}


# ------------------------------------------------------------------------------------------ planning


def smoke_model() -> Path:
    """The tiny smoke build of the embedded model (shared/micro.py), built once into the cache."""
    from shared.micro import PRESETS, build

    out = cache_dir() / "models" / "micro-llama-smoke"
    if not (out / "model.safetensors").exists():
        print(f"building the tiny smoke model into {out} ...", file=sys.stderr, flush=True)
        build(out, seed=0, threads=0, log=lambda s: None, **PRESETS["smoke"])
    return out


def sweep_overrides(args, model: str | None, storage: Path) -> list[str]:
    """Dotted overrides of the sweep YAML: the benchmark's trial length, space, ASHA and search settings."""
    trial = {
        "train.max_steps": args.steps,
        "train.max_time_s": None,  # budgets are in steps here: a time cut would hide in the step counts
        "train.warmup_steps": max(1, min(20, args.steps // 10)),
        "train.log_every": args.grace,
        "eval.splits": ["dev"],
        "eval.max_examples": args.eval_slice,  # the final report scores the same slice as the rungs
        "eval.baseline": False,
    }
    if model:
        trial["model.name_or_path"] = model
    space = {k: {"type": "choice", "values": v} for k, v in discrete_space(args).items()}
    return [
        f"trial.config={args.trial_config}",
        f"trial.overrides={json.dumps(trial)}",
        f"space={json.dumps(space)}",
        f"search.num_trials={args.asha_trials}",
        "search.max_concurrent=1",
        f"search.seed={args.seed}",
        f"search.startup_trials={args.startup_trials}",
        f"scheduler.eval_every_steps={args.grace}",
        f"scheduler.grace_period_steps={args.grace}",
        f"scheduler.reduction_factor={args.reduction_factor}",
        f"objective.eval_slice={args.eval_slice}",
        f"resources.cpu={args.cpus}",
        "resources.gpu=0",
        "failure.max_retries=0",  # a crash would spend steps twice and blur the budgets
        "checkpoint.keep_per_trial=1",
        f"storage_path={storage}",
    ]


# -------------------------------------------------------------------------------------------- tuners


def _alpha(config: dict) -> float:
    """lora.alpha = lora.rank x lora.alpha_multiplier, as sweeps.space.define_by_run derives it (Tune passes
    the sampled config; a function of the old spec dict is deprecated)."""
    return config["lora.rank"] * config["lora.alpha_multiplier"]


def fixed_param_space(args, method: str) -> dict:
    """The grid's or the random search's param_space (also what Tuner.restore needs again: it holds a function)."""
    from ray import tune

    pick = tune.grid_search if method == "grid" else tune.choice
    return {**{k: pick(v) for k, v in discrete_space(args).items()}, "lora.alpha": tune.sample_from(_alpha)}


def fixed_tuner(cfg, p, name: str, storage: Path, param_space: dict, num_samples: int, seed: int | None = None):
    """Full-length trials of the sweep's trainable with no scheduler: the grid and the random search."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from sweeps.run import trainable

    return tune.Tuner(
        trainable(cfg, p.base),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=num_samples, max_concurrent_trials=1, reuse_actors=False,
            search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=1),
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), verbose=1,
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def run_method(method: str, args, cfg, p, storage: Path, budget_steps: int | None) -> dict:
    from ray import tune

    from sweeps.run import make_tuner

    name = method.replace("+", "-")
    if (storage / name).is_dir() and tune.Tuner.can_restore(str(storage / name)):
        # --out of a run whose process died: Tune keeps the finished trials, reruns the unfinished ones
        from sweeps.run import trainable

        print(f"restoring {storage / name}", file=sys.stderr, flush=True)
        tuner = tune.Tuner.restore(
            str(storage / name), trainable=trainable(cfg, p.base), resume_unfinished=True, resume_errored=False,
            restart_errored=True, param_space=None if method == "asha+tpe" else fixed_param_space(args, method),
        )
    elif method == "grid":
        tuner = fixed_tuner(cfg, p, name, storage, fixed_param_space(args, method), 1)
    elif method == "random":
        n = max(1, budget_steps // args.steps)
        tuner = fixed_tuner(cfg, p, name, storage, fixed_param_space(args, method), n, seed=args.seed)
    else:
        tuner = make_tuner(cfg, p, name, str(storage))  # the production sweep: OptunaSearch (TPE) + ASHA
    start = time.time()
    grid = tuner.fit()
    return summarize(method, grid, wall_time(storage / name, time.time() - start), args, p)


def wall_time(folder: Path, seconds: float) -> float:
    """The method's wall time: this run's, written beside its trials the first time it finishes, and read
    back when a later run with the same --out restores the finished method (which then takes seconds)."""
    path = folder / "wall_s.json"
    if path.exists():
        return float(json.loads(path.read_text())["wall_s"])
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"wall_s": seconds}) + "\n")
    return seconds


def optuna_sample(trial, space: dict) -> dict:
    """One trial's sample: its suggestions and what is derived from them. The suggestions exist only after
    define_by_run made them, so trial.params is read after it (read before, it is empty, and every trial
    would train the trial YAML's own rank and learning rate)."""
    from sweeps.space import define_by_run

    derived = define_by_run(trial, space)
    return {**trial.params, **derived}


def run_optuna_alone(args, p, out: Path, budget_steps: int) -> dict:
    """TPE + Optuna's SuccessiveHalvingPruner, no Ray: each trial is run_trial in this process, reporting the
    sweep's objective at every --grace steps; a pruned trial stops there. Trials are drawn until their summed
    steps reach budget_steps (the last may pass it, as a Tune trial would)."""
    import optuna
    import pandas as pd

    from shared.trial import run_trial
    from sweeps.report import TrialRecord
    from sweeps.space import trial_config

    saved = out / "optuna" / "records.json"
    settings = {"budget_steps": budget_steps, "seed": args.seed, "steps": args.steps, "grace": args.grace,
                "reduction_factor": args.reduction_factor, "eval_slice": args.eval_slice,
                "startup_trials": args.startup_trials, "space": discrete_space(args)}
    if saved.exists():
        kept = json.loads(saved.read_text())
        if kept["settings"] == settings:
            print(f"restoring {saved.parent} (finished)", file=sys.stderr, flush=True)
            records = [TrialRecord(r["trial_id"], r["config"], pd.DataFrame(r["history"]), order=r["order"])
                       for r in kept["records"]]
            return figures("optuna", records, kept["wall_s"], args, p, str(out / "optuna"))
        print(f"{saved}: other settings, run again", file=sys.stderr, flush=True)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if p.objective.mode == "max" else "minimize",
        sampler=optuna.samplers.TPESampler(seed=args.seed, multivariate=True, n_startup_trials=args.startup_trials),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=args.grace, reduction_factor=args.reduction_factor),
    )
    space = {k: {"type": "choice", "values": v} for k, v in discrete_space(args).items()}
    records, spent, start = [], 0, time.time()
    while spent < max(1, budget_steps):
        trial = study.ask()
        sample = optuna_sample(trial, space)
        cfg = trial_config(p.base, sample)
        history = []

        def on_eval(step: int, metrics: dict, save) -> bool:
            value = p.objective.value(metrics)
            history.append({"train/steps": step, OBJECTIVE: value, **metrics, "time_total_s": time.time() - began})
            trial.report(value, step)
            return not trial.should_prune()

        began = time.time()
        final = run_trial(cfg, on_eval=on_eval, eval_every=args.grace, eval_slice=args.eval_slice,
                          folder=out / "optuna" / f"trial-{trial.number:03d}")
        if not history or final["train/steps"] > history[-1]["train/steps"]:
            # the last step's evaluation, as the sweep's trainable reports it after run_trial returns
            metrics = {k: v for k, v in final.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            history.append({OBJECTIVE: p.objective.value(final), **metrics, "time_total_s": time.time() - began})
        steps = history[-1]["train/steps"] if history else 0
        spent += steps
        if steps < args.steps:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, history[-1][OBJECTIVE])
        records.append(TrialRecord(f"optuna-{trial.number:03d}", {**sample}, pd.DataFrame(history),
                                   order=trial.number))
    wall_s = time.time() - start
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"settings": settings, "wall_s": wall_s, "records": [
        {"trial_id": r.trial_id, "config": r.config, "order": r.order, "history": r.history.to_dict("records")}
        for r in records]}, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n")
    return figures("optuna", records, wall_s, args, p, str(out / "optuna"))


# --------------------------------------------------------------------------------------------- figures


def summarize(method: str, grid, wall_s: float, args, p) -> dict:
    """Trials, trial-steps, CPU-seconds and the best dev accuracy / loss of one Tune run."""
    from sweeps.report import load_records

    records, _ = load_records(grid)
    return figures(method, records, wall_s, args, p, str(grid.experiment_path))


def figures(method: str, records, wall_s: float, args, p, experiment: str) -> dict:
    """The table's row of one method from its TrialRecords (sweeps/report.py)."""
    from sweeps.report import steps_done

    accuracy = p.objective.metric if p.objective.metric != "eval/loss" else None

    def best(key: str, pick):
        values = [float(v) for r in records if key in r.history.columns
                  for v in r.history[key].dropna() if math.isfinite(float(v))]
        return pick(values) if values else None

    seconds = [float(r.history["time_total_s"].dropna().iloc[-1]) for r in records
               if "time_total_s" in r.history.columns and r.history["time_total_s"].notna().any()]
    return {
        "method": method,
        "trials": len(records),
        "errors": sum(1 for r in records if r.error),
        "trial_steps": sum(steps_done(r) for r in records),
        "cpu_s": sum(seconds) * args.cpus,
        "wall_s": wall_s,
        "accuracy_metric": accuracy,
        "best_accuracy": best(accuracy, max) if accuracy else None,
        "best_eval_loss": best("eval/loss", min),
        "experiment": experiment,
        "_records": records,
    }


def best_within(records, key: str, pick, budget: int):
    """The best `key` a method had reported when it had spent `budget` trial-steps: trials in the order they
    ran (one at a time, as every method here runs them), each report counted at the steps spent before its
    trial plus its own step. None where nothing was reported that early."""
    import pandas as pd

    from sweeps.report import steps_done, steps_of

    spent, values = 0, []
    for r in records:
        if key in r.history.columns:
            for step, value in zip(steps_of(r), pd.to_numeric(r.history[key], errors="coerce"), strict=True):
                if math.isfinite(step) and math.isfinite(value) and spent + step <= budget:
                    values.append(float(value))
        spent += steps_done(r)
    return pick(values) if values else None


def at_budget(rows: list[dict], records: dict[str, list], budget: int | None) -> list[dict]:
    """Adds each method's best accuracy and eval/loss within asha+tpe's trial-steps (the issue's "at equal
    trial-steps": the grid and Optuna alone may spend more, and the best at any report favours them)."""
    for r in rows:
        acc = r["accuracy_metric"]
        r["budget_steps"] = budget
        r["best_accuracy_at_budget"] = (best_within(records[r["method"]], acc, max, budget)
                                        if acc and budget else None)
        r["best_eval_loss_at_budget"] = best_within(records[r["method"]], "eval/loss", min, budget) if budget else None
    return rows


def compare(rows: list[dict]) -> list[dict]:
    """Adds each method's steps and best accuracy relative to the grid's."""
    grid = next((r for r in rows if r["method"] == "grid"), None)
    for r in rows:
        r["steps_vs_grid"] = r["trial_steps"] / grid["trial_steps"] if grid and grid["trial_steps"] else None
        r["accuracy_vs_grid"] = (r["best_accuracy"] - grid["best_accuracy"]
                                 if grid and None not in (r["best_accuracy"], grid["best_accuracy"]) else None)
        r["loss_vs_grid"] = (r["best_eval_loss"] - grid["best_eval_loss"]
                             if grid and None not in (r["best_eval_loss"], grid["best_eval_loss"]) else None)
    return rows


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], args) -> None:
    acc = next((r["accuracy_metric"] for r in rows if r["accuracy_metric"]), "accuracy")
    budget = next((r["budget_steps"] for r in rows if r.get("budget_steps")), None)
    head = (f"{'method':<10} {'trials':>6} {'trial-steps':>11} {'CPU-s':>8} {'wall-s':>7} "
            f"{'best ' + acc:>24} {'best eval/loss':>14} {'steps/grid':>10} {'acc-grid':>9} {'loss-grid':>9} "
            f"{'acc@' + str(budget or '-'):>9} {'loss@' + str(budget or '-'):>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['method']:<10} {r['trials']:>6} {r['trial_steps']:>11} {r['cpu_s']:>8.0f} {r['wall_s']:>7.0f} "
              f"{_f(r['best_accuracy'], '.4f'):>24} {_f(r['best_eval_loss'], '.4f'):>14} "
              f"{_f(r['steps_vs_grid'], '.0%'):>10} {_f(r['accuracy_vs_grid'], '+.4f'):>9} "
              f"{_f(r['loss_vs_grid'], '+.4f'):>9} {_f(r.get('best_accuracy_at_budget'), '.4f'):>9} "
              f"{_f(r.get('best_eval_loss_at_budget'), '.4f'):>9}")
    asha = next((r for r in rows if r["method"] == "asha+tpe"), None)
    if asha and asha["steps_vs_grid"] is not None and asha["accuracy_vs_grid"] is not None:
        near = asha["accuracy_vs_grid"] >= -GOAL_GAP - 1e-9  # 0.94 - 0.96 is -0.020000000000000018 in floats
        cheap = asha["steps_vs_grid"] <= GOAL_STEP_RATIO
        print(f"\nasha+tpe: best {acc} {asha['accuracy_vs_grid']:+.4f} vs the grid's (goal >= -{GOAL_GAP}): "
              f"{'met' if near else 'NOT met'}; {asha['steps_vs_grid']:.0%} of the grid's trial-steps "
              f"(goal <= {GOAL_STEP_RATIO:.0%}): {'met' if cheap else 'NOT met'}")
    alone = next((r for r in rows if r["method"] == "optuna"), None)
    if asha and alone and None not in (asha["best_accuracy_at_budget"], alone["best_accuracy_at_budget"]):
        gap = asha["best_accuracy_at_budget"] - alone["best_accuracy_at_budget"]
        print(f"asha+tpe against optuna alone at equal trial-steps ({budget}): best {acc} "
              f"{asha['best_accuracy_at_budget']:.4f} vs {alone['best_accuracy_at_budget']:.4f} "
              f"(goal: at least as good): {'met' if gap >= -1e-9 else 'NOT met'}; best eval/loss "
              f"{_f(asha['best_eval_loss_at_budget'], '.4f')} vs {_f(alone['best_eval_loss_at_budget'], '.4f')}. "
              f"Over all {alone['trial_steps']} of its trial-steps, optuna alone: {_f(alone['best_accuracy'], '.4f')}, "
              f"eval/loss {_f(alone['best_eval_loss'], '.4f')}")
    print(f"\nspace: {discrete_space(args)}; full trial {args.steps} steps, reports every {args.grace}, "
          f"ASHA factor {args.reduction_factor}, {args.asha_trials} ASHA+TPE samples ({args.startup_trials} random "
          f"start-up); CPU-s = trial wall time x {args.cpus} CPUs, evaluation included")


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    args = parse_args(argv)
    args.cpus = args.cpus or len(os.sched_getaffinity(0))
    out = args.out or Path(tempfile.mkdtemp(prefix="sweep-efficiency-"))
    out = out.expanduser().resolve()
    model = args.model
    if model and not model.startswith("embedded:"):
        model = str(Path(model).expanduser().resolve())

    from sweeps.config import load_sweep, plan

    try:
        if args.smoke and model is None:
            model = str(smoke_model())
        cfg = load_sweep(args.sweep, sweep_overrides(args, model, out))
        p = plan(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    print(f"sweep efficiency: grid of {grid_size(args)} on {p.trial.model.name_or_path}, {args.cpus} CPUs per trial, "
          f"objective {p.objective.metric} ({p.objective.mode}); runs under {out}", file=sys.stderr, flush=True)

    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"  # as sweeps/run.py: relative paths resolve as they do here
    import ray

    from sweeps.report import write_report

    if p.trial.model.name_or_path.startswith("embedded:"):
        from shared.models import embedded_folder

        embedded_folder(p.trial.model.name_or_path)  # build once here if it is neither committed nor cached
    # A Ray of its own ("local"), even where `ray start` left one running: its trials must not share the
    # cores with someone else's; --address joins a cluster instead.
    ray.init(address=args.address or "local", num_cpus=None if args.address else args.cpus,
             include_dashboard=False, log_to_driver=False)
    rows, records = [], {}
    try:
        budget = None
        for method in [m for m in METHODS if m in args.methods]:
            print(f"\n=== {method} ===", file=sys.stderr, flush=True)
            if method == "optuna":
                row = run_optuna_alone(args, p, out, budget)
            else:
                row = run_method(method, args, cfg, p, out, budget)
            if method == "asha+tpe":
                budget = row["trial_steps"]
            records[method] = row.pop("_records")
            write_report(records[method], out / method.replace("+", "-") / "report", p.objective.metric,
                         p.objective.mode, max_steps=args.steps)
            rows.append(row)
    finally:
        ray.shutdown()
    rows = compare(at_budget(rows, records, budget))
    print()
    print_table(rows, args)
    if args.json_out:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json_out.write_text(json.dumps({"args": settings, "results": rows}, indent=2) + "\n")
    print(f"\nruns and reports: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
