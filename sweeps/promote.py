"""The command line of promotion (shared/promotion.py): list, promote (gated) and roll back `latest/<task>`.

    python -m sweeps.promote list     --storage s3://bucket/qlora-sweeps --task sql
    python -m sweeps.promote promote  --storage s3://bucket/qlora-sweeps s3://bucket/qlora-sweeps/<sweep>/best_adapter
    python -m sweeps.promote rollback --storage s3://bucket/qlora-sweeps --task sql

A candidate replaces the current adapter only if it beats it on a frozen held-out set (the first
`--examples` examples of the `--split` split of the candidate's own data, the same examples for both, their
digest recorded) by an exact one-sided paired test at `--level` (shared/heldout.py). With no current adapter the
candidate is promoted without a test. `--force` promotes regardless, and the record says so. Every decision,
promoted or not, is appended to `latest/<task>.history.json`: who, when, from, to, the figures. Rollback points
`latest` back at the adapter before the current one. Serve re-reads the pointer every `latest_poll_s` and
loads the new adapter by a new model id: no restart, no failed request.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.promotion import Scorer, promote, read_history, rollback  # noqa: E402
from shared.storage import is_uri, read_latest  # noqa: E402


def local_scorer(threads: int = 0) -> Scorer:
    from shared.heldout import score_adapter

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
        from shared.heldout import examples_digest, heldout_examples

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
