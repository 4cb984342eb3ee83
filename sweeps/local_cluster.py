"""A local Ray head for the quick start, ready for `ray job submit` and `serve deploy` when this returns.

    python -m sweeps.local_cluster          # `make cluster`: ray start --head unless a dashboard answers

`ray start --head` returns before the dashboard and its job agent listen; a job submitted in that gap
fails with "No available agent to submit job". This waits for both ports. Token authentication stays on
(RAY_AUTH_MODE=token, NOTES.md) and the dashboard binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
        return True
    except OSError:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeps.local_cluster", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboard-port", type=int, default=8265)
    ap.add_argument("--agent-port", type=int, default=52365,
                    help="the dashboard agent's HTTP port (Ray's default; a free one if another Ray holds it)")
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args(argv)
    if listening(args.dashboard_port):
        print(f"a Ray dashboard already answers at http://127.0.0.1:{args.dashboard_port}")
        return 0
    if listening(args.agent_port):  # another Ray on this machine (e.g. a ray.init() one) holds it
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            args.agent_port = sock.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [ray, "start", "--head", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(args.dashboard_port),
           "--dashboard-agent-listen-port", str(args.agent_port)]
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
    time.sleep(3)  # the agent registers itself with the head right after it listens
    print(f"Ray dashboard: http://127.0.0.1:{args.dashboard_port}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
