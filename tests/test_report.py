"""The sweep report on synthetic trials (no Ray): ranking, states, the fallback metric, importances, and
that every plot is a real PNG. One slow test runs a toy Tune sweep (ASHA + Optuna, a few-ms objective)
and reports on it from the ResultGrid and from the experiment folder."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from sweeps.report import (
    TrialRecord,
    leaderboard,
    param_importances,
    swept_params,
    write_report,
)
from sweeps.trials import FAILED, FINISHED, STOPPED, flatten

OBJ = "eval/sql_exec_acc"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(steps, accs, losses=None, seconds_per_step=0.5):
    losses = losses or [2.0 - a for a in accs]
    return pd.DataFrame({
        "train/steps": steps, OBJ: accs, "eval/loss": losses, "training_iteration": range(1, len(steps) + 1),
        "time_total_s": [s * seconds_per_step for s in steps],
    })


def trial(i, rank, lr, steps, accs, error=None):
    return TrialRecord(
        trial_id=f"abc_{i:05d}",
        config={"lora.rank": rank, "lora.alpha": 2 * rank, "train.learning_rate": lr, "data.task": "sql"},
        history=history(steps, accs) if steps else pd.DataFrame(),
        error=error,
    )


@pytest.fixture
def records():
    return [
        trial(0, 8, 1e-4, [10, 20, 40], [0.10, 0.20, 0.30]),   # full budget
        trial(1, 32, 3e-3, [10, 20, 40], [0.30, 0.50, 0.45]),  # best (0.50 at step 20), last 0.45
        trial(2, 16, 1e-3, [10], [0.05]),                       # stopped by ASHA at the first rung
        trial(3, 64, 1e-2, [10, 20], [0.60, 0.70], error="RuntimeError: CUDA out of memory"),
        trial(4, 16, 3e-4, [], [], error="ValueError: bad config"),  # failed before reporting
    ]


def test_leaderboard_ranks_best_first_and_failed_last(records):
    rows = leaderboard(records, OBJ, "max")
    assert [r["trial_id"] for r in rows] == ["abc_00001", "abc_00000", "abc_00002", "abc_00003", "abc_00004"]
    assert [r["position"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["state"] for r in rows] == [FINISHED, FINISHED, STOPPED, FAILED, FAILED]
    top = rows[0]
    assert (top[f"{OBJ} best"], top[f"{OBJ} last"], top["eval/loss"], top["steps"]) == (0.5, 0.45, 1.55, 40)
    assert top["wall_s"] == 20.0
    assert {"lora.rank", "lora.alpha", "train.learning_rate"} <= set(top)
    assert "data.task" not in top  # the same in every trial: listed once in report.md, not as a column
    assert rows[-1][f"{OBJ} best"] is None and rows[-1]["steps"] == 0


def test_accuracy_ties_go_to_the_lower_eval_loss():
    recs = [TrialRecord(f"t{i}", {"lora.rank": r}, history([10, 20], [0.0, 0.0], losses=[loss + 0.1, loss]))
            for i, (r, loss) in enumerate([(8, 1.3), (16, 1.1), (32, 1.2)])]
    assert [row["trial_id"] for row in leaderboard(recs, OBJ, "max")] == ["t1", "t2", "t0"]


def test_min_mode_reverses_the_order(records):
    rows = leaderboard(records[:3], "eval/loss", "min")
    assert rows[0]["trial_id"] == "abc_00001"  # loss 1.5 at its best rung
    assert rows[0]["eval/loss best"] == pytest.approx(1.5)


def test_step_budget_from_config_or_argument(records):
    rows = leaderboard(records[:3], OBJ, "max", max_steps=100)
    assert {r["state"] for r in rows} == {STOPPED}
    sampled = [TrialRecord("t0", {"train.max_steps": 10}, history([10], [0.1])),
               TrialRecord("t1", {"train.max_steps": 40}, history([10, 20], [0.1, 0.2]))]
    assert [r["state"] for r in sorted(leaderboard(sampled, OBJ, "max"), key=lambda r: r["trial_id"])] == [
        FINISHED, STOPPED]


def test_swept_params_and_flatten():
    assert flatten({"lora": {"rank": 8}, "train.learning_rate": 1e-3}) == {"lora.rank": 8, "train.learning_rate": 1e-3}
    recs = [TrialRecord("a", {"lora.rank": 1, "data.task": "sql", "trial_number": 0}),
            TrialRecord("b", {"lora.rank": 2, "data.task": "sql", "trial_number": 1})]
    assert swept_params(recs) == (["lora.rank"], {"data.task": "sql"})  # trial_number is no hyperparameter


def test_sweep_objective_with_trial_numbers_and_accuracy_beside_it(tmp_path):
    """As sweeps/run.py calls it: ranked on sweep/objective, trials in the sweep's sampling order."""
    recs = []
    for number, (rank, acc) in enumerate([(8, 0.2), (32, 0.4), (16, 0.3)]):
        h = history([10, 20], [acc / 2, acc])
        h["sweep/objective"] = h[OBJ] + 0.001
        recs.append(TrialRecord(f"z{9 - number}", {"lora.rank": rank, "trial_number": number}, h))
    out = write_report(recs, tmp_path, "sweep/objective", "max",
                       rerun="python -m shared.trial --config configs/sql_micro_smoke.yaml train.max_steps=24")
    rows = list(csv.DictReader(open(out["leaderboard_csv"])))
    assert [r["trial_number"] for r in rows] == ["1", "2", "0"]
    assert rows[0][f"{OBJ} best"] == "0.4" and "lora.rank" in rows[0] and "trial_number best" not in rows[0]
    rerun = next(line for line in open(out["report_md"]) if line.startswith("python -m shared.trial"))
    # a command that runs as it is: the sweep's trial config, then only keys shared.trial accepts, no placeholder
    assert rerun.strip() == "python -m shared.trial --config configs/sql_micro_smoke.yaml train.max_steps=24 lora.rank=32"
    without = write_report(recs, tmp_path / "plain", "sweep/objective", "max")
    assert "<" not in Path(without["report_md"]).read_text().split("## Optimization history")[0]


