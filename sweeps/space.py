"""The search space as data, and the define-by-run function OptunaSearch calls with it.

A space is a tree of the trial config's own keys whose leaves are distributions (configs/sweeps/*.yaml):

    space:
      lora:
        rank: {type: int, low: 4, high: 64, log: true}
        alpha_multiplier: {type: choice, values: [1, 2]}   # lora.alpha = lora.rank x alpha_multiplier
        dropout: {type: float, low: 0.0, high: 0.1}        # optional
        target_modules: {type: choice, values: [all-linear, [q_proj, v_proj]]}  # optional
      train:
        learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}

A trial's sample is flat: {"lora.rank": 16, "lora.alpha_multiplier": 2, "lora.alpha": 32, ...,
"trial_number": 3}. Every dotted key of a trial config is applied to it as an override (`to_overrides`),
so any trial's full config can be rebuilt from its sample (`trial_config`). Alpha is searched as a
multiple of rank, not absolutely: LoRA scales its output by alpha / rank, so a multiple keeps that scale
fixed while rank varies, and learning rate does not have to compensate (an absolute `lora.alpha` leaf
works too, but not both).
"""

from __future__ import annotations

import itertools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.config import TrialConfig, apply_overrides, validate
from sweeps.trials import TRIAL_NUMBER

ALPHA_MULTIPLIER = "lora.alpha_multiplier"  # not a trial key: lora.alpha = lora.rank x this
# Keys the sweep sets itself: searching them would break the scheduler (max_t), the resources or the outputs.
NOT_SEARCHABLE = (
    "train.max_steps", "train.threads", "output", "eval.splits", "eval.max_examples", "data.task",
)


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntRange(_Dist):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False  # sample log-uniformly: as many trials in 4..8 as in 32..64
    step: int = Field(1, gt=0)


class FloatRange(_Dist):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False


class Choice(_Dist):
    type: Literal["choice"]
    values: list[Any]


Distribution = Annotated[IntRange | FloatRange | Choice, Field(discriminator="type")]
_DIST = TypeAdapter(Distribution)


def parse_space(tree: dict) -> dict[str, IntRange | FloatRange | Choice]:
    """Nested (or already flat, dotted) space tree -> {"lora.rank": IntRange, ...}, every leaf checked.

    Raises ValueError naming the key (space.<dotted key>): unknown distribution fields, empty ranges,
    log scale over non-positive values, keys that are not trial config keys, and searched keys the sweep
    must keep fixed."""
    if not isinstance(tree, dict):
        raise ValueError(f"space: must be a mapping of trial keys to distributions (got {tree!r})")
    flat: dict[str, Any] = {}
    _flatten(tree, "", flat)
    if not flat:
        raise ValueError("space: is empty; give at least one distribution, e.g. lora.rank")
    out = {}
    for key, raw in flat.items():
        name = f"space.{key}"
        _check_key(name, key)
        try:
            dist = _DIST.validate_python(raw)
        except ValidationError as e:
            msgs = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'][1:]) or 'type'}: {err['msg']}" for err in e.errors()
            )
            raise ValueError(
                f"{name}: not a distribution ({msgs}); use {{type: int|float|choice, ...}}"
            ) from None
        _check_range(name, dist)
        if key == ALPHA_MULTIPLIER:
            _check_multiplier(name, dist)
        out[key] = dist
    if ALPHA_MULTIPLIER in out and "lora.alpha" in out:
        raise ValueError("space.lora.alpha: search lora.alpha or lora.alpha_multiplier, not both")
    if ALPHA_MULTIPLIER in out and "lora.rank" not in out:
        raise ValueError(
            "space.lora.alpha_multiplier: needs lora.rank in the space too (alpha = rank x multiplier)"
        )
    return out


_DIST_FIELDS = {"type", "low", "high", "values", "log", "step"}


def _flatten(node: dict, prefix: str, out: dict) -> None:
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not _DIST_FIELDS & set(v):
            _flatten(v, f"{key}.", out)
        else:
            out[key] = v


def _check_range(name: str, d) -> None:
    if isinstance(d, Choice):
        if not d.values:
            raise ValueError(f"{name}: empty choice; give at least one value")
        return
    if d.low >= d.high:
        raise ValueError(f"{name}: empty search range [{d.low}, {d.high}]; low must be below high")
    if d.log and d.low <= 0:
        raise ValueError(f"{name}: log scale needs low > 0 (got {d.low})")
    if isinstance(d, IntRange) and d.log and d.step != 1:
        raise ValueError(f"{name}: log scale needs step 1 (Optuna's rule)")


