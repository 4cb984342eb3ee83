"""Where generated things live. Nothing here is committed: see .gitignore."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Generated data and built models: $QLORA_SWEEP_CACHE, else ~/.cache/qlora-sweep."""
    root = os.environ.get("QLORA_SWEEP_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "qlora-sweep"
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_data_dir() -> Path | None:
    """The public reference data beside the repo (../shared/data), used by tests and benchmarks only."""
    path = Path(os.environ.get("QLORA_SWEEP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return path if path.is_dir() else None
