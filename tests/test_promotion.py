"""Promotion gated by a paired test, recorded and reversible (shared/promotion.py, its command line
sweeps/promote.py), and the statistics behind it and behind the winner's choice (shared/heldout.py). No Ray, no
model: the adapters are folders with a card, and the scorer returns each adapter's fixed per-example results, so
the decisions are checked exactly; the scorer on real adapters is run by the sweep tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from shared import storage
from shared.heldout import examples_digest, paired_test, wilson
from shared.promotion import promote, read_history, rollback
from sweeps.promote import main


def test_wilson_interval_matches_known_values():
    lo, hi = wilson(0, 16)
    assert lo == 0.0 and math.isclose(hi, 0.1936, abs_tol=1e-3)  # not [0, 0]: 0 of 16 is weak evidence
    lo, hi = wilson(50, 100)
    assert math.isclose(lo, 0.4038, abs_tol=1e-3) and math.isclose(hi, 0.5962, abs_tol=1e-3)
    assert wilson(90, 200)[0] > wilson(9, 20)[0]  # same accuracy, more examples: a higher lower bound


def test_paired_test_counts_only_the_discordant_pairs():
    cand = [True] * 12 + [False] * 88
    cur = [False] * 100
    t = paired_test(cand, cur, 0.05)
    assert (t["candidate_only"], t["current_only"], t["difference"]) == (12, 0, 0.12)
    assert math.isclose(t["p_value"], 0.5**12) and t["better"]
    assert t["interval"][0] > 0 and t["interval"][0] < 0.12 < t["interval"][1]
    tied = paired_test([True, False] * 10, [False, True] * 10, 0.05)  # 10 each way: no evidence
    assert not tied["better"] and tied["difference"] == 0 and tied["p_value"] > 0.5
    few = paired_test([True, True, False, False], [False, False, False, False], 0.05)  # 2-0 is not enough
    assert not few["better"] and few["p_value"] == 0.25
    with pytest.raises(ValueError, match="same examples"):
        paired_test([True], [True, False])


def _adapter(root: Path, name: str) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "card.json").write_text(json.dumps({"name": name}))
    return str(folder)


@pytest.fixture
def setup(tmp_path):
    storage_path = str(tmp_path / "sweeps")
    adapters = {n: _adapter(tmp_path / "adapters", n) for n in ("good", "worse", "better")}
    right = {"good": 30, "worse": 25, "better": 45}  # of 60: the first k examples right

    def scorer(location, examples):
        name = Path(location).name
        return [i < right[name] for i in range(len(examples))]

    examples = [{"question": f"q{i}", "answer": str(i)} for i in range(60)]
    return storage_path, adapters, scorer, examples


def _promote(setup, name, **kw):
    storage_path, adapters, scorer, examples = setup
    return promote(storage_path, "sql", adapters[name], scorer=scorer, examples=examples,
                   digest=examples_digest(examples), level=0.05, **kw)


def test_worse_is_refused_better_is_promoted_and_rollback_restores(setup):
    storage_path, adapters, _, _ = setup
    first = _promote(setup, "good")
    assert first["action"] == "promoted" and first["from"] is None and "no adapter was served" in first["why"]

    worse = _promote(setup, "worse", source="sweep sql-smoke-1")  # a smoke sweep's winner
    assert worse["action"] == "rejected" and worse["figures"]["difference"] < 0
    assert "not shown better" in worse["why"] and "0.417 against 0.500" in worse["why"]
    assert storage.read_latest(storage_path, "sql")["adapter"] == adapters["good"]  # untouched

    better = _promote(setup, "better")
    f = better["figures"]
    assert better["action"] == "promoted" and f["better"] and f["difference"] == 0.25 and f["interval"][0] > 0
    assert f["heldout_digest"] and f["n"] == 60
    assert storage.read_latest(storage_path, "sql")["adapter"] == adapters["better"]
    assert Path(storage_path, "latest", "sql").resolve() == Path(adapters["better"])  # the local symlink too

    back = rollback(storage_path, "sql")
    assert (back["from"], back["to"]) == (adapters["better"], adapters["good"])
    assert storage.read_latest(storage_path, "sql")["adapter"] == adapters["good"]
    with pytest.raises(ValueError, match="no earlier sql adapter"):
        rollback(storage_path, "sql")  # good was the first ever promoted

    history = read_history(storage_path, "sql")
    assert [e["action"] for e in history] == ["promoted", "rejected", "promoted", "rolled_back"]
    assert all(e["who"] and e["when"].endswith("Z") for e in history)


def test_force_promotes_and_says_so(setup):
    _promote(setup, "good")
    forced = _promote(setup, "worse", force=True)
    assert forced["action"] == "promoted" and forced["forced"] and "forced" in forced["why"]


def test_the_command_lists_and_rolls_back(setup, capsys):
    storage_path, adapters, _, _ = setup
    _promote(setup, "good")
    _promote(setup, "better")
    assert main(["list", "--storage", storage_path, "--task", "sql"]) == 0
    out = capsys.readouterr().out
    assert f"latest sql: {adapters['better']}" in out and "diff +0.250" in out
    assert main(["rollback", "--storage", storage_path, "--task", "sql"]) == 0
    assert storage.read_latest(storage_path, "sql")["adapter"] == adapters["good"]
    assert main(["rollback", "--storage", storage_path, "--task", "code"]) == 2
    assert "no earlier code adapter" in capsys.readouterr().err


def test_serving_follows_promotion_and_rollback(setup, tmp_path):
    """The registry Serve polls resolves latest:sql to whatever the pointer names now: no restart."""
    from serving.registry import resolve

    storage_path, adapters, _, _ = setup
    _promote(setup, "good")
    assert resolve("latest:sql", storage_path) == Path(adapters["good"])
    _promote(setup, "better")
    assert resolve("latest:sql", storage_path) == Path(adapters["better"])
    rollback(storage_path, "sql")
    assert resolve("latest:sql", storage_path) == Path(adapters["good"])
