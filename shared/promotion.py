"""Promotion of adapters to `latest/<task>`, the pointer Serve follows: gated, recorded and reversible.

    from shared.promotion import promote, rollback, read_history
    promote(storage, "sql", candidate, scorer=..., examples=..., digest=..., level=0.05)

A candidate replaces the current adapter only if it beats it on a frozen held-out set (the first N examples of
a split of the candidate's own data, the same examples for both, their digest recorded) by an exact one-sided
paired test at `level` (shared/heldout.py). With no current adapter the candidate is promoted without a test.
`force` promotes regardless, and the record says so. Every decision, promoted or not, is appended to
`latest/<task>.history.json`: who, when, from, to, the figures. Rollback points `latest` back at the adapter
before the current one. Serve re-reads the pointer every `latest_poll_s` and loads the new adapter by a new model
id: no restart, no failed request. Used by the sweep (sweeps/run.py), its command line (sweeps/promote.py) and
the app's page (serving/ui.py).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from shared.storage import is_uri, join, latest_pointer, read_latest, read_text, write_text

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
            level: float, force: bool = False, source: str = "manual", extra: dict | None = None,
            who: str | None = None) -> dict:
    """Gate, then move the pointer (or not); returns the recorded entry (action: promoted, rejected, kept).
    who: recorded instead of user@host (the page's login name)."""
    current = (read_latest(storage_path, task) or {}).get("adapter")
    candidate = _location(candidate)
    base = {"task": task, "from": current, "to": candidate, "source": source, **(extra or {}),
            **({"who": who} if who else {})}
    if current == candidate:
        return _record(storage_path, task, {**base, "action": "kept", "why": "the candidate is already latest"})
    figures = None
    if current is not None:
        cand_scores, cur_scores = scorer(candidate, examples), scorer(current, examples)
        from shared.heldout import paired_test

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


def rollback(storage_path: str, task: str, source: str = "manual", who: str | None = None) -> dict:
    """latest back to the adapter served before the current one: the `from` of the promotion that made the
    current one latest. Repeated, it walks back through the promotions. who: recorded instead of user@host."""
    current = (read_latest(storage_path, task) or {}).get("adapter")
    made = [e for e in read_history(storage_path, task) if e["action"] == "promoted" and e["to"] == current]
    if current is None or not made or not made[-1]["from"]:
        raise ValueError(f"rollback: no earlier {task} adapter is recorded before the current one ({current})")
    previous = made[-1]["from"]
    point_latest(storage_path, task, previous, {"rolled_back_from": current})
    return _record(storage_path, task, {"task": task, "action": "rolled_back", "from": current, "to": previous,
                                        "why": "rollback requested", "source": source, **({"who": who} if who else {})})
