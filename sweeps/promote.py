"""Promotion of adapters to `latest/<task>`, the pointer Serve follows: gated, recorded and reversible.

    python -m sweeps.promote list     --storage s3://bucket/qlora-sweeps --task sql
    python -m sweeps.promote promote  --storage s3://bucket/qlora-sweeps s3://bucket/qlora-sweeps/<sweep>/best_adapter
    python -m sweeps.promote rollback --storage s3://bucket/qlora-sweeps --task sql

A candidate replaces the current adapter only if it beats it on a frozen held-out set (the first
`--examples` examples of the `--split` split of the candidate's own data, the same examples for both, their
digest recorded) by an exact one-sided paired test at `--level` (sweeps/heldout.py). With no current adapter the
candidate is promoted without a test. `--force` promotes regardless, and the record says so. Every decision,
promoted or not, is appended to `latest/<task>.history.json`: who, when, from, to, the figures. Rollback points
`latest` back at the adapter before the current one. Serve re-reads the pointer every `latest_poll_s` and
loads the new adapter by a new model id: no restart, no failed request.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.storage import is_uri, join, latest_pointer, read_latest, read_text, write_text  # noqa: E402

Scorer = Callable[[str, list[dict]], list[bool]]  # (adapter location, examples) -> per-example correctness


def history_path(storage_path: str, task: str) -> str:
    return join(storage_path, "latest", f"{task}.history.json")


def read_history(storage_path: str, task: str) -> list[dict]:
    from shared.storage import exists

    path = history_path(storage_path, task)
    return json.loads(read_text(path)) if exists(path) else []


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _location(adapter: str) -> str:
    return adapter if is_uri(adapter) else str(Path(adapter).expanduser().resolve())


def point_latest(storage_path: str, task: str, adapter: str, extra: dict | None = None) -> str:
    """latest/<task>.json names `adapter` (a reader sees the old or the new pointer, never half of one);
    locally also the symlink latest/<task>."""
    pointer = latest_pointer(storage_path, task)
    write_text(pointer, json.dumps({"task": task, "adapter": _location(adapter), "updated": _now(), **(extra or {})},
                                   indent=2) + "\n")
    if not is_uri(storage_path):
        link = Path(join(storage_path, "latest", task)).expanduser()
        tmp = link.with_name(f".{task}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path(adapter).expanduser().resolve())
        tmp.replace(link)
    return pointer


def _record(storage_path: str, task: str, entry: dict) -> dict:
    history = read_history(storage_path, task)
    entry = {"who": _who(), "when": _now(), **entry}
    write_text(history_path(storage_path, task), json.dumps([*history, entry], indent=2, default=float) + "\n")
    return entry


def promote(storage_path: str, task: str, candidate: str, *, scorer: Scorer, examples: list[dict], digest: str,
            level: float, force: bool = False, source: str = "manual", extra: dict | None = None) -> dict:
    """Gate, then move the pointer (or not); returns the recorded entry (action: promoted, rejected, kept)."""
    current = (read_latest(storage_path, task) or {}).get("adapter")
    candidate = _location(candidate)
    base = {"task": task, "from": current, "to": candidate, "source": source, **(extra or {})}
    if current == candidate:
        return _record(storage_path, task, {**base, "action": "kept", "why": "the candidate is already latest"})
    figures = None
    if current is not None:
        cand_scores, cur_scores = scorer(candidate, examples), scorer(current, examples)
        from sweeps.heldout import paired_test

        figures = {**paired_test(cand_scores, cur_scores, level), "heldout_digest": digest}
    if current is None:
        why = "no adapter was served for this task"
    elif figures["better"]:
        why = (f"better on the frozen held-out set: {figures['candidate_acc']:.3f} against {figures['current_acc']:.3f} "
               f"on {figures['n']} examples, p = {figures['p_value']:.3g} < {level}")
    elif force:
        why = f"forced (the test alone would have refused: p = {figures['p_value']:.3g}, level {level})"
    else:
        why = (f"not shown better: {figures['candidate_acc']:.3f} against {figures['current_acc']:.3f} on "
               f"{figures['n']} examples ({figures['candidate_only']} right only for the candidate, "
               f"{figures['current_only']} only for the current), p = {figures['p_value']:.3g}, level {level}")
        return _record(storage_path, task, {**base, "action": "rejected", "why": why, "figures": figures})
    point_latest(storage_path, task, candidate, {"promoted_from": current, **(extra or {})})
    return _record(storage_path, task, {**base, "action": "promoted", "forced": bool(force and figures
                                                                                     and not figures["better"]),
                                        "why": why, "figures": figures})


def rollback(storage_path: str, task: str) -> dict:
    """latest back to the adapter served before the current one: the `from` of the promotion that made the
    current one latest. Repeated, it walks back through the promotions."""
    current = (read_latest(storage_path, task) or {}).get("adapter")
    made = [e for e in read_history(storage_path, task) if e["action"] == "promoted" and e["to"] == current]
    if current is None or not made or not made[-1]["from"]:
        raise ValueError(f"rollback: no earlier {task} adapter is recorded before the current one ({current})")
    previous = made[-1]["from"]
    point_latest(storage_path, task, previous, {"rolled_back_from": current})
    return _record(storage_path, task, {"task": task, "action": "rolled_back", "from": current, "to": previous,
                                        "why": "rollback requested", "source": "manual"})


def local_scorer(threads: int = 0) -> Scorer:
    from sweeps.heldout import score_adapter

    return lambda location, examples: score_adapter(location, examples, threads=threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeps.promote",
                                 description="List, promote (gated by a paired test) and roll back the adapter "
                                 "that latest/<task> names.")
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("list", "promote", "rollback"):
        p = sub.add_parser(name)
        p.add_argument("--storage", default="~/qlora-sweeps", help="the sweeps' storage_path (folder or URI)")
        if name == "promote":
            p.add_argument("adapter", help="adapter folder or URI (a sweep's best_adapter)")
            p.add_argument("--split", default="test", help="the frozen held-out split (default test)")
            p.add_argument("--examples", type=int, default=200, help="its first N examples (default 200)")
            p.add_argument("--level", type=float, default=0.05, help="one-sided significance level (default 0.05)")
            p.add_argument("--force", action="store_true", help="promote even if the test does not show it better")
        else:
            p.add_argument("--task", required=True, choices=["sql", "code"])
    args = ap.parse_args(argv)
    storage = args.storage if is_uri(args.storage) else str(Path(args.storage).expanduser())
    try:
        if args.command == "list":
            latest = read_latest(storage, args.task)
            print(f"latest {args.task}: {latest['adapter'] if latest else '(none)'}")
            for e in read_history(storage, args.task):
                f = e.get("figures") or {}
                figs = (f" [{f['candidate_acc']:.3f} vs {f['current_acc']:.3f}, diff {f['difference']:+.3f} "
                        f"({f['interval'][0]:+.3f}, {f['interval'][1]:+.3f}), p {f['p_value']:.3g}]") if f else ""
                print(f"{e['when']}  {e['action']:<11} {e['who']}  {e['from']} -> {e['to']}{figs}")
            return 0
        if args.command == "rollback":
            e = rollback(storage, args.task)
            print(f"rolled back {args.task}: {e['from']} -> {e['to']}")
            return 0
        from shared.artifacts import read_card
        from shared.storage import local_adapter
        from sweeps.heldout import examples_digest, heldout_examples

        _, cfg = read_card(local_adapter(args.adapter))
        examples = heldout_examples(args.adapter, args.split, args.examples)
        e = promote(storage, cfg.data.task, args.adapter, scorer=local_scorer(), examples=examples,
                    digest=examples_digest(examples), level=args.level, force=args.force)
        print(f"{e['action']}: {e['why']}")
        return 0 if e["action"] in ("promoted", "kept") else 1
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
