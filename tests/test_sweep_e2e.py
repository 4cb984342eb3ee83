"""End to end on a real local Ray cluster: `ray start --head`, then the smoke sweep submitted as a Ray job,
a trial made to crash, a driver killed midway and resumed, and a bad config refused at submit.

The cluster is started with `ray start --head --block` in a session of its own, so teardown ends exactly
the processes this file started (that session, and any process naming this cluster's temp folder), never
another Ray on the machine. Trials use the tiny smoke build of the micro model (seconds to build) so the
file runs in a few minutes on 2 cores; the preset itself points at embedded:micro-llama.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from raycluster import RAY, local_cluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
SMOKE = "configs/sweeps/sql_smoke.yaml"


@pytest.fixture(scope="module")
def cluster(tiny_model_dir):
    # metrics exported every second: the job test must see the trial gauge while a trial is running
    with local_cluster(model=str(tiny_model_dir), metrics_report_interval_ms=1000) as info:
        yield info


def _sweep_args(cluster, *extra, storage=None) -> list[str]:
    storage = storage or cluster["storage"]
    return [SMOKE, f"storage_path={storage}", f"trial.overrides.model.name_or_path={cluster['model']}", *extra]


def _last_lines(text: str) -> dict[str, str]:
    """The job's closing lines: 'sweep folder: ...', 'best adapter: ...', 'report: ...'."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(sweep folder|best adapter|best metrics|report|latest): (.*)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def test_job_sweep_stops_early_retries_a_crash_and_exports_a_loadable_best_adapter(cluster):
    # A storage of its own: nothing is served there yet, so the winner is promoted whatever the module's other
    # sweeps left (a better adapter in a shared storage is kept by the promotion gate, as it should be).
    storage = Path(cluster["storage"]) / "job-sweep"
    cmd = [RAY, "job", "submit", "--address", cluster["dashboard"], "--working-dir", str(REPO), "--",
           sys.executable, "-m", "sweeps.run", "--config",
           *_sweep_args(cluster, "search.num_trials=5", "fault.crash_trial=1", "fault.crash_at_step=6",
                        "tracking.mlflow=true", storage=storage)]
    job = subprocess.Popen(cmd, env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd=REPO)
    scraped = []  # the sweep's own metrics, read from the cluster's Prometheus endpoint while the job runs
    out_chunks = []
    reader = threading.Thread(target=lambda: out_chunks.extend(job.stdout), daemon=True)
    reader.start()
    while job.poll() is None:
        try:
            text = urllib.request.urlopen(cluster["metrics"], timeout=5).read().decode()
            scraped += [line for line in text.splitlines() if line.startswith("ray_qlora_sweep_")]
        except OSError:
            pass
        time.sleep(1)
    reader.join(timeout=10)
    out = "".join(out_chunks)
    assert job.returncode == 0, out[-6000:]

    assert "Trial status" in out  # Tune's live trial table, in the job's logs
    last = _last_lines(out)
    sweep = Path(last["sweep folder"])
    assert sweep.parent == storage and sweep.is_dir()
    summary = json.loads((sweep / "summary.json").read_text())
    trials = {t["trial_number"]: t for t in summary["trials"]}
    assert sorted(trials) == [0, 1, 2, 3, 4]

    # the crashed trial was retried once (failure.max_retries=1), then recorded as failed; the sweep went on
    crashed = trials[1]
    assert crashed["state"] == "failed" and "deliberate crash" in crashed["error"] and crashed["attempts"] == 2
    others = [t for n, t in trials.items() if n != 1]
    assert all(t["error"] is None for t in others)
    # ASHA stopped at least one trial at a rung (6 or 12 of 24 steps)
    stopped = [t for t in others if t["state"] == "stopped"]
    assert stopped and all(t["steps"] in (6, 12) for t in stopped), [(t["state"], t["steps"]) for t in others]
    assert any(t["state"] == "finished" and t["steps"] == 24 for t in others)

    # the best adapter: exported with the sweep id and its leaderboard position, loadable by path, and it generates
    best = Path(last["best adapter"])
    assert best == sweep / "best_adapter" and Path(summary["best_adapter"]) == best
    card = json.loads((best / "card.json").read_text())
    assert card["sweep"]["id"] == sweep.name and card["sweep"]["position"] == 1 and card["sweep"]["trials"] == 5
    ranked_first = min((t for t in summary["trials"] if t["position"]), key=lambda t: t["position"])
    assert card["sweep"]["trial_number"] == ranked_first["trial_number"]
    assert card["config"]["lora"]["rank"] == card["sweep"]["sample"]["lora.rank"]
    from shared.artifacts import load_adapter
    from shared.evaluate import generate

    model, tokenizer, _ = load_adapter(best)
    texts = generate(model, tokenizer, ["tables: t(a)\nQ: how many rows?\nSQL:"], max_new_tokens=8, batch_size=1)
    assert len(texts) == 1 and isinstance(texts[0], str)

    assert summary["promotion"]["action"] == "promoted", summary["promotion"]
    latest = json.loads((storage / "latest" / "sql.json").read_text())
    assert Path(latest["adapter"]) == best and latest["sweep_id"] == sweep.name
    assert (storage / "latest" / "sql").resolve() == best.resolve()
    assert Path(last["report"]).is_file() and (sweep / "report" / "leaderboard.csv").is_file()

    # tracking.mlflow: a run per trial in the default store beside the sweeps, the winner's adapter in its run
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{storage.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sql-smoke")
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id], f"tags.sweep_id = '{sweep.name}'")}
    assert len(runs) == 5 and sorted(r.info.status for r in runs.values()) == ["FAILED"] + ["FINISHED"] * 4
    winner = runs[summary["mlflow_run"]]
    assert winner.data.tags["trial_id"] == card["sweep"]["trial_id"]
    assert winner.data.params["lora.rank"] == str(card["config"]["lora"]["rank"])
    assert client.get_metric_history(winner.info.run_id, "sweep/objective")[0].step in (6, 12, 24)
    assert "adapter/card.json" in {f.path for f in client.list_artifacts(winner.info.run_id, "adapter")}

    peak: dict[str, float] = {}  # the highest count seen per state while the job ran
    for line in scraped:
        m = re.match(r'ray_qlora_sweep_trials\{.*state="(\w+)".*\} ([0-9.e+-]+)$', line)
        if m:
            peak[m.group(1)] = max(peak.get(m.group(1), 0.0), float(m.group(2)))
    assert peak.get("running", 0) >= 1 and peak.get("finished", 0) >= 1, scraped[-20:]
    assert any(line.startswith("ray_qlora_sweep_best_objective{") for line in scraped)


