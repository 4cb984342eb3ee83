"""MLflow tracking (sweeps/tracking.py) against a real local MLflow store: a real Tune run with the callback,
one MLflow run per trial with its parameters and its rung metrics at their training steps, a crashed trial's
run marked failed, the winner's adapter as an artifact; and the config refusing what cannot work."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

from shared.config import ConfigError

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs/sweeps/sql_smoke.yaml"
CRASH_RANK = 4  # the toy trial with this rank crashes at its first step


def _sweep(tmp_path, *overrides):
    from sweeps.config import load_sweep

    return load_sweep(SMOKE, [f"storage_path={tmp_path / 'storage'}", "tracking.mlflow=true", *overrides])


def toy_trial(config):
    """Reports at steps 10, 20, 30 with a checkpoint each (an adapter folder with a card), as a trial does."""
    from ray import tune

    if config["lora.rank"] == CRASH_RANK:
        raise RuntimeError("toy crash")
    for step in (10, 20, 30):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "card.json").write_text(json.dumps({"rank": config["lora.rank"], "step": step}))
            tune.report({"train/steps": step, "sweep/objective": config["lora.rank"] * step / 1000,
                         "eval/loss": 1.0 / step}, checkpoint=tune.Checkpoint.from_directory(tmp))


@pytest.mark.slow
def test_a_run_per_trial_with_params_rung_metrics_at_their_steps_and_the_winner_adapter(tmp_path):
    ray = pytest.importorskip("ray")
    mlflow = pytest.importorskip("mlflow")
    from ray import tune

    from sweeps.tracking import ADAPTER_ARTIFACT, callback, destination, log_winner

    cfg = _sweep(tmp_path, "name=toy")
    runs = callback(cfg, "toy-1", "embedded:micro-llama", "sql")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/ by name
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            toy_trial,
            param_space={"lora.rank": tune.grid_search([8, CRASH_RANK, 16]), "train.learning_rate": 1e-3},
            run_config=tune.RunConfig(name="toy-1", storage_path=str(tmp_path / "results"), verbose=0,
                                      callbacks=[runs]),
        ).fit()
    finally:
        ray.shutdown()

    uri, experiment, artifacts = destination(cfg)
    assert uri == f"sqlite:///{tmp_path / 'storage' / 'mlflow.db'}" and experiment == "toy"
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("toy")
    assert exp.artifact_location == artifacts and artifacts.startswith((tmp_path / "storage").as_uri())
    found = {r.data.params["lora.rank"]: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(found) == ["16", str(CRASH_RANK), "8"]
    for rank, run in found.items():
        assert run.data.tags["sweep_id"] == "toy-1" and run.data.tags["base_model"] == "embedded:micro-llama"
        assert run.data.tags["task"] == "sql" and run.data.params["train.learning_rate"] == "0.001"
        history = client.get_metric_history(run.info.run_id, "sweep/objective")
        if rank == str(CRASH_RANK):
            assert run.info.status == "FAILED" and history == []
            continue
        assert run.info.status == "FINISHED"
        # every rung, at the trial's training step (not Tune's report count 1, 2, 3)
        assert [(m.step, m.value) for m in history] == [(s, int(rank) * s / 1000) for s in (10, 20, 30)]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/loss")] == [10, 20, 30]

    best = grid.get_best_result(metric="sweep/objective", mode="max")
    run_id = log_winner(cfg, "toy-1", best.metrics["trial_id"], best.checkpoint)
    assert run_id == found["16"].info.run_id
    local = client.download_artifacts(run_id, ADAPTER_ARTIFACT, str(tmp_path / "back"))
    assert json.loads((Path(local) / "card.json").read_text()) == {"rank": 16, "step": 30}
    assert client.get_run(run_id).data.tags["sweep_winner"] == "true"
    assert not (Path.cwd() / "mlruns").exists()  # nothing written into the working folder


def test_tracking_is_off_by_default_and_refuses_what_cannot_work(tmp_path):
    from sweeps.config import load_sweep
    from sweeps.tracking import callback

    assert callback(load_sweep(SMOKE, [f"storage_path={tmp_path}"]), "s", "m", "sql") is None
    with pytest.raises(ConfigError, match="tracking.uri: storage_path 's3://bucket/sweeps' is object storage"):
        _sweep(tmp_path, "storage_path=s3://bucket/sweeps")
    assert _sweep(tmp_path, "storage_path=s3://bucket/sweeps", "tracking.uri=http://127.0.0.1:5000").tracking.uri
    with pytest.raises(ConfigError, match="holds credentials"):
        _sweep(tmp_path, "tracking.uri=http://me:secret@mlflow.example:5000")
    with pytest.raises(ConfigError, match="tracking.mlfow"):
        _sweep(tmp_path, "tracking.mlfow=true")
