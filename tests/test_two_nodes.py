"""The sweep on a real cluster of two nodes (head + a second node, both `ray start` on this machine) storing
to a real S3-compatible bucket (moto's server on 127.0.0.1): two trials at a time land on both nodes, every
trial's results, the best adapter, summary.json, the report and the `latest` pointer arrive in the bucket, no
credential appears in the config or the logs, Serve answers from the bucket's `latest`, and a local
storage_path on that cluster is refused at submit, naming the key.

One CPU per node and the tiny smoke model, so two trials at a time fit the 2 cores (a few minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from multinode import two_node_cluster
from raycluster import SERVE, _free_port, serve_deploy, wait_healthy
from s3server import s3_server

from shared import storage

pytestmark = [pytest.mark.ray, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parent.parent
SMOKE = "configs/sweeps/sql_smoke.yaml"


@pytest.fixture(scope="module")
def cluster():
    with s3_server() as s3, two_node_cluster(cpus_per_node=1, env_extra=s3["env"]) as ray_cluster:
        yield {**ray_cluster, "s3": s3, "root": f"s3://{s3['bucket']}/qlora-sweeps"}


def _sweep(cluster, *overrides, timeout=900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sweeps.run", "--address", cluster["gcs"], "--config", SMOKE, *overrides]
    return subprocess.run(cmd, env=cluster["env"], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_a_local_storage_path_is_refused_on_two_nodes(cluster, tiny_model_dir):
    out = _sweep(cluster, f"trial.overrides.model.name_or_path={tiny_model_dir}", "storage_path=/tmp/not-shared",
                 timeout=300)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert "storage_path" in out.stderr and "2 nodes" in out.stderr and "s3://" in out.stderr, out.stderr
    assert "Trial status" not in out.stdout  # refused before any trial


def test_two_at_a_time_on_both_nodes_into_the_bucket_then_served(cluster, tiny_model_dir, tmp_path, monkeypatch):
    root = cluster["root"]
    out = _sweep(cluster, f"trial.overrides.model.name_or_path={tiny_model_dir}", f"storage_path={root}",
                 "search.num_trials=3", "search.max_concurrent=2", "resources.cpu=1", "--name", "two-nodes")
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert cluster["s3"]["secret"] not in log  # credentials come from the environment, never printed

    sweep = f"{root}/two-nodes"
    summary = json.loads(storage.read_text(f"{sweep}/summary.json"))
    trials = summary["trials"]
    assert sorted(t["trial_number"] for t in trials) == [0, 1, 2]
    assert all(t["error"] is None and t["steps"] for t in trials), trials
    assert len({t["node_id"] for t in trials}) == 2, [t["node_id"] for t in trials]  # both nodes ran trials
    for t in trials:  # every trial's results reached the bucket from the node that ran it
        name = Path(t["path"]).name
        assert storage.exists(f"{sweep}/{name}/result.json"), name
    assert cluster["s3"]["secret"] not in storage.read_text(f"{sweep}/sweep.json")

    best = f"{sweep}/best_adapter"
    assert summary["best_adapter"] == best
    card = json.loads(storage.read_text(f"{best}/card.json"))
    assert card["sweep"]["id"] == "two-nodes" and card["sweep"]["position"] == 1
    assert storage.exists(f"{sweep}/report/report.md") and storage.exists(f"{sweep}/report/leaderboard.csv")
    # the winner: the top 2 (selection.top_k of the smoke preset) re-scored; promoted, as nothing was served yet
    assert len(summary["selection"]["rescored"]) == 2 and summary["selection"]["why"]
    assert summary["promotion"]["action"] == "promoted" and summary["promotion"]["from"] is None
    latest = storage.read_latest(root, "sql")
    assert latest["adapter"] == best and latest["sweep_id"] == "two-nodes"
    history = json.loads(storage.read_text(f"{root}/latest/sql.history.json"))
    assert [e["action"] for e in history] == ["promoted"] and history[0]["to"] == best
    assert "## Winner" in storage.read_text(f"{sweep}/report/report.md")

    # Serve on the same cluster reads latest:sql from the bucket and answers
    port = _free_port()
    cfg = yaml.safe_load((REPO / "serving" / "config.yaml").read_text())
    cfg["http_options"]["port"] = port
    args = cfg["applications"][0]["args"]
    args.update({"adapters": {"sql": "latest:sql"}, "storage_path": root, "latest_poll_s": 1})
    args["limits"].update({"max_new_tokens": 16, "default_new_tokens": 8, "max_prompt_tokens": 256})
    args["model"].update({"autoscaling": {"min_replicas": 1, "max_replicas": 1}})
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    serve_deploy(path, cluster["dashboard"], cluster["env"])
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, cluster["dashboard"], cluster["env"])
    r = requests.post(f"{url}/v1/sql", json={"question": "How many rows?", "schema": "CREATE TABLE t (a INTEGER)"},
                      timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["adapter"] == "sql" and r.json()["usage"]["completion_tokens"] > 0
    subprocess.run([SERVE, "shutdown", "-y", "--address", cluster["dashboard"]], env=cluster["env"],
                   capture_output=True, timeout=120)