def _experiment_trials(sweep: Path) -> list[dict]:
    """Trial statuses from Tune's own experiment state file (what --resume restores)."""
    files = sorted(glob.glob(str(sweep / "experiment_state-*.json")))
    if not files:
        return []
    try:
        state = json.loads(Path(files[-1]).read_text())
    except (OSError, ValueError):
        return []
    out = []
    for t in state.get("trial_data", []):
        meta = json.loads(t[1]) if isinstance(t, list) else {}
        info = json.loads(t[0]) if isinstance(t, list) else t
        out.append({"trial_id": info.get("trial_id"), "status": info.get("status"), **meta})
    return out


def test_killed_driver_resumes_without_rerunning_finished_trials(cluster):
    name = "resume-test"
    sweep = Path(cluster["storage"]) / name
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweeps.run", "--address", cluster["gcs"], "--name", name, "--config",
         *_sweep_args(cluster, "search.num_trials=3")],
        env=cluster["env"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while not any(t["status"] == "TERMINATED" for t in _experiment_trials(sweep)):
            assert driver.poll() is None, "the driver ended before it could be killed"
            assert time.time() < deadline, "no trial finished within 300 s"
            time.sleep(1)
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies mid-sweep, without any chance to clean up
        driver.wait()
    done_before = {t["trial_id"] for t in _experiment_trials(sweep) if t["status"] == "TERMINATED"}
    trial_dirs = {d.name.rsplit("-", 1)[-1]: d for d in sweep.glob("trial-*")}
    reports_before = {tid: (trial_dirs[tid] / "result.json").read_text() for tid in done_before}

    resumed = subprocess.run([sys.executable, "-m", "sweeps.run", "--address", cluster["gcs"], "--resume", str(sweep)],
                             env=cluster["env"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert _last_lines(resumed.stdout)["sweep folder"] == str(sweep)
    summary = json.loads((sweep / "summary.json").read_text())
    # three trials in all, numbered 0, 1, 2: the restored Optuna study went on counting instead of starting over
    assert sorted(t["trial_number"] for t in summary["trials"]) == [0, 1, 2]
    assert all(t["error"] is None for t in summary["trials"])
    for tid in done_before:  # finished trials were not run again: not one more report
        assert (trial_dirs[tid] / "result.json").read_text() == reports_before[tid]
    assert (sweep / "best_adapter" / "card.json").is_file()


def test_a_gpu_request_on_a_cluster_without_gpus_fails_at_submit_naming_it(cluster):
    cmd = [RAY, "job", "submit", "--address", cluster["dashboard"], "--working-dir", str(REPO), "--",
           sys.executable, "-m", "sweeps.run", "--config", *_sweep_args(cluster, "resources.gpu=1", "resources.gpu_memory_gb=24")]
    out = subprocess.run(cmd, env=cluster["env"], cwd=REPO, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert "config error: resources.gpu: each trial asks for 1 GPU but the cluster has 0" in text
    assert "Trial status" not in text  # refused before any trial
