"""A real Prometheus (Debian's package) started by sweeps/prometheus.py for a real local Ray cluster: it scrapes
every target of Ray's service-discovery file, on 127.0.0.1, finds the project's metric names as a sweep's
driver exports them, and the Ray dashboard finds it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from raycluster import _free_port, local_cluster

from sweeps import prometheus
from sweeps.trials import STATES

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parent.parent

# a sweep's driver, as sweeps/run.py runs one: its gauges set from the (here empty) trial list, kept alive
DRIVER = """
import ray, time
from sweeps.metrics import SweepMetrics
ray.init()
m = SweepMetrics("prom-test", "sweep/objective", "max", 10)
m.best_value = 0.25
while True:
    m._refresh([])
    time.sleep(0.5)
"""


def _query(base: str, path: str, **params) -> dict:
    q = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}{path}{q}", timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_scrapes_the_cluster_and_the_projects_metrics_and_the_dashboard_finds_it():
    if shutil.which("prometheus") is None:
        pytest.skip("no prometheus binary here (`make prometheus-deps` installs Debian's as root)")
    port = _free_port()
    base = prometheus.url(port)
    with local_cluster(metrics_report_interval_ms=1000, prometheus_url=base) as cluster:
        proc = prometheus.start(cluster["temp"], port, scrape_s=1)
        driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO,
                                  env={**cluster["env"], "RAY_ADDRESS": cluster["gcs"]})
        try:
            # the driver's gauges, and the node's own metrics (its reporter agent exports them every few seconds)
            deadline, series, names = time.time() + 120, [], set()
            while not (series and any(n.startswith("ray_node_cpu") for n in names)):
                assert time.time() < deadline, f"Prometheus never got them from the cluster: {sorted(names)}"
                assert driver.poll() is None, "the driver exited"
                time.sleep(1)
                series = _query(base, "/api/v1/query", query='ray_qlora_sweep_trials{sweep="prom-test"}')["result"]
                names = set(_query(base, "/api/v1/label/__name__/values"))
            assert {s["metric"]["state"] for s in series} == set(STATES)
            assert all(s["value"][1] == "0" for s in series)
            best = _query(base, "/api/v1/query", query='ray_qlora_sweep_best_objective{sweep="prom-test"}')["result"]
            assert [s["value"][1] for s in best] == ["0.25"]

            assert {"ray_qlora_sweep_trials", "ray_qlora_sweep_retries", "ray_qlora_sweep_best_objective"} <= names

            targets = _query(base, "/api/v1/targets")["activeTargets"]
            assert targets and all(t["labels"]["job"] == "ray" for t in targets)
            up = [t for t in targets if t["health"] == "up"]
            assert up and all(urllib.parse.urlsplit(t["scrapeUrl"]).hostname == "127.0.0.1" for t in targets)
            config = Path(cluster["temp"], "prometheus", "prometheus.yml").read_text()
            assert str(Path(cluster["temp"]) / prometheus.SD_FILE) in config

            # the dashboard, started with RAY_PROMETHEUS_HOST, finds it (token auth: the cluster's token)
            from shared.ray_local import token_path

            req = urllib.request.Request(cluster["dashboard"] + "/api/prometheus_health",
                                         headers={"Authorization": f"Bearer {token_path().read_text().strip()}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                health = json.load(r)
            assert health["result"] is True and health["msg"] == "prometheus running", health
        finally:
            driver.kill()
            driver.wait(timeout=30)
            assert prometheus.stop(cluster["temp"])
            proc.wait(timeout=30)
    assert not prometheus.ready(port)
