"""The sweep: Ray Tune with Optuna (TPE) and ASHA over a QLoRA trial's LoRA rank, alpha and learning rate.

    export RAY_AUTH_MODE=token   # Ray 2.60's token auth (the token: ~/.ray/auth_token, shared/ray_local.py)
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m sweeps.run --config configs/sweeps/sql_smoke.yaml
    python -m sweeps.run --config configs/sweeps/sql_smoke.yaml        # direct: local cluster, else a new local Ray
    python -m sweeps.run --config configs/sweeps/sql.yaml --check      # validate only (no Ray)
    python -m sweeps.run --resume ~/qlora-sweeps/sql-smoke-20261125-001502   # a sweep whose driver died

Everything is validated before Ray is asked for anything (sweeps/config.py): the sweep and trial configs,
every corner of the search space, rank against the model's hidden size, the memory estimate against the
GPU a trial gets; then the cluster is checked for the resources a trial asks for. The last lines printed
name the sweep folder, the best adapter, its metrics and the report. The sweep folder lives under
storage_path (default ~/qlora-sweeps, or a URI), never in the job's temporary copy of the repo:

    <storage_path>/<sweep id>/            Tune's experiment (trials, checkpoints, state for --resume)
        sweep.json                        the resolved sweep config and trial tree (what --resume rebuilds)
        best_adapter/                     the best trial's adapter; card.json names the sweep and its position
        summary.json                      every trial: number, state, steps, objective, sample, error
        report/                           leaderboard (CSV, Markdown) and plots (sweeps/report.py)
    <storage_path>/latest/<task>.json     the newest best adapter of each task (and a symlink <task>, locally)
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python sweeps/run.py`): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.config import ConfigError  # noqa: E402
from shared.storage import join, latest_pointer, put_dir, read_text, write_text  # noqa: E402
from shared.sweep_store import BEST, REPORT, SUMMARY, SWEEP_STATE, TRIAL_PREFIX  # noqa: E402
from sweeps.config import (  # noqa: E402
    OBJECTIVE, Plan, SweepConfig, check_cluster, load_sweep, plan, resolve_storage, rungs,
)
from sweeps.space import to_overrides  # noqa: E402
from sweeps.trials import TASK_METRIC, TRIAL_NUMBER, flatten, rank_key, trial_state  # noqa: E402



# ------------------------------------------------------------------------------------------- tuning


def trial_dirname(trial) -> str:
    """trial-003-1a2b3c4d: the Optuna trial number first, so folders and the live table sort in sampling
    order and name the same trial as the leaderboard. Also the trial's name."""
    return f"{TRIAL_PREFIX}{trial.config.get(TRIAL_NUMBER, 0):03d}-{trial.trial_id}"


def trainable(cfg: SweepConfig, base: dict):
    """The function trainable with the sweep bound to it and one trial's resources: one GPU (plus CPUs to
    feed it), or with no GPU, resources.cpu cores, which are also its torch threads."""
    from ray import tune

    from sweeps.trainable import train_qlora

    fn = tune.with_parameters(train_qlora, sweep=cfg.model_dump(mode="json"), base=base)
    return tune.with_resources(fn, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu})


