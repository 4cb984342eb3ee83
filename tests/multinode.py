"""Two Ray nodes on one machine for end-to-end tests: a head (`ray start --head --block`) and a second node
(`ray start --address ... --block`) marked by the custom resource `second_node`, each in a session of its own,
token authentication on, torn down to the last process by session and by this cluster's temp folder.

Not the loopback switch of the single-node default (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0): under it no second
node can join (`ray start --address` aborts). Without it Ray advertises the machine's own address for both
nodes; the traffic stays on this machine, and the dashboard stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from raycluster import RAY, _free_port, stop_node

from shared.ray_local import LOOPBACK_ENV, ensure_token
from sweeps.local_cluster import ray_start_args

SECOND = "second_node"  # the custom resource that marks the second node


def _alive_nodes(env: dict, gcs: str) -> int:
    out = subprocess.run([RAY, "status", "--address", gcs], env=env, capture_output=True, text=True)
    if out.returncode:
        return 0
    section = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return sum(1 for line in section.splitlines() if "node_" in line)


@contextlib.contextmanager
def two_node_cluster(cpus_per_node: int = 1, env_extra: dict | None = None):
    """Yields {"env", "gcs" (127.0.0.1:port), "dashboard", "temp"}. env_extra reaches every Ray process of
    both nodes (and so every trial), e.g. the AWS_* variables of a bucket."""
    temp = tempfile.mkdtemp(prefix="rt2", dir="/tmp")
    ports = {name: _free_port() for name in ("gcs", "dashboard", "agent", "agent2")}
    ensure_token()
    env = {k: v for k, v in os.environ.items() if k not in LOOPBACK_ENV and k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "token", **(env_extra or {})}
    gcs = f"127.0.0.1:{ports['gcs']}"
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        log = open(Path(temp) / "head.log", "w")
        logs.append(log)
        args = ray_start_args(ports["dashboard"], ports["agent"], port=ports["gcs"], num_cpus=cpus_per_node,
                              num_gpus=0)
        procs.append(subprocess.Popen([RAY, *args, "--block", "--temp-dir", temp], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.time() + 120
        while _alive_nodes(env, gcs) < 1:
            assert procs[0].poll() is None, Path(temp, "head.log").read_text()
            assert time.time() < deadline, "the Ray head did not come up in 120 s"
            time.sleep(1)
        log = open(Path(temp) / "second.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [RAY, "start", "--address", gcs, "--num-cpus", str(cpus_per_node), "--num-gpus", "0",
             "--resources", f'{{"{SECOND}": 1}}', "--dashboard-agent-listen-port", str(ports["agent2"]),
             "--disable-usage-stats", "--block"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        while _alive_nodes(env, gcs) < 2:
            assert procs[1].poll() is None, Path(temp, "second.log").read_text()
            assert time.time() < deadline, "the second node did not join in 120 s"
            time.sleep(1)
        yield {"env": env, "gcs": gcs, "dashboard": f"http://127.0.0.1:{ports['dashboard']}", "temp": temp}
    finally:
        left = []
        for proc in reversed(procs):
            left += stop_node(proc, temp)
        for log in logs:
            log.close()
        if not os.environ.get("KEEP_RAY_TEMP"):
            shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"
