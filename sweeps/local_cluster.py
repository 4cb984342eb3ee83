"""A local Ray head for the quick start, ready for `ray job submit` and `serve deploy` when this returns.

    python -m sweeps.local_cluster          # `make cluster`: ray start --head unless a dashboard answers,
                                            # then its Prometheus (sweeps/prometheus.py) unless one answers

`ray start --head` returns before the dashboard and its job agent are up; a job submitted in that gap
fails with "No available agent to submit job". This waits for both ports, then until the dashboard can
find its agent (the agent's address in the GCS key-value store, where the dashboard looks it up). Token authentication stays on: the
token is made first if none exists (~/.ray/auth_token, mode 600; shared/ray_local.py says where Ray looks),
since `ray start` does not make one. Every Ray service listens on 127.0.0.1 only (single-node local Ray,
shared/ray_local.py) but Serve replicas' gRPC servers: LOOPBACK_EXCEPTIONS lists them, and tests hold the
cluster to it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from shared import ray_local
from sweeps import prometheus
from shared.ray_local import loopback_env

# Listening ports of the local default allowed on an address other than loopback, by process name, and why.
# With the loopback switch every Ray process binds 127.0.0.1 (Ray 2.60, `ss -ltnp` after `make demo`) but this.
LOOPBACK_EXCEPTIONS: dict[str, str] = {
    "ray::ServeReplica": "each Serve replica's inter-deployment gRPC server, on [::] and a random port: Ray Serve "
                        "2.60 hard-codes the address (ray/serve/_private/replica.py); Ray's token interceptor "
                        "guards it",
}


def ray_start_args(dashboard_port: int, agent_port: int, **options: int | str) -> list[str]:
    """`ray start --head` arguments of the local default (make cluster, make demo, the test cluster).

    `options` are more `ray start` flags by their Python names: port=6379, temp_dir="/tmp/rt1", num_cpus=2."""
    args = ["start", "--head", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
            "--dashboard-agent-listen-port", str(agent_port), "--disable-usage-stats"]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
        return True
    except OSError:
        return False


def job_agent_registered(gcs_port: int, timeout: float) -> bool:
    """Wait until the head's dashboard can find its job agent, which `ray job submit` needs.

    Ray 2.60's dashboard (ray/dashboard/modules/job/job_head.py) reads the head node's id, then that node's
    agent address, from the GCS key-value store, and answers HTTP 500 "No available agent" if they are not
    there within 10 s. The agent writes its address after it listens, and on a loaded machine that took longer
    than the port wait plus 3 s (seen in CI). Run in this process's environment: token authentication on."""
    from ray._private import ray_constants
    from ray._raylet import GcsClient
    from ray.dashboard import consts

    client = GcsClient(address=f"127.0.0.1:{gcs_port}")
    deadline = time.time() + timeout
    while time.time() < deadline:
        head = client.internal_kv_get(ray_constants.KV_HEAD_NODE_ID_KEY, namespace=ray_constants.KV_NAMESPACE_JOB)
        if head and client.internal_kv_get(f"{consts.DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX}{head.decode()}".encode(),
                                           namespace=ray_constants.KV_NAMESPACE_DASHBOARD):
            return True
        time.sleep(0.5)
    return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeps.local_cluster", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboard-port", type=int, default=8265)
    ap.add_argument("--agent-port", type=int, default=52365,
                    help="the dashboard agent's HTTP port (Ray's default; a free one if another Ray holds it)")
    ap.add_argument("--port", type=int, default=6379, help="the GCS port (Ray's default)")
    ap.add_argument("--temp-dir", help="Ray's session folder (default: Ray's, /tmp/ray)")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--prometheus-port", type=int, default=prometheus.DEFAULT_PORT,
                    help="where the cluster's Prometheus listens (sweeps/prometheus.py; 0: none)")
    args = ap.parse_args(argv)
    if listening(args.dashboard_port):
        print(f"a Ray dashboard already answers at http://127.0.0.1:{args.dashboard_port}")
        return 0
    if listening(args.agent_port):  # another Ray on this machine (e.g. a ray.init() one) holds it
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            args.agent_port = sock.getsockname()[1]
    if ray_local.main():  # the token, made if none exists; says where it is, or why it cannot be
        return 2
    env = loopback_env()
    if args.prometheus_port:  # where the dashboard looks for it
        env["RAY_PROMETHEUS_HOST"] = prometheus.url(args.prometheus_port)
    extra = {"temp_dir": args.temp_dir} if args.temp_dir else {}
    cmd = [str(Path(sys.executable).with_name("ray")),
           *ray_start_args(args.dashboard_port, args.agent_port, port=args.port, **extra)]
    print(" ".join(cmd[1:]), flush=True)
    if subprocess.run(cmd, env=env).returncode:
        return 1
    deadline = time.time() + args.timeout
    while not (listening(args.dashboard_port) and listening(args.agent_port)):
        if time.time() > deadline:
            print(f"the dashboard (:{args.dashboard_port}) or its agent (:{args.agent_port}) did not come up "
                  f"in {args.timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(1)
    os.environ.update(env)  # the GCS client below authenticates as the cluster does
    if not job_agent_registered(args.port, max(deadline - time.time(), 10)):
        print(f"the dashboard's job agent did not register in {args.timeout:.0f} s: `ray job submit` would fail "
              f"with \"No available agent\"; see {args.temp_dir or '/tmp/ray'}/session_latest/logs/dashboard_agent.log",
              file=sys.stderr)
        return 1
    print(f"Ray dashboard: http://127.0.0.1:{args.dashboard_port}")
    if args.prometheus_port:
        return prometheus.main(["--temp-dir", args.temp_dir or prometheus.RAY_TEMP, "--port", str(args.prometheus_port)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
