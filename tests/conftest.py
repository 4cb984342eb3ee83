"""Shared fixtures. The tiny model is the smoke build of the embedded model (same script, seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Generated data of the tests goes to a throwaway cache, never the user's.
os.environ.setdefault("QLORA_SWEEP_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "qlora-sweep-test-cache"))


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
