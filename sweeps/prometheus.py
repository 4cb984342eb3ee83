"""A Prometheus for the local cluster: Debian's `prometheus` scraping every target the Ray head lists in its
service-discovery file (each node's metrics agent, the dashboard, the autoscaler), so that the cluster's and
the project's metrics (ray_qlora_sweep_*, ray_qlora_serve_*) are kept and can be queried and charted.

    python -m sweeps.prometheus              # `make cluster` starts one unless one answers on the port
    python -m sweeps.prometheus --stop       # `make stop`

It listens on 127.0.0.1 only and keeps a day of data under <Ray temp dir>/prometheus. The Ray head is started
with RAY_PROMETHEUS_HOST naming it (sweeps/local_cluster.py), which is where the dashboard looks. The
dashboard's charts themselves are Grafana panels, and Debian does not package Grafana: without one the
dashboard's Metrics view still asks for Grafana, while Prometheus answers queries at its own address.
Without the binary (root: `apt-get install prometheus`; `make cluster` does that) this says so and exits 0:
the cluster runs without it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEFAULT_PORT = 9090
SD_FILE = "prom_metrics_service_discovery.json"  # what Ray writes into its temp dir (ray_constants)
HOST = "127.0.0.1"
RAY_TEMP = "/tmp/ray"  # Ray's default temp dir, where `ray start` writes SD_FILE


def url(port: int = DEFAULT_PORT) -> str:
    return f"http://{HOST}:{port}"


def config_text(temp_dir: str | Path, scrape_s: float) -> str:
    """Ray's own prometheus.yml (ray/dashboard/modules/metrics/export/prometheus), at this temp dir, re-reading
    the file every scrape interval: Ray's file in the temp dir is a link to the session's, rewritten there, where
    Prometheus's file watch on the temp dir does not see it (it would wait 5 minutes, its default, for the nodes
    that joined after it started; the node's own agent is one of them)."""
    return (f"global:\n  scrape_interval: {scrape_s:g}s\n  evaluation_interval: {scrape_s:g}s\n"
            f"scrape_configs:\n- job_name: ray\n  file_sd_configs:\n  - refresh_interval: {scrape_s:g}s\n"
            f"    files:\n    - '{Path(temp_dir) / SD_FILE}'\n")


def ready(port: int = DEFAULT_PORT) -> bool:
    try:
        with urllib.request.urlopen(f"{url(port)}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def home(temp_dir: str | Path) -> Path:
    return Path(temp_dir) / "prometheus"


def start(temp_dir: str | Path = RAY_TEMP, port: int = DEFAULT_PORT, scrape_s: float = 5.0,
          timeout: float = 60.0) -> subprocess.Popen | None:
    """Starts Prometheus for the cluster whose temp dir this is, in a session of its own (it outlives this
    process, as the Ray head does); returns it once ready, or None where there is no binary."""
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    folder = home(temp_dir)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(config_text(temp_dir, scrape_s))
    log = open(folder / "prometheus.log", "ab")
    proc = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}", f"--web.listen-address={HOST}:{port}",
         f"--storage.tsdb.path={folder / 'data'}", "--storage.tsdb.retention.time=1d"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (folder / "prometheus.pid").write_text(f"{proc.pid}\n")
    deadline = time.time() + timeout
    while not ready(port):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            tail = (folder / "prometheus.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"prometheus did not come up on {url(port)}: {tail}")
        time.sleep(0.5)
    return proc


def stop(temp_dir: str | Path = RAY_TEMP) -> bool:
    """Stops the Prometheus this module started for that temp dir; False when none was running."""
    pid_file = home(temp_dir) / "prometheus.pid"
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    if b"prometheus" not in cmdline or str(home(temp_dir)).encode() not in cmdline:
        return False  # the pid was reused by something else
    os.kill(pid, signal.SIGTERM)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeps.prometheus", description=__doc__.split("\n\n")[0])
    ap.add_argument("--temp-dir", default=RAY_TEMP, help="the Ray head's temp dir (default: Ray's, /tmp/ray)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--scrape-s", type=float, default=5.0, help="scrape interval in seconds (default 5)")
    ap.add_argument("--stop", action="store_true", help="stop the one started for --temp-dir")
    args = ap.parse_args(argv)
    if args.stop:
        print("prometheus stopped" if stop(args.temp_dir) else "no prometheus of ours was running")
        return 0
    if ready(args.port):
        print(f"Prometheus already answers at {url(args.port)}")
        return 0
    try:
        proc = start(args.temp_dir, args.port, args.scrape_s)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if proc is None:
        print("NOTE: no `prometheus` binary: the cluster runs without one, and keeps no metrics history "
              "(root: apt-get install prometheus)", file=sys.stderr)
        return 0
    print(f"Prometheus: {url(args.port)} (scraping the targets in {Path(args.temp_dir) / SD_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
