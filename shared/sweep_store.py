"""A sweep's folder in storage (a local folder or a URI, shared/storage.py): the names of what the sweep writes
there (sweeps/run.py) and reading them back for whoever shows them (the app's page, serving/ui.py).

    <storage_path>/<sweep id>/
        sweep.json            the resolved sweep config (written at the start)
        summary.json          every trial, the winner, the promotion, the importances (written at the end)
        best_adapter/         the winner's adapter
        report/               leaderboard and plots
        trial-NNN-<id>/progress.csv    Tune's per-report metrics of each trial, as it trains
"""

from __future__ import annotations

import io
import json

from shared.storage import exists, fs_and_path, join, read_text

OBJECTIVE = "sweep/objective"  # what every trial reports and ASHA compares: accuracy with a loss tie-break
SWEEP_STATE = "sweep.json"
SUMMARY = "summary.json"
BEST = "best_adapter"
REPORT = "report"
PROGRESS = "progress.csv"  # Tune's name
TRIAL_PREFIX = "trial-"  # sweeps/run.py's trial_dirname: trial-<number, 3 digits>-<Tune's trial id>


def _children(location: str) -> list[tuple[str, bool]]:
    """(name, is a folder) of what is directly in a folder; [] where there is no such folder."""
    import pyarrow.fs

    fs, path = fs_and_path(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=False))
    return [(i.base_name, i.type == pyarrow.fs.FileType.Directory) for i in infos]


def sweep_ids(storage_path: str) -> list[str]:
    """The sweeps in a storage, newest first (their ids end with the start time: <name>-YYYYMMDD-HHMMSS)."""
    ids = [name for name, folder in _children(storage_path)
           if folder and exists(join(storage_path, name, SWEEP_STATE))]
    return sorted(ids, key=lambda s: (s[-15:], s), reverse=True)


def read_json(storage_path: str, sweep_id: str, name: str) -> dict | None:
    where = join(storage_path, sweep_id, name)
    return json.loads(read_text(where)) if exists(where) else None


def trial_progress(storage_path: str, sweep_id: str) -> dict:
    """Each trial folder's progress.csv (one row per report: train/steps, the metrics), by folder name; a trial
    still training has the rows it has reported so far, one that never reported has none."""
    import pandas as pd

    out = {}
    folder = join(storage_path, sweep_id)
    for name, is_dir in sorted(_children(folder)):
        where = join(folder, name, PROGRESS)
        if is_dir and name.startswith(TRIAL_PREFIX) and exists(where):
            text = read_text(where)
            out[name] = pd.read_csv(io.StringIO(text)) if text.strip() else pd.DataFrame()
    return out


def trial_number(folder: str) -> int | None:
    """trial-003-1a2b3c4d -> 3."""
    parts = folder.split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None
