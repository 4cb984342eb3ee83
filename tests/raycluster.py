"""A real local Ray cluster for end-to-end tests: `ray start --head --block` in a session of its own, started
exactly as the local default (`python -m sweeps.local_cluster`: token authentication on, its token made first,
every service on 127.0.0.1), every port free, torn down to the last process.

Teardown ends exactly the processes this helper started (that session, and any process naming this
cluster's temp folder), never another Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from shared.ray_local import ensure_token, loopback_env
from sweeps.local_cluster import ray_start_args

RAY = str(Path(sys.executable).with_name("ray"))
SERVE = str(Path(sys.executable).with_name("serve"))
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int, marker: str) -> list[int]:
    """Processes in session `sid`, or whose command line names this cluster's temp folder."""
    out = subprocess.run(["ps", "-ww", "-e", "-o", "pid=,sid=,args="], capture_output=True, text=True).stdout
    pids = []
    for line in out.splitlines():
        pid, session, *args = line.split(None, 2)
        if int(pid) != os.getpid() and (int(session) == sid or marker in "".join(args)):
            pids.append(int(pid))
    return pids


def stop_node(proc: subprocess.Popen, temp: str) -> list[int]:
    """Stops a `ray start --block` node and every process of its session; returns the pids still alive."""
    proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_pids(proc.pid, temp):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)
    return _session_pids(proc.pid, temp)


def cluster_pids(temp: str, gcs: str) -> list[int]:
    """Every process of one cluster: those naming its temp folder or its GCS address (the client server names
    only the latter), and all their descendants (the raylet's agents, workers and Serve replicas)."""
    import psutil

    roots = set(_session_pids(-1, temp)) | set(_session_pids(-1, f"--address={gcs} "))
    found = set()
    for pid in roots:
        try:
            found |= {pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))}
        except psutil.NoSuchProcess:
            pass
    return sorted(found)


def listening_sockets(pids: list[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of these processes."""
    import psutil

    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def beyond_loopback(sockets: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The sockets on an address other than loopback whose process is not a documented exception
    (sweeps.local_cluster.LOOPBACK_EXCEPTIONS), by name prefix: a Serve replica is
    `ray::ServeReplica:<app>:<deployment>`, or its first 15 characters where only /proc/<pid>/comm is read."""
    import ipaddress

    from sweeps.local_cluster import LOOPBACK_EXCEPTIONS

    def loopback(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)

    return [(name, ip, port) for name, ip, port in sockets
            if not loopback(ip) and not any(name.startswith(k[:15]) for k in LOOPBACK_EXCEPTIONS)]


@contextlib.contextmanager
def local_cluster(num_cpus: int = 2, metrics_report_interval_ms: int | None = None, prometheus_url: str | None = None,
                  **extra):
    """A head started with `ray start --block` in a temp folder of its own. metrics_report_interval_ms shortens how
    often every process exports its metrics (Ray's default is every 10 s, and a gauge is only seen as it stood at
    an export): a test that must see a short-lived value sets it. prometheus_url: where the dashboard looks for
    a Prometheus (RAY_PROMETHEUS_HOST), as sweeps/local_cluster.py sets it."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under ~100 chars
    ports = {name: _free_port() for name in ("gcs", "dashboard", "metrics", "client", "agent")}
    ensure_token()
    env = loopback_env()
    env.pop("RAY_ADDRESS", None)
    if metrics_report_interval_ms is not None:  # Ray reads RAY_<config name> in every process the head starts
        env["RAY_metrics_report_interval_ms"] = str(metrics_report_interval_ms)
    if prometheus_url:
        env["RAY_PROMETHEUS_HOST"] = prometheus_url
    log = open(Path(temp) / "ray-start.log", "w")
    args = ray_start_args(ports["dashboard"], ports["agent"], port=ports["gcs"], metrics_export_port=ports["metrics"],
                          ray_client_server_port=ports["client"], num_cpus=num_cpus, num_gpus=0)
    head = subprocess.Popen(
        [RAY, *args, "--block", "--temp-dir", temp],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    info = {
        "env": env, "temp": temp, "gcs": f"127.0.0.1:{ports['gcs']}", "dashboard": f"http://127.0.0.1:{ports['dashboard']}",
        "metrics": f"http://127.0.0.1:{ports['metrics']}/metrics", **extra,
        "storage": tempfile.mkdtemp(prefix="sweeps-", dir=temp),
    }
    try:
        deadline = time.time() + 120
        while subprocess.run([RAY, "status", "--address", info["gcs"]], env=env, capture_output=True).returncode:
            assert head.poll() is None, Path(temp, "ray-start.log").read_text()
            assert time.time() < deadline, "the Ray head did not come up in 120 s"
            time.sleep(1)
        while True:  # the dashboard (jobs, serve deploy) comes up after the GCS
            try:
                urllib.request.urlopen(info["dashboard"] + "/api/version", timeout=5)
                break
            except urllib.error.HTTPError:
                break  # it answers (auth or not): it is up
            except OSError:
                assert time.time() < deadline, "the Ray dashboard did not come up in 120 s"
                time.sleep(1)
        yield info
    finally:
        left = stop_node(head, temp)
        log.close()
        if not os.environ.get("KEEP_RAY_TEMP"):
            shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"




def serve_deploy(config: Path, dashboard: str, env: dict, timeout_s: float = 180) -> None:
    """`serve deploy` of a config file onto the cluster at the dashboard's address; fails with Serve's output."""
    out = subprocess.run([SERVE, "deploy", str(config), "--address", dashboard], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=timeout_s)
    assert out.returncode == 0, out.stdout + out.stderr


def wait_healthy(url: str, dashboard: str, env: dict, timeout_s: float = 300) -> None:
    """Until the app at url answers /healthz with 200; fails with `serve status` after timeout_s."""
    import requests

    deadline = time.time() + timeout_s
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or the proxy still starting
            pass
        assert time.time() < deadline, subprocess.run([SERVE, "status", "--address", dashboard], env=env,
                                                      capture_output=True, text=True).stdout
        time.sleep(2)
