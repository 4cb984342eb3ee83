"""TPE's repeats are not trained again (sweeps/dedupe.py), on Ray's real OptunaSearch over a 2 x 2 space: no
Ray cluster, the searcher alone, as Tune drives it (suggest, then complete)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")


def space(trial):
    trial.suggest_categorical("lora.rank", [8, 16])
    trial.suggest_categorical("train.learning_rate", [1e-3, 3e-3])
    return {"trial_number": trial.number}


def drive(searcher, n: int) -> list:
    """n suggestions as Tune asks for them; each trial completes with rank x lr before the next is asked."""
    from sweeps.dedupe import sample_key

    out = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        if not isinstance(config, dict):
            out.append(config)
            break
        out.append(sample_key(config))
        searcher.on_trial_complete(f"t{i}", result={"m": config["lora.rank"] * config["train.learning_rate"]})
    return out


def optuna_search():
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(space=space, metric="m", mode="max",
                        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))


def test_repeats_are_answered_without_training_and_a_spent_space_ends_the_search():
    from ray.tune.search import Searcher

    from sweeps.dedupe import DedupeSearch

    plain = drive(optuna_search(), 8)
    assert len(plain) == 8 and len(set(plain)) < 8  # TPE alone repeats on a 4-point space
    deduped = DedupeSearch(optuna_search())
    keys = drive(deduped, 8)
    assert len(set(keys[:-1])) == len(keys[:-1]) == 4  # the 4 configurations, once each
    assert keys[-1] == Searcher.FINISHED and deduped.skipped > 0
    study = deduped.searcher._ot_study
    assert len(study.trials) > 4  # the repeats were told to Optuna (with the earlier result), not trained


def test_the_sample_key_ignores_the_trial_number():
    from sweeps.dedupe import sample_key

    assert sample_key({"lora.rank": 8, "trial_number": 1}) == sample_key({"trial_number": 7, "lora.rank": 8})
    assert sample_key({"lora.rank": 8}) != sample_key({"lora.rank": 16})


def test_saved_and_restored_it_still_knows_what_ran(tmp_path):
    """--resume restores the searcher from Tune's one checkpoint file: the repeats stay answered."""
    from ray.tune.search import Searcher

    from sweeps.dedupe import DedupeSearch

    first = DedupeSearch(optuna_search())
    keys = drive(first, 3)
    path = tmp_path / "searcher-state.pkl"
    first.save(str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["searcher-state.pkl"]
    again = DedupeSearch(optuna_search())
    again.restore(str(path))
    assert set(again.keys.values()) == set(keys)
    more = []
    for i in range(3, 9):
        config = again.suggest(f"t{i}")
        if not isinstance(config, dict):
            more.append(config)
            break
        more.append(config)
        again.on_trial_complete(f"t{i}", result={"m": config["lora.rank"] * config["train.learning_rate"]})
    assert len(more) == 2 and more[-1] == Searcher.FINISHED  # one configuration was left, then the space is spent
