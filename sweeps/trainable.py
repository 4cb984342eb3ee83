"""One sweep trial: the foundation's `run_trial` inside a Ray Tune function trainable.

A function trainable, not a Ray Train trainer inside one: a QLoRA trial is one process on one GPU with
no data parallelism, and that is exactly a Tune trial actor. Ray Train (V2 in Ray 2.60) would add a
controller actor and a worker group per trial, one more process and placement group to start, to buy
DDP/FSDP across GPUs that a 4-bit base with a LoRA adapter does not use. Tune's actor already gives what
a trial needs: its resources (one GPU, or a share of the CPUs), a fresh worker process per trial
(reuse_actors=False, so CUDA memory dies with the process), retries from FailureConfig, and
checkpoint persistence to the sweep's storage.

The trial reports at every rung (every scheduler.eval_every_steps steps): dev-slice metrics,
`sweep/objective`, and the adapter as it is then, as a checkpoint. ASHA stops trials on those reports.
A retried trial (after a crash or out-of-memory) starts again from step 0: run_trial has no way to
continue from an adapter checkpoint, and a rung already passed is not judged again by ASHA.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from sweeps.config import OBJECTIVE, SweepConfig, objective
from sweeps.space import trial_config
from sweeps.trials import TRIAL_NUMBER


class WontFit(RuntimeError):
    """The trial's memory estimate exceeds the GPU it got; raised before the model is loaded."""


def train_qlora(config: dict, sweep: dict, base: dict) -> None:
    """The trainable. config: the flat sample from OptunaSearch; sweep: the SweepConfig as data;
    base: the resolved trial tree (both bound with tune.with_parameters, the same for every trial)."""
    import ray
    from ray import tune

    from shared.trial import run_trial

    cfg = SweepConfig.model_validate(sweep)
    trial = trial_config(base, config)
    obj = objective(cfg, trial)
    number = config.get(TRIAL_NUMBER)
    ctx = tune.get_context()
    node_id = ray.get_runtime_context().get_node_id()
    attempt = count_attempt(Path(ctx.get_trial_dir()))
    estimated_gb = refuse_if_it_cannot_fit(trial)
    print(f"trial {number} ({ctx.get_trial_id()}), attempt {attempt}: {config}", flush=True)

    def result(metrics: dict) -> dict:
        # First the four columns Tune's live trial table shows (it takes the first four metrics reported).
        out = {
            OBJECTIVE: obj.value(metrics), "train/steps": metrics["train/steps"],
            obj.metric: metrics[obj.metric], "eval/loss": metrics["eval/loss"],
        }
        out |= {k: float(v) for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k not in out}
        out["trial/attempt"] = attempt
        out["trial/number"] = number if number is not None else -1
        out["trial/node_id"] = node_id  # which node of the cluster ran it (summary.json's node_id)
        if estimated_gb is not None:
            out["gpu/estimated_peak_gb"] = estimated_gb
            out["gpu/peak_memory_gb"] = _gpu_peak_gb()
        return out

    def on_eval(step: int, metrics: dict, save) -> bool:
        with tempfile.TemporaryDirectory(prefix="rung-") as folder:
            save(folder, metrics)
            tune.report(result(metrics), checkpoint=tune.Checkpoint.from_directory(folder))
        crash_if_asked(cfg, number, step)  # after the report, so the attempt shows in the trial's results
        return True  # ASHA stops a trial by ending its process, not through this return value

    folder = Path(tempfile.mkdtemp(prefix="final-"))
    try:
        final = run_trial(trial, on_eval=on_eval, eval_every=cfg.scheduler.eval_every_steps,
                          eval_slice=cfg.objective.eval_slice, folder=folder)
        tune.report(result(final), checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def count_attempt(trial_dir: Path) -> int:
    """1 on a trial's first start, 2 on its first retry...: a marker file per start in the trial's working
    folder (tune.get_context().get_trial_dir(): local to the node and to the driver's session), so a
    retry on another node, or after --resume, counts from 1 again."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    n = len(list(trial_dir.glob("attempt-*"))) + 1
    (trial_dir / f"attempt-{n}").write_text(f"pid {os.getpid()}\n")
    return n


def refuse_if_it_cannot_fit(trial) -> float | None:
    """On a GPU: the trial's estimated peak against this GPU's memory; refuses (WontFit) before loading
    anything. Returns the estimate in GB, or None on CPU (nothing to compare with)."""
    import torch

    if not torch.cuda.is_available():
        return None
    from sweeps.memory import estimate, model_dims, refusal

    est = estimate(trial, model_dims(trial.model))
    total_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    what = f"rank {trial.lora.rank}, batch {trial.train.batch_size} x {trial.data.max_seq_len}"
    msg = refusal(est, total_gb, what)
    if msg:
        raise WontFit(msg)
    return est.peak_gb


def crash_if_asked(cfg: SweepConfig, number: int | None, step: int) -> None:
    """The test hook fault.crash_trial: raise in that trial at its first rung at or after fault.crash_at_step."""
    f = cfg.fault
    if f.crash_trial is not None and number == f.crash_trial and step >= f.crash_at_step:
        raise RuntimeError(f"fault.crash_trial={f.crash_trial}: deliberate crash at step {step} (test hook)")


def _gpu_peak_gb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else math.nan
