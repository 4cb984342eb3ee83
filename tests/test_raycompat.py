"""sweeps/raycompat.py against a real local Ray whose memory monitor kills a trial's worker: with the shim
the other trials finish and the killed one errors with the monitor's message; without it Tune ends the
whole run (Ray 2.60; if Ray fixes this, the second test fails and the shim can go)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

RUN = textwrap.dedent('''
    import json, sys, time
    import ray
    from ray import tune

    def trainable(config):
        if config["x"] == 1:  # grows by 128 MB every 0.1 s, up to 6 GB, until Ray kills it
            hog = []
            for _ in range(48):
                hog.append(bytearray(b"\\x01") * (128 << 20))
                time.sleep(0.1)
        tune.report({"score": config["x"]})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    if sys.argv[2] == "shim":
        from sweeps.raycompat import survive_oom_kills
        survive_oom_kills()
    grid = tune.Tuner(
        trainable, param_space={"x": tune.grid_search([0, 1, 2])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=False),
        run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    ).fit()
    print(json.dumps({str(r.config["x"]): [r.metrics.get("score"), str(r.error) if r.error else None] for r in grid}))
''')


def _run(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    import psutil

    mem = psutil.virtual_memory()
    # the monitor's line: what is in use now plus 2 GB, so that only the hog crosses it
    threshold = min(0.95, (mem.total - mem.available + (2 << 30)) / mem.total)
    env = {**os.environ, "RAY_memory_usage_threshold": f"{threshold:.3f}", "RAY_memory_monitor_refresh_ms": "100",
           "PYTHONPATH": str(REPO)}
    if mem.available < (7 << 30):
        pytest.skip(f"needs 7 GB of free memory to cross the monitor's line safely; {mem.available >> 30} GB free")
    return subprocess.run([sys.executable, "-c", RUN, str(tmp_path / mode), mode], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_a_trial_killed_for_memory_fails_alone_with_the_shim(tmp_path):
    run = _run(tmp_path, "shim")
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert results["0"] == [0, None] and results["2"] == [2, None]
    score, error = results["1"]
    assert score is None and "memory" in error.lower(), error


@pytest.mark.slow
def test_without_the_shim_ray_ends_the_whole_run(tmp_path):
    run = _run(tmp_path, "bare")
    assert run.returncode != 0 and "Caught unexpected exception" in run.stderr, run.stderr[-3000:]
