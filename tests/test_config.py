from pathlib import Path

import pytest

from shared.config import ConfigError, TrialConfig, apply_overrides, load_config

REPO = Path(__file__).resolve().parent.parent
TRIAL_YAMLS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", TRIAL_YAMLS, ids=lambda p: p.name)
def test_every_committed_trial_yaml_validates(path):
    from shared.paths import shared_data_dir

    if "../shared/data/" in path.read_text() and shared_data_dir() is None:
        pytest.skip(f"{path.name} reads the reference data beside the repo (../shared/data), absent here")
    cfg = load_config(path)
    assert isinstance(cfg, TrialConfig)


def test_every_experiment_has_a_smoke_twin():
    names = {p.stem for p in TRIAL_YAMLS}
    for name in names:
        if not name.endswith("_smoke") and name.endswith("_micro"):
            assert f"{name}_smoke" in names, f"configs/{name}.yaml has no smoke twin"


def test_dotted_overrides_apply_with_yaml_types():
    cfg = load_config(REPO / "configs/sql_micro.yaml", ["lora.rank=8", "train.learning_rate=1e-4", "eval.splits=[dev]"])
    assert cfg.lora.rank == 8 and cfg.train.learning_rate == 1e-4 and cfg.eval.splits == ["dev"]
    # the YAML's other values stay
    assert cfg.lora.alpha == 64


@pytest.mark.parametrize(
    "override, names",
    [
        (["lora.rnak=8"], ["lora.rnak", "rank", "alpha"]),  # unknown key: named, and the valid ones listed
        (["trian.max_steps=3"], ["trian", "train", "lora"]),
        (["lora.rank=0"], ["lora.rank"]),
        (["lora.rank=sixteen"], ["lora.rank"]),
        (["train.learning_rate=-0.1"], ["train.learning_rate"]),
        (["lora.dropout=1.5"], ["lora.dropout"]),
        (["eval.splits=[]"], ["eval.splits"]),
        (["eval.max_examples=0"], ["eval.max_examples"]),
        (["quantization.mode=3bit"], ["quantization.mode"]),
        (["model.name_or_path=/nonexistent/llama"], ["model.name_or_path", "/nonexistent/llama"]),
        (["data.source=./missing.jsonl"], ["data.source", "missing.jsonl"]),
        (["data.db_dir=/nonexistent/dbs"], ["data.db_dir"]),
        (["train.warmup_steps=50", "train.max_steps=10"], ["train.warmup_steps"]),
        (["lora.target_modules=[]"], ["lora.target_modules"]),
    ],
)
def test_bad_values_name_the_key(override, names):
    with pytest.raises(ConfigError) as e:
        load_config(REPO / "configs/sql_micro.yaml", override)
    for name in names:
        assert name in str(e.value)


def test_bad_files_and_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["lora.rank"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"lora": {"rank": 4}}, ["lora.rank.x=1"])


def test_hub_ids_are_not_mistaken_for_local_paths():
    cfg = load_config(None, ["model.name_or_path=meta-llama/Llama-2-7b-hf", "data.source=b-mc2/sql-create-context"])
    assert cfg.model.name_or_path == "meta-llama/Llama-2-7b-hf"


def test_cli_reports_config_errors_without_traceback():
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-m", "shared.trial", "--config", "configs/sql_micro.yaml", "lora.rank=-1", "lora.bogus=2"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 2
    assert "lora.rank" in p.stderr and "lora.bogus" in p.stderr
    assert "Traceback" not in p.stderr