def make_tuner(cfg: SweepConfig, p: Plan, sweep_id: str, storage: str):
    """OptunaSearch (TPE: seeded, multivariate) over the space as data, without repeats (sweeps/dedupe.py), ASHA
    on train/steps, FailureConfig."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from sweeps.dedupe import DedupeSearch
    from sweeps.metrics import SweepMetrics
    from sweeps.space import define_by_run

    mode = p.objective.mode
    # constant_liar: trials still running count as bad guesses, so concurrent trials are not drawn alike
    sampler = optuna.samplers.TPESampler(
        seed=cfg.search.seed, multivariate=True, n_startup_trials=cfg.search.startup_trials,
        constant_liar=cfg.search.max_concurrent > 1,
    )
    space = {k: d.model_dump() for k, d in cfg.space.items()}  # plain data: the searcher's state is pickled
    searcher = DedupeSearch(OptunaSearch(space=functools.partial(define_by_run, space=space), metric=OBJECTIVE,
                                         mode=mode, sampler=sampler))  # a repeated sample is never trained again
    scheduler = ASHAScheduler(
        time_attr="train/steps", metric=OBJECTIVE, mode=mode, max_t=p.trial.train.max_steps,
        grace_period=cfg.scheduler.grace_period_steps, reduction_factor=cfg.scheduler.reduction_factor,
    )
    from sweeps import tracking

    keep = cfg.checkpoint.keep_per_trial
    callbacks = [SweepMetrics(sweep_id, OBJECTIVE, mode, p.trial.train.max_steps)]
    runs = tracking.callback(cfg, sweep_id, p.trial.model.name_or_path, p.trial.data.task)
    return tune.Tuner(
        trainable(cfg, p.base),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=cfg.search.num_trials,
            max_concurrent_trials=cfg.search.max_concurrent,
            reuse_actors=False,  # a fresh worker process per trial: GPU memory is freed between trials
            trial_name_creator=trial_dirname, trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=sweep_id, storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=cfg.failure.max_retries),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=keep, checkpoint_score_attribute=OBJECTIVE if keep else None,
                checkpoint_score_order=mode,
            ),
            callbacks=callbacks + ([runs] if runs else []),
        ),
    )


# ---------------------------------------------------------------------------------- after the sweep


def summarize(grid, p: Plan) -> list[dict]:
    """One row per trial, ranked as sweeps/report.py ranks its leaderboard (sweeps/trials.rank_key) on
    sweep/objective; `position` is the place on that leaderboard (None for failed and unscored trials)."""
    max_steps = p.trial.train.max_steps
    rows, keys = [], []
    for r in grid:
        m = r.metrics or {}
        steps = m.get("train/steps")
        values = _history(r, OBJECTIVE)
        losses = _history(r, "eval/loss")
        rows.append({
            "trial_number": (r.config or {}).get(TRIAL_NUMBER),
            "trial_id": m.get("trial_id") or Path(r.path).name.rsplit("-", 1)[-1],
            "state": trial_state(None, steps, max_steps, failed=r.error is not None),
            "steps": steps,
            "attempts": m.get("trial/attempt"),
            "node_id": m.get("trial/node_id"),
            "objective": (max(values) if p.objective.mode == "max" else min(values)) if values else None,
            "objective_last": values[-1] if values else None,
            p.objective.metric: m.get(p.objective.metric),
            "eval/loss": m.get("eval/loss"),
            "sample": to_overrides(r.config or {}),
            "error": None if r.error is None else _error_line(r.error),
            "path": r.path,
            "_result": r,
        })
        keys.append(rank_key(p.objective.mode, rows[-1]["state"], rows[-1]["objective"], rows[-1]["objective_last"],
                             min(losses) if losses else None, steps))
    rows = [row for _, row in sorted(zip(keys, rows, strict=True), key=lambda kr: kr[0])]
    for i, row in enumerate(rows, 1):
        row["position"] = i if row["objective"] is not None and row["error"] is None else None
    return rows


def _error_line(error: BaseException) -> str:
    """The last non-empty line of an error: a RayTaskError's text ends with the trial's own exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


def _history(result, key: str) -> list[float]:
    df = result.metrics_dataframe
    if df is None or key not in df.columns:
        return []
    return [float(v) for v in df[key].tolist() if v is not None and math.isfinite(float(v))]


def best_checkpoint(result, mode: str):
    """The trial's checkpoint reported with its best objective (every report carries one)."""
    kept = [(c, m) for c, m in (result.best_checkpoints or []) if m.get(OBJECTIVE) is not None]
    if not kept:
        return result.checkpoint, result.metrics
    pick = max if mode == "max" else min
    return pick(kept, key=lambda cm: cm[1][OBJECTIVE])


