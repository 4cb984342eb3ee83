"""The one typed config tree of a trial, loaded from YAML and overridable by dotted keys.

    from shared.config import load_config
    cfg = load_config("configs/sql_micro.yaml", ["lora.rank=32", "train.learning_rate=3e-3"])

Everything is validated here, before any model, dataset or Ray resource is touched: unknown keys, wrong
types and impossible values raise `ConfigError` naming the dotted key (and, for unknown keys, the valid ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

EMBEDDED_PREFIX = "embedded:"
# Bases the project provides with no hub access: the micro Llama it pretrains itself (shared/micro.py) and
# SmolLM2-135M-Instruct from a PyPI wheel (shared/smollm2.py). shared.models.resolve_path finds their folders.
EMBEDDED_MODELS = ("micro-llama", "smollm2-135m-instruct")


class ConfigError(ValueError):
    """A config that cannot run. The message names the dotted key and what is wrong with it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    # A hub id ("meta-llama/Llama-2-7b-hf"), a local folder, or "embedded:micro-llama" (built by the
    # project itself, offline; see shared/micro.py).
    name_or_path: str = "embedded:micro-llama"
    revision: str | None = None  # hub revision (branch, tag or commit); ignored for local paths
    trust_remote_code: bool = False  # never on by default: it runs code from the model repo
    # "plain": the project's own "### Task" prompt (base models). "chat": the task as system + user messages through
    # the model's own chat template (instruct models, e.g. embedded:smollm2-135m-instruct). See shared/prompts.py.
    prompt_format: Literal["plain", "chat"] = "plain"


class QuantizationConfig(_Section):
    # "4bit": QLoRA (NF4 base + 16-bit LoRA). "16bit": plain LoRA on a bf16/fp32 base, for comparison.
    mode: Literal["4bit", "16bit"] = "4bit"
    quant_type: Literal["nf4", "fp4"] = "nf4"  # NF4 is information-theoretically optimal for normal weights
    double_quant: bool = True  # quantizes the quantization constants too: ~0.37 bit/param saved
    # "auto": bfloat16 where the device runs it faster (Ampere+ GPUs, AMX CPUs), else float32.
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


class LoraConfig(_Section):
    rank: int = Field(16, gt=0)  # more capacity and memory; alpha usually 1-2x rank
    alpha: float = Field(32.0, gt=0)  # LoRA output is scaled by alpha / rank
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # "all-linear" (every linear layer but the LM head) is what the QLoRA paper found matters most.
    target_modules: Literal["all-linear"] | list[str] = "all-linear"

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("must name at least one module, or be 'all-linear'")
        return v


class DataConfig(_Section):
    task: Literal["sql", "code"] = "sql"
    # "bundled": data the project generates itself (shared/data/sqlgen.py, codegen.py).
    # Otherwise a hub dataset id or a local .jsonl/.json/.csv/.parquet file (or a folder of them).
    source: str = "bundled"
    # For a non-bundled source: the file (or hub split) of each split. Missing splits are cut from train.
    train_file: str | None = None
    dev_file: str | None = None
    test_file: str | None = None
    # Maps the fields we use to the source's column names, e.g. {question: text, answer: query}.
    columns: dict[str, str] = Field(default_factory=dict)
    # Folder of SQLite databases named <db_id>/<db_id>.sqlite or <db_id>.sqlite, for execution accuracy
    # of sources that carry a db_id column. Without it, SQL is scored on an empty database built from
    # the CREATE TABLE context.
    db_dir: str | None = None
    max_train_examples: int | None = Field(None, gt=0)
    # SQL training records whose schema lists only the tables and columns their query uses (sql-create-context)
    # teach a model to use every table it is shown; a real database's schema (Spider's) has more. k > 0 widens
    # each such training schema: its tables get every column the training data gives tables of that name, and
    # k tables of other records join it, in shuffled order (shared/data/loaders.py:widen_schemas). Evaluation
    # data is never changed.
    widen_schemas: int = Field(0, ge=0, le=20)
    max_seq_len: int = Field(384, ge=32)  # longer prompts are cut from the schema's end; memory ~ linear
    # Packing concatenates examples into full rows without attention across them: fewer pad tokens.
    packing: bool = False
    seed: int = 0  # generator seed of the bundled data, and of the split of non-bundled data


class TrainConfig(_Section):
    max_steps: int = Field(600, gt=0)
    max_time_s: float | None = Field(None, gt=0)  # stop early after this much training wall time
    learning_rate: float = Field(2e-3, gt=0, le=1.0)
    batch_size: int = Field(16, gt=0)
    grad_accum_steps: int = Field(1, gt=0)
    warmup_steps: int = Field(20, ge=0)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = True  # trades ~30% speed for activation memory; needed for 7B on 24 GB
    seed: int = 0
    log_every: int = Field(10, gt=0)
    # Keep the adapter as it stands every N steps, in <adapter>/steps/<N>/ (a loadable adapter with its card):
    # how the scores move with training time, each snapshot scored later by shared.evaluate.
    save_every_steps: int | None = Field(None, gt=0)
    # CPU threads for torch; 0 = every core this process may use. Keep it equal to the CPUs a worker has.
    threads: int = Field(0, ge=0)


