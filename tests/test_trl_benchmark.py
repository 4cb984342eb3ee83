"""`python -m benchmarks.run --cases 4bit-padded,trl` on the tiny model: the project's trial loop and TRL's
SFTTrainer train the same QLoRA configuration in one run, both report tokens/s and a loss curve of every
step, and the two curves start from the same loss (same model, same rows, same masking). No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_trl_runs_side_by_side_with_the_trial_loop(tiny_model_dir, tmp_path):
    pytest.importorskip("trl", reason="trl is a test extra (pip install -e '.[test]')")
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--model", str(tiny_model_dir), "--config",
         "configs/sql_micro_smoke.yaml", "--cases", "4bit-padded,trl", "--steps", "3", "--warmup", "1",
         "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cases = json.loads(out.read_text())["cases"]
    ours, trl = cases["4bit-padded"], cases["trl"]
    assert len(ours["loss_curve"]) == len(trl["loss_curve"]) == 4
    assert trl["tokens_per_s"] > 0 and trl["trainer"].startswith("trl.SFTTrainer")
    # the first step sees the same model and, with the loss on answer tokens only, a loss of the same size
    assert abs(ours["loss_curve"][0] - trl["loss_curve"][0]) < 0.5, (ours["loss_curve"], trl["loss_curve"])
    assert "trial loop / TRL SFTTrainer tokens/s" in run.stdout and "loss curves, step: project / trl" in run.stdout