def export_best(row: dict, rows: list[dict], sweep_id: str, sweep_dir: str, p: Plan) -> str:
    """The best trial's adapter at its best report -> <sweep>/best_adapter, with the sweep's id, the trial
    and its position on the sweep's leaderboard added to card.json (sweep.position: 1 is the best)."""
    checkpoint, metrics = best_checkpoint(row["_result"], p.objective.mode)
    with tempfile.TemporaryDirectory(prefix="best-adapter-") as tmp:
        local = Path(checkpoint.to_directory(str(Path(tmp) / "adapter")))
        card = json.loads((local / "card.json").read_text())
        card["sweep"] = {
            "id": sweep_id,
            "position": row["position"],
            "trials": len(rows),
            "trial_number": row["trial_number"],
            "trial_id": row["trial_id"],
            "objective": {"name": OBJECTIVE, "metric": p.objective.metric, "mode": p.objective.mode,
                          "value": row["objective"]},
            "sample": row["sample"],
            "steps": metrics.get("train/steps"),
            "state": row["state"],
        }
        (local / "card.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
        dest = join(sweep_dir, BEST)
        put_dir(local, dest)
    return dest


def score(target, examples: list[dict], threads: int) -> list[bool]:
    """Per-example correctness of an adapter: a Tune checkpoint (a trial's best rung) or a folder/URI."""
    from shared.heldout import score_adapter

    if isinstance(target, str):
        return score_adapter(target, examples, threads)
    with target.as_directory() as folder:
        return score_adapter(str(folder), examples, threads)


def remote_scorer(cfg: SweepConfig):
    """score() as a Ray task with one trial's resources: on a GPU cluster it runs where trials run, not on
    the CPU head that holds the driver."""
    import ray

    task = ray.remote(num_cpus=cfg.resources.cpu, num_gpus=cfg.resources.gpu, max_retries=1)(score)
    return lambda target, examples: ray.get(task.remote(target, examples, cfg.resources.cpu))


def select_winner(ranked: list[dict], cfg: SweepConfig, p: Plan, scorer) -> tuple[dict, dict]:
    """The top selection.top_k trials re-scored at their best rung on a larger dev slice; the winner has the
    best lower bound of its accuracy's Wilson interval (ties: higher accuracy, then leaderboard position)."""
    from shared.heldout import wilson

    k, conf = min(cfg.selection.top_k, len(ranked)), cfg.selection.confidence
    if k < 2 or p.objective.metric not in TASK_METRIC.values():
        why = ("one trial to choose from" if len(ranked) < 2 else "selection.top_k is 1" if k < 2 else
               f"the objective is {p.objective.metric}, not an accuracy")
        return ranked[0], {"rescored": [], "why": f"the leaderboard's first won: {why}"}
    from shared.data.loaders import load_splits

    examples = load_splits(p.trial.data)["dev"][: cfg.selection.examples]
    rescored = []
    for row in ranked[:k]:
        checkpoint, _ = best_checkpoint(row["_result"], p.objective.mode)
        correct = scorer(checkpoint, examples)
        lo, hi = wilson(sum(correct), len(correct), conf)
        rescored.append({"trial_number": row["trial_number"], "position": row["position"], "correct": sum(correct),
                         "n": len(correct), "accuracy": sum(correct) / len(correct), "interval": [lo, hi]})
    top = max(rescored, key=lambda r: (r["interval"][0], r["accuracy"], -r["position"]))
    first = rescored[0]
    why = (f"trial {top['trial_number']}: {top['correct']}/{top['n']} right on {top['n']} dev examples, "
           f"{conf:.0%} interval [{top['interval'][0]:.3f}, {top['interval'][1]:.3f}], the best lower bound of the "
           f"top {k} re-scored")
    if top is not first:
        why += (f"; the search's first, trial {first['trial_number']}, scored {first['correct']}/{first['n']} "
                f"(lower bound {first['interval'][0]:.3f}): its lead on the rung slice did not hold")
    elif all(r["interval"][0] == top["interval"][0] and r["accuracy"] == top["accuracy"] for r in rescored):
        why += "; all tied, so the search's order decided"
    winner = next(r for r in ranked if r["position"] == top["position"])
    return winner, {"rescored": rescored, "examples": len(examples), "confidence": conf, "why": why,
                    "winner_trial_number": top["trial_number"]}


def promote_winner(cfg: SweepConfig, task: str, adapter: str, sweep_id: str, row: dict, scorer) -> dict:
    """The gate of shared/promotion.py on the frozen held-out set: latest/<task> moves only if the winner is
    shown better than what it names (or it names nothing)."""
    if not cfg.promotion.enabled:
        return {"action": "skipped", "why": "promotion.enabled is false: latest was left as it was"}
    from shared.heldout import examples_digest, heldout_examples
    from shared.promotion import promote

    examples = heldout_examples(adapter, cfg.promotion.split, cfg.promotion.examples)
    return promote(cfg.storage_path, task, adapter, scorer=scorer, examples=examples,
                   digest=examples_digest(examples), level=cfg.promotion.level, source=f"sweep {sweep_id}",
                   extra={"sweep_id": sweep_id, "objective": row["objective"]})


def decision_notes(summary: dict) -> str:
    """report.md's account of the winner and of the promotion."""
    out = []
    sel = summary.get("selection")
    if sel:
        out.append("## Winner\n")
        if sel["rescored"]:
            out.append(f"The top {len(sel['rescored'])} trials re-scored at their best rung on {sel['examples']} dev "
                       f"examples, with {sel['confidence']:.0%} binomial (Wilson) intervals:\n")
            out.append("| trial | search position | right | accuracy | interval |\n|---|---|---|---|---|")
            out.extend(f"| {r['trial_number']} | {r['position']} | {r['correct']}/{r['n']} | {r['accuracy']:.3f} | "
                       f"[{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] |" for r in sel["rescored"])
            out.append("")
        out.append(f"Why: {sel['why']}.\n")
    prom = summary.get("promotion")
    if prom:
        out.append("## Promotion\n")
        out.append(f"{prom['action']}: {prom['why']}.\n")
        f = prom.get("figures")
        if f:
            out.append(f"Frozen held-out set `{f['heldout_digest']}` ({f['n']} examples): winner {f['candidate_acc']:.3f}, "
                       f"served {f['current_acc']:.3f}; difference {f['difference']:+.3f}, {f['confidence']:.0%} interval "
                       f"[{f['interval'][0]:+.3f}, {f['interval'][1]:+.3f}]; exact one-sided paired test p = "
                       f"{f['p_value']:.3g} at level {f['level']}.\n")
    return "\n".join(out)


def write_report(grid, sweep_dir: str, cfg: SweepConfig, p: Plan, notes: str = "") -> tuple[str, dict]:
    """Leaderboard (CSV + Markdown) and plots, by sweeps/report.py (written by another engineer).

    Ranked on sweep/objective, as summarize() ranks, so its #1 is the exported adapter. Returns the path of
    report.md and the parameter importances ({"values": {param: importance}, "note": how, or why none}). On a
    URI the report is written locally, then uploaded."""
    from sweeps import report

    trial_overrides = (shlex.quote(f"{k}={v}") for k, v in flatten(cfg.trial.overrides).items())
    rerun = " ".join(["python -m shared.trial --config", shlex.quote(cfg.trial.config), *trial_overrides])
    kwargs = dict(objective=OBJECTIVE, mode=p.objective.mode, max_steps=p.trial.train.max_steps, rerun=rerun,
                  notes=notes)
    if "://" not in sweep_dir:
        out = report.write_report(grid, str(Path(sweep_dir) / REPORT), **kwargs)
        where = out["report_md"]
    else:
        with tempfile.TemporaryDirectory(prefix="report-") as tmp:
            out = report.write_report(grid, tmp, **kwargs)
            put_dir(Path(tmp), join(sweep_dir, REPORT))
        where = join(sweep_dir, REPORT, "report.md")
    return where, {"values": out["importances"], "note": out["importance_note"]}


def finish(grid, cfg: SweepConfig, p: Plan, sweep_id: str, sweep_dir: str, scorer=None) -> dict:
    """After the search: the winner (re-scored), its adapter exported, the promotion gate, the report and
    summary.json. scorer: (adapter, examples) -> per-example correctness (default: a Ray task)."""
    rows = summarize(grid, p)
    ranked = [r for r in rows if r["position"] is not None]
    summary = {"sweep_id": sweep_id, "task": p.trial.data.task,
               "objective": {"name": OBJECTIVE, "metric": p.objective.metric, "mode": p.objective.mode},
               "sweep_folder": sweep_dir}
    if ranked:
        scorer = scorer or remote_scorer(cfg)
        try:
            best, summary["selection"] = select_winner(ranked, cfg, p, scorer)
        except Exception as e:  # noqa: BLE001 -- the trials are trained: never lose them to the re-scoring
            best, summary["selection"] = ranked[0], {"rescored": [], "why": f"re-scoring failed ({e}); the "
                                                     "leaderboard's first won"}
        summary["best_adapter"] = export_best(best, rows, sweep_id, sweep_dir, p)
        if cfg.tracking.mlflow:
            from sweeps import tracking

            checkpoint, _ = best_checkpoint(best["_result"], p.objective.mode)
            summary["mlflow_run"] = tracking.log_winner(cfg, sweep_id, best["trial_id"], checkpoint)
        task = p.trial.data.task
        try:
            summary["promotion"] = promote_winner(cfg, task, summary["best_adapter"], sweep_id, best, scorer)
        except Exception as e:  # noqa: BLE001 -- nor to the gate: latest stays as it was, and says why
            summary["promotion"] = {"action": "skipped", "why": f"the promotion gate failed ({e}); latest was "
                                    f"left as it was (promote by hand: python -m sweeps.promote promote ...)"}
        summary["latest"] = latest_pointer(cfg.storage_path, task)
        _, metrics = best_checkpoint(best["_result"], p.objective.mode)
        summary["best_metrics"] = {k: v for k, v in metrics.items() if isinstance(v, int | float) and "/" in k}
    summary["report"], summary["importances"] = write_report(grid, sweep_dir, cfg, p, notes=decision_notes(summary))
    summary["trials"] = [{k: v for k, v in r.items() if k != "_result"} for r in rows]
    write_text(join(sweep_dir, SUMMARY), json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def print_summary(s: dict) -> None:
    counts: dict[str, int] = {}
    for t in s["trials"]:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    print("\ntrials: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    for t in s["trials"]:
        obj = "-" if t["objective"] is None else f"{t['objective']:.4f}"
        err = f"  {t['error']}" if t["error"] else ""
        print(f"  #{t['position'] or '-':<3} trial {t['trial_number']:<3} {t['state']:<9} steps {t['steps']}  "
              f"objective {obj}  {t['sample']}{err}")
    print(f"\nsweep folder: {s['sweep_folder']}")
    if "best_adapter" in s:
        m = s["best_metrics"]
        print(f"best adapter: {s['best_adapter']}")
        shown = (f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(m.items()))
        print("best metrics: " + "  ".join(shown))
        print(f"promotion: {s['promotion']['action']}: {s['promotion']['why']}")
        print(f"latest: {s['latest']}")
    else:
        print("best adapter: none (no trial reported an objective)")
    print(f"report: {s['report']}")


# --------------------------------------------------------------------------------------------- main


def describe(cfg: SweepConfig, p: Plan, sweep_id: str, sweep_dir: str) -> None:
    est, dims = p.worst, p.dims
    tie = " (eval/loss breaks ties)" if p.objective.loss_tie_break else ""
    max_steps = p.trial.train.max_steps
    print(f"sweep {sweep_id}: {cfg.search.num_trials} trials of {p.trial.data.task} on {p.trial.model.name_or_path}, "
          f"{cfg.search.max_concurrent} at a time, {cfg.resources.cpu} CPU + {cfg.resources.gpu} GPU each")
    print(f"  objective: {OBJECTIVE} = {p.objective.metric}{tie}, {p.objective.mode}; rungs at steps "
          f"{rungs(cfg, max_steps)} of {max_steps}, dev slice {cfg.objective.eval_slice}")
    print(f"  space: {', '.join(f'{k} {d.model_dump(exclude_none=True)}' for k, d in cfg.space.items())}")
    print(f"  largest sample {to_overrides(p.worst_sample)}: est. peak GPU memory {est.lines()} "
          f"(hidden {dims.hidden_size}, {dims.num_hidden_layers} layers)")
    print(f"  sweep folder: {sweep_dir}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sweeps.run",
        description="Run a QLoRA sweep: Ray Tune + OptunaSearch (TPE) + ASHA over LoRA rank, alpha and "
        "learning rate. Connects to the Ray cluster it was submitted to (ray job submit), else to a running local cluster, "
        "else starts a local Ray.",
        epilog="Overrides are dotted keys of the sweep YAML, e.g. search.num_trials=8 space.lora.rank.high=32 "
        "trial.overrides.train.max_steps=200 resources.gpu=1 storage_path=s3://bucket/sweeps. "
        "Set RAY_AUTH_MODE=token to reach a cluster started with `ray start` (token auth).",
    )
    ap.add_argument("--config", type=Path, help="sweep YAML (configs/sweeps/*.yaml); required unless --resume")
    ap.add_argument("overrides", nargs="*", help="key.sub=value pairs applied on top of the sweep YAML")
    ap.add_argument("--resume", metavar="SWEEP_FOLDER",
                    help="resume the sweep in this folder or URI (Tuner.restore): finished trials are kept, "
                    "unfinished ones restart, the Optuna search keeps what it learned")
    ap.add_argument("--name", help="sweep id (default: <name>-<UTC time>); the folder under storage_path")
    ap.add_argument("--address", help="Ray address (default: RAY_ADDRESS, the job's cluster, a running local "
                    "cluster, else a new local Ray)")
    ap.add_argument("--check", action="store_true",
                    help="validate the sweep (configs, space, model, memory) and exit, without Ray")
    args = ap.parse_args(argv)

    try:
        if args.resume:
            if args.config or args.overrides:
                raise ConfigError("--resume: takes no --config or overrides; the sweep folder holds its config")
            sweep_dir = args.resume.rstrip("/")
            if "://" not in sweep_dir:
                sweep_dir = str(Path(sweep_dir).expanduser().resolve())
            state = json.loads(read_text(join(sweep_dir, SWEEP_STATE)))
            cfg = SweepConfig.model_validate(state["config"])
            sweep_id, base = state["sweep_id"], state["trial_base"]
        else:
            cfg = load_sweep(args.config, args.overrides)
            if not args.check:  # --check validates without the submit environment (the bucket variable)
                cfg.storage_path = resolve_storage(cfg)
            sweep_id = args.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
            sweep_dir, base = join(cfg.storage_path, sweep_id), None
            if not cfg.is_uri:
                sweep_dir = str(Path(sweep_dir).expanduser().resolve())
        p = plan(cfg, base)
        if cfg.tracking.mlflow and not args.check:
            from sweeps.tracking import require_mlflow

            require_mlflow()  # here, before any trial: the driver is what logs
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: --resume: {e}", file=sys.stderr)
        return 2
    describe(cfg, p, sweep_id, sweep_dir)
    if args.check:
        print("config ok")
        return 0

    # Trials keep the worker's working folder (the job's copy of the repo), so relative paths in the trial
    # config resolve as they did here. Propagated to trial actors by Tune.
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    from shared.ray_local import RayAuthError, ensure_token

    try:
        ensure_token()  # before Ray: a new local Ray would write one readable by every user (mode 644)
    except RayAuthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import ray
    from ray import tune

    ray.init(address=args.address, log_to_driver=True)
    try:
        check_cluster(cfg, ray.cluster_resources(), nodes=sum(1 for n in ray.nodes() if n["Alive"]))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if p.trial.model.name_or_path.startswith("embedded:"):
        from shared.models import embedded_folder

        embedded_folder(p.trial.model.name_or_path)  # built once here if neither committed nor cached, not per trial

    if args.resume:
        if not tune.Tuner.can_restore(sweep_dir):
            print(f"error: --resume: {sweep_dir} holds no Tune experiment to restore", file=sys.stderr)
            return 2
        print(f"resuming {sweep_dir}", flush=True)
        tuner = tune.Tuner.restore(sweep_dir, trainable=trainable(cfg, p.base), resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        state = {"sweep_id": sweep_id, "config": cfg.model_dump(mode="json"), "trial_base": p.base}
        write_text(join(sweep_dir, SWEEP_STATE), json.dumps(state, indent=2) + "\n")
        storage = cfg.storage_path if cfg.is_uri else str(Path(cfg.storage_path).expanduser().resolve())
        tuner = make_tuner(cfg, p, sweep_id, storage)
    from sweeps.raycompat import survive_oom_kills

    survive_oom_kills()  # a trial that Ray kills for memory fails alone, not the sweep
    grid = tuner.fit()
    summary = finish(grid, cfg, p, sweep_id, sweep_dir)
    print_summary(summary)
    return 0 if "best_adapter" in summary else 1


if __name__ == "__main__":
    sys.exit(main())
