"""Shared fixtures. The tiny model is the smoke build of the embedded model (same script, seconds)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The session gets a home of its own, set before anything reads it: the Ray token (~/.ray/auth_token), sweep
# folders (~/qlora-sweeps), caches (~/.cache) and Ray's own files land there, never in the user's home, and no
# test finds what an earlier run or an earlier test of another session left. Every test file passes alone:
# nothing depends on a test that happened to run first (ray.init() writing the token, for one).
SESSION_HOME = Path(tempfile.mkdtemp(prefix="qlora-test-home-"))
atexit.register(shutil.rmtree, SESSION_HOME, ignore_errors=True)
os.environ["HOME"] = str(SESSION_HOME)
os.environ["QLORA_SWEEP_CACHE"] = str(SESSION_HOME / ".cache" / "qlora-sweep")
for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):  # never the user's cluster or token
    os.environ.pop(name, None)

from shared.ray_local import ensure_token, loopback_env  # noqa: E402

# Token authentication on, its token made as the local default makes it (mode 600), and every Ray of the tests,
# ray.init() ones included, on 127.0.0.1 only.
os.environ.update(loopback_env())
ensure_token()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 0.1 M-parameter Llama + BPE tokenizer, built and pretrained for a few seconds by shared/micro.py."""
    from shared.micro import PRESETS, build

    out = tmp_path_factory.mktemp("tiny-llama")
    build(out, seed=0, threads=0, log=lambda s: None, **PRESETS["smoke"])
    return out


@pytest.fixture
def smoke_cfg(tiny_model_dir, tmp_path):
    """configs/sql_micro_smoke.yaml on the tiny model, writing under tmp_path."""
    from shared.config import load_config

    def make(*overrides, config="configs/sql_micro_smoke.yaml"):
        return load_config(
            REPO / config,
            [f"model.name_or_path={tiny_model_dir}", f"output.dir={tmp_path / 'out'}", *overrides],
        )

    return make
