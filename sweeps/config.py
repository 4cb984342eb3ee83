"""The typed config of a sweep, loaded from YAML and overridable by dotted keys, like the trial's.

    from sweeps.config import load_sweep, plan
    cfg = load_sweep("configs/sweeps/sql_smoke.yaml", ["search.num_trials=8", "space.lora.rank.high=32"])
    p = plan(cfg)   # the resolved trial tree, the search space, and the checks that need the model

A sweep names a trial YAML plus overrides (the trial every sample starts from), the search space
(sweeps/space.py), the search, the ASHA scheduler, the objective, per-trial resources, retries and
storage. `load_sweep` validates all of it, and the resulting trial config at every corner of the space,
before anything touches Ray; `plan` adds what needs the model's dimensions (rank vs hidden size, the
memory estimate) and `check_cluster` what needs the cluster (GPUs). Errors are `ConfigError`s naming the
dotted key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.config import ConfigError, TrialConfig, apply_overrides, read_yaml, validate
from shared.paths import REPO_ROOT
from shared.storage import URI, is_shared
from shared.sweep_store import OBJECTIVE  # the metric Tune, ASHA and Optuna see (see Objective.value)
from sweeps import memory, space as space_mod
from sweeps.trials import TASK_METRIC, flatten  # TASK_METRIC: the task's dev accuracy, the default objective

URI_CREDENTIALS = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@]+@", re.I)  # scheme://user:password@host
URI_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "file")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrialRef(_Section):
    # The trial every sample starts from: a trial YAML (relative to the working folder or the repo root)...
    config: str
    # ...plus dotted overrides applied before the sample's ({"train.max_steps": 24} or nested).
    overrides: dict[str, Any] = Field(default_factory=dict)


class SearchConfig(_Section):
    num_trials: int = Field(16, gt=0)  # samples drawn; each is one trial
    max_concurrent: int = Field(1, gt=0)  # trials at once: the cluster's GPUs (or 1 on 2 CPU cores)
    seed: int = 0  # TPE sampler seed: the same seed and results give the same samples
    # Random samples before TPE models the space (Optuna's default is 10); below num_trials or TPE never acts.
    startup_trials: int = Field(10, ge=1)


class SchedulerConfig(_Section):
    # A rung report every N steps: dev-slice evaluation + adapter checkpoint. Each costs an evaluation.
    eval_every_steps: int = Field(50, gt=0)
    # No trial is stopped before this many steps. Rungs at grace x reduction_factor^k, below train.max_steps.
    grace_period_steps: int = Field(100, gt=0)
    reduction_factor: float = Field(2.0, gt=1.0)  # keep the top 1/reduction_factor at each rung


class ObjectiveConfig(_Section):
    # "auto": the task's dev accuracy (eval/sql_exec_acc or eval/py_pass_at_1). Or any dev metric the trial
    # reports, e.g. eval/loss (the fallback when accuracy is not meaningful yet, as on a micro model).
    metric: str = "auto"
    mode: Literal["auto", "max", "min"] = "auto"  # auto: min for *loss, else max
    # The first N dev examples, scored at every rung (a fixed slice, so rungs compare).
    eval_slice: int = Field(100, gt=0)
    # Break accuracy ties with eval/loss (always reported): on small slices many trials tie, and ASHA and
    # TPE would otherwise choose among them at random. Never outweighs one example of accuracy.
    loss_tie_break: bool = True


class ResourcesConfig(_Section):
    cpu: int = Field(2, gt=0)  # per trial; torch threads = this (more threads than CPUs thrash: 10-40x slower)
    gpu: int = Field(0, ge=0, le=1)  # 1 on a GPU cluster: one trial per GPU; 0 runs on the trial's CPUs
    # The smallest GPU a trial may land on, in GB: the memory estimate of every sample must fit it.
    gpu_memory_gb: float | None = Field(None, gt=0)
    # Refuse at submit when the cluster lacks what a trial asks for. False on an autoscaling cluster
    # whose GPU nodes start on demand (the trials then wait for them).
    check_cluster: bool = True


class FailureConfig(_Section):
    # A crashed or out-of-memory trial is retried this often, then recorded as failed; the sweep goes on.
    max_retries: int = Field(1, ge=0)


class CheckpointConfig(_Section):
    # Adapter checkpoints kept per trial, the best by objective (the latest is always kept too). None: all.
    keep_per_trial: int | None = Field(None, gt=0)


class SelectionConfig(_Section):
    # After the search the top_k trials' best adapters are re-scored on the first `examples` dev examples (more
    # than objective.eval_slice, so less noise), and the winner is the one whose accuracy has the best lower
    # bound of its binomial (Wilson) interval at `confidence`. 1: no re-scoring, the leaderboard's first wins.
    # Each re-score is one evaluation with the trial's resources. Only with an accuracy objective.
    top_k: int = Field(3, ge=1)
    examples: int = Field(200, gt=0)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


class PromotionConfig(_Section):
    # The winner replaces latest/<task> (what Serve follows) only if an exact one-sided paired test on a frozen
    # held-out set (the first `examples` of `split`, the same for both) shows it better than the current one at
    # `level`; every decision is recorded in latest/<task>.history.json (python -m sweeps.promote list).
    enabled: bool = True  # false: the sweep leaves latest alone (promote later with python -m sweeps.promote)
    split: str = "test"
    examples: int = Field(200, gt=0)
    level: float = Field(0.05, gt=0, lt=0.5)  # a false promotion at most this often when the two are equal


class FaultConfig(_Section):
    """Test hook (tests/test_sweep_e2e.py): makes one trial raise, to exercise retries. Off by default."""

    crash_trial: int | None = Field(None, ge=0)  # the Optuna trial number that crashes, on every attempt
    crash_at_step: int = Field(1, gt=0)  # right after the first rung report at or after this step


class TrackingConfig(_Section):
    """MLflow: a run per trial (sweeps/tracking.py); the optional extra `.[mlflow]`. Off by default."""

    mlflow: bool = False
    # A tracking server (http://host:5000) or database URI; default sqlite:///<storage_path>/mlflow.db, which
    # needs a local storage_path. Credentials come from the environment (MLFLOW_TRACKING_TOKEN), never here.
    uri: str | None = None
    experiment: str | None = None  # default: the sweep's name

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, v):
        if v and URI_CREDENTIALS.search(v):
            raise ValueError("tracking.uri: holds credentials (user:password@); put them in MLFLOW_TRACKING_USERNAME "
                             "and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment instead")
        return v


class SweepConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # the sweep id is <name>-<UTC time>
    trial: TrialRef
    space: dict[str, Any]
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    failure: FailureConfig = Field(default_factory=FailureConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    # Where sweep folders go: a local folder or a URI (s3://bucket/path, gs://...). It must outlive the job:
    # `ray job submit --working-dir .` runs in a temporary copy of the repo. On a cluster of several nodes it
    # must be an object store (check_cluster). ${VAR} is read from the environment at submit, so a preset can
    # name the bucket without holding it: s3://${QLORA_SWEEP_BUCKET}/qlora-sweeps.
    storage_path: str = "~/qlora-sweeps"
    # True when storage_path is a folder every node mounts at the same path (NFS): then a local path is allowed
    # on a cluster of several nodes. Otherwise such a cluster needs an object-store URI (check_cluster).
    storage_shared: bool = False
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    fault: FaultConfig = Field(default_factory=FaultConfig)

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v):
        return space_mod.parse_space(v)

    @field_validator("storage_path")
    @classmethod
    def _storage(cls, v):
        m = URI.match(v)
        if m and m.group(1) not in URI_SCHEMES:
            raise ValueError(f"storage_path: scheme {m.group(1)!r} is not one of {', '.join(URI_SCHEMES)}")
        return v

    @model_validator(mode="after")
    def _checks(self):
        if self.resources.gpu and self.resources.gpu_memory_gb is None:
            raise ValueError(
                "resources.gpu_memory_gb: required when resources.gpu is 1 (the smallest GPU a trial may get)"
            )
        if self.search.max_concurrent > self.search.num_trials:
            raise ValueError(
                f"search.max_concurrent ({self.search.max_concurrent}) is above search.num_trials "
                f"({self.search.num_trials})"
            )
        if self.tracking.mlflow and not self.tracking.uri and self.is_uri:
            raise ValueError(f"tracking.uri: storage_path {self.storage_path!r} is object storage, where no MLflow "
                             "database can live; name a tracking server (tracking.uri: http://host:5000)")
        s = self.scheduler
        if s.grace_period_steps % s.eval_every_steps:
            raise ValueError(
                f"scheduler.grace_period_steps ({s.grace_period_steps}) must be a multiple of "
                f"scheduler.eval_every_steps ({s.eval_every_steps}): ASHA decides at rung reports"
            )
        return self

    @property
    def is_uri(self) -> bool:
        """A URI (s3://, gs://, file://...) is written through pyarrow; a plain path is a local folder."""
        return bool(URI.match(self.storage_path))


@dataclass(frozen=True)
class Objective:
    """What Tune, ASHA and Optuna optimize: `sweep/objective`, computed from a report's metrics."""

    metric: str  # the underlying dev metric
    mode: str  # "max" or "min"
    loss_tie_break: bool
    max_examples: int  # the largest slice accuracy is measured on: its resolution is 1 / max_examples

    def value(self, metrics: dict) -> float:
        """The metric; with the tie-break, accuracy + 1 / ((1 + eval/loss) x (max_examples + 1)): the
        bonus lies in (0, 1 / (max_examples + 1)), below one example's worth of accuracy, so accuracy
        always decides and the loss only orders trials with equal accuracy."""
        v = float(metrics[self.metric])
        if self.loss_tie_break and self.metric != "eval/loss" and "eval/loss" in metrics:
            v += 1.0 / ((1.0 + max(0.0, float(metrics["eval/loss"]))) * (self.max_examples + 1))
        return v


def objective(cfg: SweepConfig, trial: TrialConfig) -> Objective:
    metric = TASK_METRIC[trial.data.task] if cfg.objective.metric == "auto" else cfg.objective.metric
    mode = cfg.objective.mode
    if mode == "auto":
        mode = "min" if metric.endswith("loss") else "max"
    tie = cfg.objective.loss_tie_break and mode == "max"
    return Objective(metric, mode, tie, max(cfg.objective.eval_slice, trial.eval.max_examples))


# ------------------------------------------------------------------------------------------ loading


def resolve_trial_yaml(path: str) -> Path:
    """A trial YAML path: absolute, relative to the working folder, or relative to the repo root."""
    p = Path(path).expanduser()
    for candidate in (p, REPO_ROOT / p):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"trial.config: trial YAML {path!r} does not exist (looked in {Path.cwd()} and {REPO_ROOT})"
    )


