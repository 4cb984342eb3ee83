"""The local default from a fresh machine: the Ray token is made before Ray starts (mode 600, never printed),
token authentication stays on, and every socket the local Ray listens on is on loopback (or on the README's
list of exceptions, `sweeps.local_cluster.LOOPBACK_EXCEPTIONS`)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from raycluster import RAY, _free_port, beyond_loopback, cluster_pids, listening_sockets

from shared.ray_local import RayAuthError, ensure_token, token_path

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_a_token_is_made_mode_600_in_an_empty_home_and_kept(empty_home):
    path = ensure_token()
    assert path == empty_home / ".ray" / "auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 random bits as hex, as Ray's own generator makes
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert ensure_token() == path and path.read_text() == token  # an existing token is never replaced


def test_a_token_that_others_can_read_is_tightened(empty_home):
    path = empty_home / ".ray" / "auth_token"
    path.parent.mkdir()
    path.write_text("a" * 64)
    path.chmod(0o644)  # what ray.init() leaves under umask 022
    assert ensure_token() == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "a" * 64


def test_the_token_path_follows_ray_s_own_precedence(empty_home, monkeypatch, tmp_path):
    named = tmp_path / "tokens" / "ray"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert token_path() == named and ensure_token() == named and named.is_file()
    assert not (empty_home / ".ray").exists()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "given")
    assert token_path() is None and ensure_token() is None


def test_authentication_is_never_turned_off(empty_home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RayAuthError, match="RAY_AUTH_MODE=disabled.*token authentication only"):
        ensure_token()
    assert not (empty_home / ".ray").exists()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_make_cluster_from_an_empty_home_listens_on_loopback_only_and_takes_a_job(empty_home):
    """`python -m sweeps.local_cluster` (what `make cluster` and `make demo` run) on a home with no token: it starts,
    the token it made is mode 600 and never printed, a job submitted with that token runs, and no Ray process
    listens beyond 127.0.0.1 except the documented exceptions."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under ~100 chars
    dashboard, gcs, prom = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["HOME"] = str(empty_home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # as the Makefile does: the job's python
    try:
        started = subprocess.run(
            [sys.executable, "-m", "sweeps.local_cluster", "--dashboard-port", str(dashboard),
             "--agent-port", str(_free_port()), "--port", str(gcs), "--temp-dir", temp, "--prometheus-port", str(prom)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, started.stdout + started.stderr
        token = empty_home / ".ray" / "auth_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert token.read_text() not in started.stdout + started.stderr

        job = subprocess.run(
            [RAY, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--",
             "python", "-c", "import ray; ray.init(); print('nodes', len(ray.nodes()))"],
            env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=180)
        assert job.returncode == 0 and "nodes 1" in job.stdout, job.stdout + job.stderr
        refused = subprocess.run([RAY, "job", "list", "--address", f"http://127.0.0.1:{dashboard}"],
                                 env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0  # a wrong token is refused: authentication is on

        sockets = listening_sockets(cluster_pids(temp, f"127.0.0.1:{gcs}"))
        ports = {port for _, _, port in sockets}
        assert {gcs, dashboard} <= ports and len(sockets) >= 5, sockets  # GCS, raylet, dashboard, agent, client
        if shutil.which("prometheus"):  # the cluster's Prometheus (sweeps/prometheus.py), on loopback too
            assert prom in ports and f"Prometheus: http://127.0.0.1:{prom}" in started.stdout, started.stdout
        assert not any(ip not in ("127.0.0.1", "::ffff:127.0.0.1") for _, ip, _ in sockets), sockets  # no Serve here
        assert not beyond_loopback(sockets)
    finally:
        for sig in ("TERM", "KILL"):
            for pid in cluster_pids(temp, f"127.0.0.1:{gcs}"):
                subprocess.run(["kill", f"-{sig}", str(pid)], capture_output=True)
            time.sleep(2)
        subprocess.run(["rm", "-rf", temp])