def _check_multiplier(name: str, d) -> None:
    def positive(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and v > 0

    if isinstance(d, Choice) and not all(positive(v) for v in d.values):
        raise ValueError(f"{name}: multipliers must be positive numbers")
    if not isinstance(d, Choice) and d.low <= 0:
        raise ValueError(f"{name}: multipliers must be positive (low {d.low})")


def _check_key(name: str, key: str) -> None:
    """key is a searchable key of the trial config (or the alpha multiplier)."""
    if key == ALPHA_MULTIPLIER:
        return
    for fixed in NOT_SEARCHABLE:
        if key == fixed or key.startswith(fixed + "."):
            raise ValueError(f"{name}: is fixed per sweep and cannot be searched")
    parts, cls = key.split("."), TrialConfig
    for depth, part in enumerate(parts):
        fields = cls.model_fields
        if part not in fields:
            where = ".".join(parts[:depth]) or "the trial config"
            valid = ", ".join(sorted(fields))
            raise ValueError(f"{name}: {part!r} is not a key of {where}; valid keys there: {valid}")
        ann = fields[part].annotation
        last = depth == len(parts) - 1
        is_section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if last and is_section:
            keys = ", ".join(sorted(ann.model_fields))
            raise ValueError(f"{name}: is a section; search one of its keys: {keys}")
        if not last:
            if not is_section:
                raise ValueError(f"{name}: {'.'.join(parts[: depth + 1])} is a value, not a section")
            cls = ann


# ------------------------------------------------------------------------------------ define-by-run


def define_by_run(trial, space: dict[str, dict]) -> dict:
    """OptunaSearch's space: suggests every leaf, returns what is derived from the suggestions.

    No computation beyond alpha = rank x multiplier: everything else happens in the trainable. Choices
    that are not scalars (a list of target modules) are suggested by their JSON text, Optuna's
    categorical values having to be scalars, and returned decoded."""
    sample, derived = {}, {}
    for key, raw in space.items():
        d = raw if isinstance(raw, IntRange | FloatRange | Choice) else _DIST.validate_python(raw)
        if isinstance(d, IntRange):
            sample[key] = trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, FloatRange):
            sample[key] = trial.suggest_float(key, d.low, d.high, log=d.log)
        elif all(_scalar(v) for v in d.values):
            sample[key] = trial.suggest_categorical(key, d.values)
        else:
            text = trial.suggest_categorical(key, [json.dumps(v) for v in d.values])
            sample[key] = derived[key] = json.loads(text)
    if ALPHA_MULTIPLIER in sample:
        derived["lora.alpha"] = sample["lora.rank"] * sample[ALPHA_MULTIPLIER]
    derived[TRIAL_NUMBER] = trial.number
    return derived


def _scalar(v) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


def to_overrides(sample: dict) -> dict[str, Any]:
    """A trial's flat sample -> the dotted overrides it applies to the trial config."""
    return {k: v for k, v in sample.items() if "." in k and k != ALPHA_MULTIPLIER}


def trial_config(base: dict, sample: dict, source: str = "trial sample") -> TrialConfig:
    """The full, validated config of one trial: the sweep's resolved trial tree + the sample."""
    return validate(TrialConfig, apply_overrides(base, to_overrides(sample)), source=source)


def corners(space: dict[str, IntRange | FloatRange | Choice], limit: int = 512) -> list[dict]:
    """The extreme samples of a space (low/high of each range, every choice), as define_by_run would
    return them: validating and estimating memory over these covers every sample, as memory grows
    monotonically with rank, batch and length. Beyond `limit` combinations, ranges keep only `high`."""
    def ends(d, full: bool):
        if isinstance(d, Choice):
            return list(d.values)
        return [d.low, d.high] if full else [d.high]

    full = 1
    for d in space.values():
        full *= len(ends(d, True))
    keys = list(space)
    out = []
    for values in itertools.product(*(ends(space[k], full <= limit) for k in keys)):
        sample = dict(zip(keys, values, strict=True))
        if ALPHA_MULTIPLIER in sample:
            sample["lora.alpha"] = sample["lora.rank"] * sample[ALPHA_MULTIPLIER]
        out.append(sample)
    return out