def trial_base(cfg: SweepConfig) -> dict:
    """The trial tree every sample starts from: the trial YAML + trial.overrides + what the sweep fixes
    (torch threads = the trial's CPUs)."""
    tree = read_yaml(resolve_trial_yaml(cfg.trial.config))
    tree = apply_overrides(tree, flatten(cfg.trial.overrides))
    return apply_overrides(tree, {"train.threads": cfg.resources.cpu})


def load_sweep(path: str | Path | None, overrides: list[str] | None = None) -> SweepConfig:
    """Sweep YAML + dotted overrides -> a SweepConfig whose trial config is valid at every corner of the
    space, and whose scheduler and objective fit that trial. Touches no model, no data, no Ray."""
    if path is None:
        raise ConfigError("--config: a sweep YAML is required (see configs/sweeps/)")
    tree = apply_overrides(read_yaml(path), overrides or [])
    cfg = validate(SweepConfig, tree, source=str(path))
    check_trial(cfg, trial_base(cfg))
    return cfg


def check_trial(cfg: SweepConfig, base: dict) -> TrialConfig:
    """The base trial and every corner of the space validate; scheduler and objective fit the trial."""
    try:
        trial = validate(TrialConfig, base, source="trial (trial.config + trial.overrides)")
    except ConfigError as e:
        raise ConfigError(f"{e} (set it in trial.overrides)") from None
    for sample in space_mod.corners(cfg.space):
        try:
            space_mod.trial_config(base, sample, source="sample")
        except ConfigError as e:
            keys = ", ".join(f"{k}={v!r}" for k, v in space_mod.to_overrides(sample).items())
            why = str(e).removeprefix("sample: ")
            raise ConfigError(f"space: the sample {keys} gives an invalid trial: {why}") from None
    max_steps, s = trial.train.max_steps, cfg.scheduler
    if s.grace_period_steps >= max_steps:
        raise ConfigError(
            f"scheduler.grace_period_steps ({s.grace_period_steps}) must be below the trial's train.max_steps "
            f"({max_steps}), or ASHA never stops a trial"
        )
    bad = [r for r in rungs(cfg, max_steps) if r % s.eval_every_steps]
    if bad:
        raise ConfigError(
            f"scheduler.reduction_factor: rungs {bad} do not fall on a report (every "
            f"scheduler.eval_every_steps={s.eval_every_steps} steps); use an integer factor"
        )
    if "dev" not in trial.eval.splits:
        raise ConfigError(
            f"trial eval.splits: must include dev, the split the objective is measured on (got {trial.eval.splits})"
        )
    if not trial.eval.loss:
        raise ConfigError("trial eval.loss: must be true in a sweep: eval/loss is always reported, and breaks ties")
    if cfg.objective.eval_slice > trial.eval.max_examples:
        raise ConfigError(
            f"objective.eval_slice ({cfg.objective.eval_slice}) is above the trial's eval.max_examples "
            f"({trial.eval.max_examples}); the final evaluation must cover the rung slice"
        )
    metric = cfg.objective.metric
    known = {TASK_METRIC[trial.data.task], "eval/loss"}
    if metric != "auto" and not metric.startswith("eval/"):
        raise ConfigError(
            f"objective.metric: {metric!r} is not a dev metric (eval/...); e.g. {', '.join(sorted(known))}"
        )
    if metric in TASK_METRIC.values() and metric != TASK_METRIC[trial.data.task]:
        raise ConfigError(
            f"objective.metric: {metric!r} is not reported by task {trial.data.task!r}; "
            f"use {TASK_METRIC[trial.data.task]}"
        )
    return trial