def test_importances_find_the_parameter_that_decides(tmp_path):
    # 20 trials: the objective follows the rank; the learning rate only adds a little non-monotone noise.
    grid = [(r, lr) for r in (8, 16, 32, 64) for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)]
    recs = [trial(i, rank, lr, [10], [rank / 64 + 0.001 * ((i * 7) % 5)]) for i, (rank, lr) in enumerate(grid)]
    rows = leaderboard(recs, OBJ, "max")
    params, _ = swept_params(recs)
    imp, note = param_importances(rows, params, OBJ, "max")
    assert set(imp) == {"lora.rank", "lora.alpha", "train.learning_rate"}
    assert math.isclose(sum(imp.values()), 1.0, abs_tol=1e-6)
    assert imp["lora.rank"] > imp["train.learning_rate"] and imp["lora.alpha"] > imp["train.learning_rate"]
    assert "20 trials" in note


def test_importances_fall_back_with_under_three_trials(records):
    rows = leaderboard(records[:2], OBJ, "max")
    imp, note = param_importances(rows, ["lora.rank"], OBJ, "max")
    assert imp == {} and "at least 3" in note


def test_write_report_files_and_return(records, tmp_path):
    out = write_report(records, tmp_path / "rep", OBJ, "max")
    assert out["objective"] == OBJ and out["num_trials"] == 5
    assert out["state_counts"] == {FINISHED: 2, STOPPED: 1, FAILED: 2}
    best = out["best"]
    assert best["trial_id"] == "abc_00001" and best["value"] == 0.5
    assert best["config"]["lora.rank"] == 32
    assert best["metrics"]["train/steps"] == 20  # the report where it reached its best, not the last
    for name in ("history", "importance", "curves", "params"):
        assert open(out["plots"][name], "rb").read(8) == PNG_MAGIC, name
    with open(out["leaderboard_csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["trial_id"] for r in table][:2] == ["abc_00001", "abc_00000"]
    assert table[-1]["error"] == "ValueError: bad config"
    text = open(out["report_md"]).read()
    for png in ("history.png", "importance.png", "curves.png", "params.png"):
        assert f"]({png})" in text
    assert "lora.rank=32" in text and "CUDA out of memory" in text and "`data.task` = sql" in text
    md = open(out["leaderboard_md"]).read()
    assert md.count("\n| ") == 6  # header + 5 trials


def test_fallback_metric_when_objective_missing(tmp_path):
    recs = [TrialRecord(f"t{i}", {"lora.rank": r}, pd.DataFrame({"train/steps": [10], "eval/loss": [loss]}))
            for i, (r, loss) in enumerate([(8, 1.2), (16, 0.9), (32, 1.0)])]
    out = write_report(recs, tmp_path, "eval/py_pass_at_1", "max")
    assert (out["objective"], out["mode"]) == ("eval/loss", "min")
    assert out["best"]["trial_id"] == "t1"
    assert "fallback" in open(out["report_md"]).read()


def test_report_with_nothing_reported(tmp_path):
    recs = [TrialRecord("t0", {"lora.rank": 8}, error="ImportError: no module"),
            TrialRecord("t1", {"lora.rank": 16}, error="ImportError: no module")]
    out = write_report(recs, tmp_path, OBJ, "max")
    assert out["best"] is None and out["plots"] == {}
    assert "ImportError" in open(out["report_md"]).read()


def test_mode_is_checked(records, tmp_path):
    with pytest.raises(ValueError, match="mode"):
        write_report(records, tmp_path, OBJ, "maximize")


TOY_CRASH_BELOW_LR = 2e-4


def toy_objective(config):
    """A few-ms trial reporting the sweep's metric names at steps 10..40; higher rank learns faster. The
    smallest learning rates crash before their first report (seed 0 samples one: trial 3, lr 1.4e-4)."""
    from ray import tune

    if config["train.learning_rate"] < TOY_CRASH_BELOW_LR:
        raise ValueError("toy crash: learning rate too small")
    for step in range(10, 50, 10):
        acc = min(1.0, config["lora.rank"] / 64 * step / 40 + config["train.learning_rate"])
        tune.report({"train/steps": step, OBJ: acc, "eval/loss": 2 - acc, "train/loss": 2.1 - acc})


def toy_space(trial):
    """Define-by-run, like sweeps/space.py: alpha derived from rank (module level: the searcher is pickled)."""
    rank = trial.suggest_categorical("lora.rank", [8, 16, 32, 64])
    trial.suggest_float("train.learning_rate", 1e-4, 1e-2, log=True)
    return {"lora.alpha": 2 * rank}


@pytest.mark.slow
def test_report_of_a_toy_tune_sweep(tmp_path):
    """A real ResultGrid (ASHA + OptunaSearch, a few-ms objective), and the same experiment from its folder."""
    ray = pytest.importorskip("ray")
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/ by name
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # never a running cluster
    try:
        grid = tune.Tuner(
            toy_objective,
            tune_config=tune.TuneConfig(
                metric=OBJ, mode="max", num_samples=6,
                search_alg=OptunaSearch(space=toy_space, metric=OBJ, mode="max", seed=0),
                scheduler=ASHAScheduler(time_attr="train/steps", max_t=40, grace_period=10, reduction_factor=2),
            ),
            run_config=tune.RunConfig(name="toy", storage_path=str(tmp_path / "results"), verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    out = write_report(grid, tmp_path / "from_grid", OBJ, "max")
    again = write_report(grid.experiment_path, tmp_path / "from_path", OBJ, "max")
    assert out["num_trials"] == again["num_trials"] == 6
    assert out["best"]["trial_id"] == again["best"]["trial_id"] == grid.get_best_result(scope="all").metrics["trial_id"]
    assert {"lora.rank", "lora.alpha", "train.learning_rate"} <= set(out["best"]["config"])
    assert set(out["state_counts"]) <= {FINISHED, STOPPED, FAILED}
    assert out["state_counts"].get(FINISHED, 0) >= 1
    rows = list(csv.DictReader(open(again["leaderboard_csv"])))
    crashed = [r for r in rows if float(r["train.learning_rate"]) < TOY_CRASH_BELOW_LR]
    assert [r["state"] for r in rows if r["state"] == FAILED] == [FAILED] * len(crashed)
    for r in crashed:  # no report, yet its sample comes from the experiment state
        assert r["lora.rank"] and r["error"] == "ValueError: toy crash: learning rate too small"
    assert {"history", "curves", "params"} <= set(out["plots"])
