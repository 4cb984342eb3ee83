"""The repository documents itself: no file a user reads points to notes that live outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tracked() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    return [REPO / name for name in listed.stdout.split("\0") if name]


def test_no_file_points_to_notes_outside_the_repository():
    this = Path(__file__).resolve()
    pointing = []
    for path in _tracked():
        if path.resolve() == this or not path.is_file() or path.suffix in {".safetensors", ".png"}:
            continue
        text = path.read_text(errors="replace")
        pointing += [f"{path.relative_to(REPO)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                     if "NOTES.md" in line or "../shared/NOTES" in line]
    assert not pointing, f"these lines cite notes outside the repository; state the fact instead: {pointing}"