def rungs(cfg: SweepConfig, max_steps: int) -> list[float]:
    """ASHA's milestones below max_t (Ray's _Bracket arithmetic for one bracket)."""
    out, r = [], float(cfg.scheduler.grace_period_steps)
    while r < max_steps:
        out.append(int(r) if float(r).is_integer() else r)
        r *= cfg.scheduler.reduction_factor
    return out


# ------------------------------------------------------------------- checks with the model and cluster


@dataclass(frozen=True)
class Plan:
    """What the driver runs: the resolved trial tree and the largest memory estimate over the space."""

    base: dict
    trial: TrialConfig
    objective: Objective
    dims: memory.ModelDims
    worst: memory.MemoryEstimate
    worst_sample: dict


def plan(cfg: SweepConfig, base: dict | None = None) -> Plan:
    """Checks that need the base model's dimensions: rank within the hidden size, and (with a GPU) every
    corner's memory estimate within resources.gpu_memory_gb. Reads config.json only."""
    base = trial_base(cfg) if base is None else base
    trial = check_trial(cfg, base)
    dims = memory.model_dims(trial.model)
    samples = space_mod.corners(cfg.space)
    configs = [space_mod.trial_config(base, s) for s in samples]
    for s, c in zip(samples, configs, strict=True):
        if c.lora.rank > dims.hidden_size:
            key = "space.lora.rank" if "lora.rank" in s else "trial lora.rank"
            raise ConfigError(
                f"{key}: rank {c.lora.rank} is above the model's hidden size {dims.hidden_size} "
                f"({trial.model.name_or_path}); LoRA's rank must not exceed the layer it adapts"
            )
    estimates = [memory.estimate(c, dims) for c in configs]
    i = max(range(len(estimates)), key=lambda j: estimates[j].peak_gb)
    if cfg.resources.gpu:
        what = f"the sample {space_mod.to_overrides(samples[i])}"
        msg = memory.refusal(estimates[i], cfg.resources.gpu_memory_gb, what)
        if msg:
            raise ConfigError(f"resources.gpu_memory_gb: {msg}")
    return Plan(base, trial, objective(cfg, trial), dims, estimates[i], samples[i])


