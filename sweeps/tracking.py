"""Experiment tracking in MLflow, optional: a run per trial with the sampled parameters, every rung's metrics
at its training step, and the sweep's winner's adapter as an artifact of its trial's run.

    tracking:
      mlflow: true
      uri: null          # default: sqlite:///<storage_path>/mlflow.db, artifacts in <storage_path>/mlflow-artifacts
      experiment: null   # default: the sweep's name

Ray Tune's own MLflowLoggerCallback does the runs; this adds what it leaves out: the step of a metric is the
trial's training step (Tune's would be its report count), each run is tagged with the sweep and the trial id,
and the experiment's artifacts go beside the database instead of ./mlruns in the job's temporary working
folder. MLflow is the optional extra `pip install -e ".[mlflow]"`. A tracking server's credentials come from
the environment (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD), never the YAML.
Tracking never stops a sweep: an MLflow error is printed and the trials go on.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from shared.config import ConfigError

ADAPTER_ARTIFACT = "adapter"  # the winner's adapter folder, under this path in its run's artifacts


def destination(cfg) -> tuple[str, str, str | None]:
    """(tracking URI, experiment name, artifact location) of a sweep config with tracking.mlflow on (its
    validation refused a default database on object storage)."""
    t = cfg.tracking
    experiment = t.experiment or cfg.name
    if t.uri:
        return t.uri, experiment, None  # a server decides where its artifacts go
    root = Path(cfg.storage_path).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", experiment, (root / "mlflow-artifacts").as_uri()


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
        import sqlalchemy  # noqa: F401  -- the sqlite store
    except ImportError as e:
        raise ConfigError(f"tracking.mlflow: MLflow is not installed here ({e.name}); install the optional extra: "
                          "pip install -e '.[mlflow]'") from None


def _warn(what: str, e: Exception) -> None:
    print(f"tracking: {what} failed ({type(e).__name__}: {e}); the sweep goes on without it", file=sys.stderr)


class TrialRuns(MLflowLoggerCallback):
    """Tune's MLflow callback with the trial's training step as each metric's step, the sweep's tags on every
    run, and its experiment created with the artifact location beside the database."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None, tags: dict[str, str]):
        super().__init__(tracking_uri=uri, experiment_name=experiment, tags=tags, save_artifact=False)
        self.artifact_location = artifact_location

    def setup(self, *args, **kwargs):
        import mlflow

        client = mlflow.MlflowClient(self.tracking_uri)
        if client.get_experiment_by_name(self.experiment_name) is None:
            client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial):
        try:
            if trial not in self._trial_runs:
                tags = {**self.tags, "trial_name": str(trial), "trial_id": trial.trial_id}
                self._trial_runs[trial] = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
            self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=trial.config)
        except Exception as e:  # noqa: BLE001
            _warn(f"starting the run of {trial}", e)

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._trial_runs:
            return
        step = int(result.get("train/steps") or result[TRAINING_ITERATION])
        metrics = {k: v for k, v in result.items() if k != "config"}
        try:
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=metrics, step=step)
        except Exception as e:  # noqa: BLE001
            _warn(f"logging the metrics of {trial}", e)

    def log_trial_end(self, trial, failed=False):
        if trial not in self._trial_runs:
            return
        try:
            super().log_trial_end(trial, failed)
        except Exception as e:  # noqa: BLE001
            _warn(f"ending the run of {trial}", e)


def callback(cfg, sweep_id: str, base_model: str, task: str) -> TrialRuns | None:
    if not cfg.tracking.mlflow:
        return None
    require_mlflow()
    uri, experiment, artifacts = destination(cfg)
    return TrialRuns(uri, experiment, artifacts, {"sweep_id": sweep_id, "base_model": base_model, "task": task})


def log_winner(cfg, sweep_id: str, trial_id: str, checkpoint) -> str | None:
    """The winner's adapter (its best rung's checkpoint) into its trial's run; returns the run id."""
    if not cfg.tracking.mlflow:
        return None
    try:
        import mlflow

        uri, experiment, _ = destination(cfg)
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.sweep_id = '{sweep_id}' and "
                                  f"tags.trial_id = '{trial_id}'") if exp else []
        if not runs:
            print(f"tracking: no MLflow run of trial {trial_id} in {experiment!r}; the winner is not logged",
                  file=sys.stderr)
            return None
        run_id = runs[0].info.run_id
        with tempfile.TemporaryDirectory(prefix="mlflow-adapter-") as tmp:
            local = checkpoint.to_directory(str(Path(tmp) / ADAPTER_ARTIFACT))
            client.log_artifacts(run_id, local, artifact_path=ADAPTER_ARTIFACT)
        client.set_tag(run_id, "sweep_winner", "true")
        return run_id
    except Exception as e:  # noqa: BLE001
        _warn("logging the winner's adapter", e)
        return None
