"""A configuration already trained is not trained again: a Tune searcher wrapper that answers TPE's repeats itself.

TPE over a small discrete space draws the same configuration again (the sweep-efficiency benchmark saw two
repeats in six samples: 320 of 810 trial-steps). When the wrapped searcher suggests a sample whose sampled keys
equal a finished trial's, the wrapper tells the searcher that trial's result at once (so Optuna counts it and
moves on, as if it had run) and asks again, up to `max_redraws` times; when every redraw repeats, the space is
spent and the search ends (Searcher.FINISHED). A repeat of a trial still running is told as failed, which TPE
ignores; with `constant_liar` TPE already steers away from running trials.

A class because Tune's Searcher interface is one, holding state across calls (what ran, with what result).
It wraps Ray's OptunaSearch, whose record of a repeat's trial id (`_ot_trials`, `_completed_trials`) it clears.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from ray.tune.search import Searcher

from sweeps.trials import TRIAL_NUMBER


def sample_key(config: dict) -> str:
    """The sampled keys of a trial's config, without its number: equal keys, the same training run."""
    return json.dumps({k: v for k, v in sorted(config.items()) if k != TRIAL_NUMBER}, default=str)


class DedupeSearch(Searcher):
    def __init__(self, searcher: Searcher, max_redraws: int = 20):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.max_redraws = searcher, max_redraws
        self.keys: dict[str, str] = {}  # trial_id -> sample key, for every trial started
        self.results: dict[str, dict] = {}  # sample key -> the result its trial completed with
        self.skipped = 0  # repeats answered without training

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str):
        for _ in range(self.max_redraws + 1):
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            key = sample_key(config)
            if key not in self.keys.values():
                self.keys[trial_id] = key
                return config
            self.skipped += 1
            done = self.results.get(key)
            self.searcher.on_trial_complete(trial_id, result=done, error=done is None)
            # OptunaSearch keeps the told trial under trial_id (and marks the id completed): forget both, so the
            # next suggest asks the study for a new trial under that id (the told one stays in the study)
            self.searcher._ot_trials.pop(trial_id)
            self.searcher._completed_trials.discard(trial_id)
        return Searcher.FINISHED  # every redraw repeated a trained configuration: the space is spent

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not error and result is not None and trial_id in self.keys:
            self.results[self.keys[trial_id]] = result
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def add_evaluated_point(self, *args, **kwargs):
        return self.searcher.add_evaluated_point(*args, **kwargs)

    def get_state(self) -> dict:
        return {"keys": self.keys, "results": self.results, "skipped": self.skipped}

    def set_state(self, state: dict) -> None:
        self.keys, self.results, self.skipped = state["keys"], state["results"], state["skipped"]

    def save(self, checkpoint_path: str) -> None:
        """One file (Tune renames it after saving): the wrapped searcher's own file inside, and what ran."""
        inner = Path(f"{checkpoint_path}.inner")
        self.searcher.save(str(inner))
        blob = inner.read_bytes()
        inner.unlink()
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"searcher": blob, "dedupe": self.get_state()}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        inner = Path(f"{checkpoint_path}.inner")
        inner.write_bytes(saved["searcher"])
        self.searcher.restore(str(inner))
        inner.unlink()
        self.set_state(saved["dedupe"])

    def on_pause(self, trial_id: str) -> None:
        self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        self.searcher.on_unpause(trial_id)