def resolve_storage(cfg: SweepConfig, env: dict[str, str] | None = None) -> str:
    """storage_path with its ${VAR}s taken from the environment; refuses a variable that is not set."""
    env = os.environ if env is None else env
    missing = [name for name in re.findall(r"\$\{(\w+)\}", cfg.storage_path) if not env.get(name)]
    if missing:
        raise ConfigError(
            f"storage_path: {cfg.storage_path!r} needs the environment variable {', '.join(missing)} (the bucket); "
            "set it, or give the location: storage_path=s3://<bucket>/qlora-sweeps (or a local folder on one node)"
        )
    return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], cfg.storage_path)


def check_cluster(cfg: SweepConfig, cluster: dict[str, float], nodes: int = 1) -> None:
    """The cluster (ray.cluster_resources(), and its number of live nodes) can run and store the trials.

    Storage first, and never skipped: a trial on another node checkpoints into storage_path from there, and
    Tune raises at that trial's first checkpoint when it is a folder on the driver's node only."""
    if nodes > 1 and not is_shared(cfg.storage_path) and not cfg.storage_shared:
        raise ConfigError(
            f"storage_path: {cfg.storage_path!r} is a folder on one node, but the cluster has {nodes} nodes and "
            "trials on the others could not checkpoint into it; use an object store "
            "(storage_path=s3://<bucket>/qlora-sweeps or gs://..., credentials in every node's environment), or "
            "a folder every node mounts at that path (NFS) with storage_shared=true"
        )
    if not cfg.resources.check_cluster:
        return
    have = ", ".join(f"{k} {cluster.get(k, 0):g}" for k in ("CPU", "GPU"))
    if cfg.resources.gpu > cluster.get("GPU", 0):
        raise ConfigError(
            f"resources.gpu: each trial asks for {cfg.resources.gpu} GPU but the cluster has "
            f"{cluster.get('GPU', 0):g} ({have}); set resources.gpu=0 to train on CPUs, or "
            "resources.check_cluster=false if GPU nodes start on demand"
        )
    if cfg.resources.cpu > cluster.get("CPU", 0):
        raise ConfigError(
            f"resources.cpu: each trial asks for {cfg.resources.cpu} CPUs but the cluster has {have}"
        )
