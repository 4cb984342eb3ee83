"""benchmarks/sweep_efficiency.py: the three methods share one valid sweep config and one discrete space;
the figures compare against the grid. The end-to-end run (`--smoke`, three Tune runs) is marked slow and
asserts what is printed, never a timing (STYLE.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.sweep_efficiency import compare, discrete_space, grid_size, parse_args, sweep_overrides

REPO = Path(__file__).resolve().parent.parent


def test_defaults_give_a_valid_sweep_over_the_grid_space(tmp_path):
    from sweeps.config import load_sweep, plan, rungs

    args = parse_args([])
    args.cpus = 2
    cfg = load_sweep(args.sweep, sweep_overrides(args, None, tmp_path))
    p = plan(cfg)
    assert grid_size(args) == 12 and args.asha_trials == 6
    assert {k: d.values for k, d in cfg.space.items()} == discrete_space(args)
    assert p.trial.train.max_steps == args.steps and p.trial.train.max_time_s is None
    assert p.trial.eval.splits == ["dev"] and p.trial.eval.max_examples == cfg.objective.eval_slice
    assert rungs(cfg, args.steps) == [5, 20]  # 1/16 and 1/4 of an 80-step trial
    assert cfg.search.max_concurrent == 1 and cfg.failure.max_retries == 0


def test_smoke_and_bad_arguments():
    args = parse_args(["--smoke", "--ranks", "4,8,16"])
    assert args.steps == 12 and args.ranks == [4, 8, 16] and grid_size(args) == 6 and args.asha_trials == 3
    for bad in (["--grace", "7"], ["--methods", "random"], ["--methods", "optuna"], ["--methods", "bayes"], ["--lrs", ""]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_compare_against_the_grid():
    rows = compare([
        {"method": "grid", "trial_steps": 1000, "best_accuracy": 0.30, "best_eval_loss": 0.50},
        {"method": "asha+tpe", "trial_steps": 250, "best_accuracy": 0.29, "best_eval_loss": 0.52},
        {"method": "random", "trial_steps": 240, "best_accuracy": None, "best_eval_loss": 0.60},
    ])
    assert rows[1]["steps_vs_grid"] == 0.25 and rows[1]["accuracy_vs_grid"] == pytest.approx(-0.01)
    assert rows[2]["accuracy_vs_grid"] is None and rows[2]["loss_vs_grid"] == pytest.approx(0.10)


def test_best_within_counts_the_steps_spent_before_each_report():
    import pandas as pd

    from benchmarks.sweep_efficiency import best_within
    from sweeps.report import TrialRecord

    def trial(n, accs, losses):
        return TrialRecord(f"t{n}", {}, pd.DataFrame({"train/steps": [5, 10], "acc": accs, "eval/loss": losses}), order=n)

    records = [trial(0, [0.1, 0.3], [2.0, 1.0]), trial(1, [0.5, 0.9], [0.8, float("nan")])]
    assert best_within(records, "acc", max, 15) == 0.5  # the first trial's 10 steps, then the second's step 5
    assert best_within(records, "acc", max, 20) == 0.9
    assert best_within(records, "acc", max, 9) == 0.1
    assert best_within(records, "acc", max, 4) is None
    assert best_within(records, "eval/loss", min, 20) == 0.8  # a NaN report counts for nothing


@pytest.mark.slow
def test_smoke_run_prints_every_method(tiny_model_dir, tmp_path):
    out = tmp_path / "eff.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.sweep_efficiency", "--smoke", "--model", str(tiny_model_dir),
         "--out", str(tmp_path / "runs"), "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800, check=False,  # four methods; ~15 min on a busy 2-core machine
    )
    assert run.returncode == 0, run.stderr[-4000:]
    results = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"grid", "asha+tpe", "random", "optuna"}
    assert results["grid"]["trials"] == 4 and results["grid"]["trial_steps"] == 4 * 12
    assert results["random"]["trial_steps"] <= max(12, results["asha+tpe"]["trial_steps"])
    # Optuna alone draws trials until its steps reach asha+tpe's; the last one may pass it by at most a trial
    budget = results["asha+tpe"]["trial_steps"]
    assert budget <= results["optuna"]["trial_steps"] < budget + 12 and results["optuna"]["errors"] == 0
    for method in ("grid", "asha-tpe", "random", "optuna"):
        assert (tmp_path / "runs" / method / "report" / "leaderboard.csv").is_file()
    table = run.stdout[run.stdout.rindex("\nmethod "):]  # Tune's own progress goes to stdout before it
    for method in results:  # one table row each: the name, then its trial count (verdict lines follow the table)
        assert len(re.findall(rf"^{re.escape(method)} +\d+ ", table, re.MULTILINE)) == 1, table
    for r in results.values():  # within asha+tpe's steps, no method has more than it found in all of its own
        assert r["budget_steps"] == budget and r["best_eval_loss_at_budget"] >= r["best_eval_loss"]
    assert "at equal trial-steps" in table

    # The same --out again: every method restores from its folder, nothing trains, the figures are the same
    again = subprocess.run(run.args, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "restoring" in again.stderr and "(finished)" in again.stderr and "train:" not in again.stderr
    restored = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    for method, r in results.items():
        for key in ("trials", "trial_steps", "wall_s", "best_eval_loss", "best_eval_loss_at_budget"):
            assert restored[method][key] == r[key], (method, key)


def test_a_gap_of_exactly_the_goal_is_met(capsys):
    from benchmarks.sweep_efficiency import print_table

    rows = compare([
        {"method": "grid", "trial_steps": 1920, "best_accuracy": 0.96, "best_eval_loss": 0.20, "accuracy_metric": "a",
         "trials": 12, "cpu_s": 1.0, "wall_s": 1.0},
        {"method": "asha+tpe", "trial_steps": 480, "best_accuracy": 0.94, "best_eval_loss": 0.21, "accuracy_metric": "a",
         "trials": 6, "cpu_s": 1.0, "wall_s": 1.0},
    ])
    print_table(rows, parse_args([]))
    assert "(goal >= -0.02): met" in capsys.readouterr().out


def test_optuna_alone_trains_what_tpe_suggested():
    """The Optuna-alone method's sample holds every suggestion (rank and learning rate), not only what is
    derived from them: read too early, trial.params is empty and every trial trains the YAML's own values."""
    import optuna

    from benchmarks.sweep_efficiency import optuna_sample

    args = parse_args([])
    space = {k: {"type": "choice", "values": v} for k, v in discrete_space(args).items()}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    samples = [optuna_sample(study.ask(), space) for _ in range(8)]
    for s in samples:
        assert s["lora.rank"] in args.ranks and s["train.learning_rate"] in args.lrs
        assert s["lora.alpha"] == s["lora.rank"] * s["lora.alpha_multiplier"]
    assert len({(s["lora.rank"], s["train.learning_rate"]) for s in samples}) > 1