class EvalConfig(_Section):
    # Splits scored after training. Bundled SQL has dev, test (seen schemas) and test_unseen.
    splits: list[str] = Field(default_factory=lambda: ["dev"])
    max_examples: int = Field(200, gt=0)  # per split; a fixed slice (the first N) so runs compare
    batch_size: int = Field(50, gt=0)
    max_new_tokens: int = Field(96, gt=0, le=4096)
    loss: bool = True  # also report eval/loss on the completion tokens
    sql_timeout_s: float = Field(2.0, gt=0)
    sql_max_rows: int = Field(10_000, gt=0)
    # "spider": the official Spider exec match (columns in any order, ordered when the gold orders);
    # "strict": column order counts too. The metric eval/sql_exec_acc_<mode> names the one used.
    sql_match: Literal["spider", "strict"] = "spider"
    # Populated databases synthesized per example that has no database of its own; a prediction must match
    # the gold on all. More tell more near-misses apart (3 tell 97% of Spider gold mutants), each costs a run.
    sql_databases: int = Field(3, ge=1, le=20)
    py_timeout_s: float = Field(5.0, gt=0)
    py_memory_mb: int = Field(512, ge=64)
    baseline: bool = False  # also score the untuned base on the same slices, for comparison

    @field_validator("splits")
    @classmethod
    def _splits_non_empty(cls, v):
        if not v:
            raise ValueError("at least one split must be evaluated")
        return v


class OutputConfig(_Section):
    dir: str = "artifacts/trials"  # the adapter folder goes to <dir>/<name>
    name: str | None = None  # default: <task>-r<rank>-<timestamp>


class TrialConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _cross_checks(self):
        src = self.model.name_or_path
        if src.startswith(EMBEDDED_PREFIX) and src.removeprefix(EMBEDDED_PREFIX) not in EMBEDDED_MODELS:
            raise ValueError(f"model.name_or_path: unknown embedded model {src!r}; the embedded ones are "
                             + ", ".join(EMBEDDED_PREFIX + m for m in EMBEDDED_MODELS))
        if not src.startswith(EMBEDDED_PREFIX) and _looks_local(src) and not Path(src).expanduser().exists():
            raise ValueError(f"model.name_or_path: local path {src!r} does not exist")
        if self.data.source != "bundled" and _looks_local(self.data.source):
            if not Path(self.data.source).expanduser().exists():
                raise ValueError(f"data.source: file {self.data.source!r} does not exist")
        for key in ("train_file", "dev_file", "test_file"):
            path = getattr(self.data, key)
            if path is not None and _looks_local(path) and not Path(path).expanduser().exists():
                raise ValueError(f"data.{key}: file {path!r} does not exist")
        if self.data.db_dir is not None and not Path(self.data.db_dir).expanduser().is_dir():
            raise ValueError(f"data.db_dir: folder {self.data.db_dir!r} does not exist")
        if self.train.warmup_steps >= self.train.max_steps and self.train.warmup_steps > 0:
            raise ValueError(
                f"train.warmup_steps ({self.train.warmup_steps}) must be below train.max_steps "
                f"({self.train.max_steps})"
            )
        return self


def _looks_local(src: str) -> bool:
    """A hub id is 'org/name' or 'name'; anything with a file suffix, ./, ../, ~ or / at the start is local."""
    p = Path(src)
    return (
        src.startswith(("/", "./", "../", "~"))
        or p.suffix in {".jsonl", ".json", ".csv", ".parquet"}
        or src.count("/") > 1
    )


# --------------------------------------------------------------------------------------------- loading


def parse_override(item: str) -> tuple[list[str], Any]:
    """'lora.rank=16' -> (['lora', 'rank'], 16). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(tree: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Applies dotted overrides to a nested dict (copying it). Accepts 'a.b=v' strings or {'a.b': v}."""
    tree = _deepcopy(tree)
    items = (
        [parse_override(o) for o in overrides]
        if isinstance(overrides, list)
        else [(k.split("."), v) for k, v in overrides.items()]
    )
    for path, value in items:
        node = tree
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(path)}: {part!r} is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return tree


def _deepcopy(tree):
    if isinstance(tree, dict):
        return {k: _deepcopy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deepcopy(v) for v in tree]
    return tree


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def validate(model_cls: type[BaseModel], tree: dict, source: str = "config"):
    """Builds `model_cls` from a nested dict, turning pydantic's errors into one ConfigError naming keys."""
    try:
        return model_cls.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"{source}: " + "; ".join(_describe(model_cls, err) for err in e.errors())) from None


def _describe(model_cls: type[BaseModel], err: dict) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = _section_at(model_cls, loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        return f"unknown key {key!r}; valid keys here: {', '.join(valid)}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        if ":" in msg.split(" ", 1)[0]:  # the validator already named the key
            return msg
    got = err.get("input")
    if isinstance(got, dict | list) or got is None:
        return f"{key}: {msg}"
    return f"{key}: {msg} (got {got!r})"


def _section_at(model_cls: type[BaseModel], loc: list[str]):
    cls = model_cls
    for part in loc:
        field = cls.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        cls = ann
    return cls


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrialConfig:
    """YAML file (optional) + dotted overrides -> a validated TrialConfig."""
    tree = read_yaml(path) if path else {}
    tree = apply_overrides(tree, overrides or [])
    return validate(TrialConfig, tree, source=str(path) if path else "config")


def to_dict(cfg: BaseModel) -> dict:
    """The resolved config as plain data (what artifacts store, and what rebuilds the trial)."""
    return cfg.model_dump(mode="json")
