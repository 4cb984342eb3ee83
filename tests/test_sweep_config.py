"""The sweep config, space, objective, memory estimate and result ranking: pure Python, no Ray started."""

import json
import pickle
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from shared.config import ConfigError, TrialConfig, load_config, validate
from sweeps import memory
from sweeps.config import OBJECTIVE, Objective, check_cluster, load_sweep, plan, rungs, trial_base
from sweeps.space import corners, define_by_run, to_overrides, trial_config

REPO = Path(__file__).resolve().parent.parent
SWEEP_YAMLS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
SMOKE = REPO / "configs/sweeps/sql_smoke.yaml"


def _reads_shared_data(sweep_yaml: Path) -> bool:
    """Whether the sweep's trial YAML reads the reference data beside the repo (../shared/data)."""
    import yaml

    trial = yaml.safe_load(sweep_yaml.read_text())["trial"]["config"]
    return "../shared/data/" in (REPO / trial).read_text()


def _skip_without_shared_data(sweep_yaml: Path) -> None:
    from shared.paths import shared_data_dir

    if _reads_shared_data(sweep_yaml) and shared_data_dir() is None:
        pytest.skip(f"{sweep_yaml.name} trains on the reference data beside the repo (../shared/data), absent here")


@pytest.mark.parametrize("path", SWEEP_YAMLS, ids=lambda p: p.name)
def test_every_committed_sweep_yaml_validates(path):
    _skip_without_shared_data(path)
    cfg = load_sweep(path)
    assert cfg.space and "lora.rank" in cfg.space and "train.learning_rate" in cfg.space
    assert cfg.space["train.learning_rate"].log


def test_every_sweep_has_a_smoke_twin_on_two_cpus_and_the_gpu_presets_a_micro_one():
    """A GPU preset's twin runs the embedded micro model; a preset already on an embedded base (SmolLM2, on CPU)
    has a twin on that same base. Every twin: 2 CPUs, one trial at a time, at least 4 trials."""
    names = {p.stem for p in SWEEP_YAMLS}
    assert {"sql", "code", "sql_smoke", "code_smoke"} <= names
    for name in names - {n for n in names if n.endswith("_smoke")}:
        assert f"{name}_smoke" in names
        from shared.paths import shared_data_dir

        if _reads_shared_data(REPO / f"configs/sweeps/{name}.yaml") and shared_data_dir() is None:
            continue  # its trial YAML reads ../shared/data, absent here
        big, smoke = load_sweep(REPO / f"configs/sweeps/{name}.yaml"), load_sweep(REPO / f"configs/sweeps/{name}_smoke.yaml")
        assert smoke.resources.gpu == 0 and smoke.resources.cpu == 2 and smoke.search.max_concurrent == 1
        assert smoke.search.num_trials >= 4
        trial = validate(TrialConfig, trial_base(smoke))
        base = trial_base(big)["model"]["name_or_path"]
        if base.startswith("embedded:"):
            assert trial.model.name_or_path == base
        else:
            assert big.resources.gpu == 1 and big.resources.gpu_memory_gb
            assert trial.model.name_or_path == "embedded:micro-llama"
        assert trial.train.threads == 2
        assert trial_base(big)["data"]["task"] == trial_base(smoke)["data"]["task"]


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["serch.num_trials=3"], ["serch", "search", "space"]),  # unknown key, and the valid ones listed
        (["search.num_trails=3"], ["search.num_trails", "num_trials"]),
        (["space.lora.rnak={type: int, low: 4, high: 8}"], ["space.lora.rnak", "rank"]),
        (["space.lora.rank.low=64"], ["space.lora.rank", "empty search range"]),  # low == high
        (["space.lora.rank.low=65"], ["space.lora.rank", "empty search range"]),
        (["space.lora.alpha_multiplier.values=[]"], ["space.lora.alpha_multiplier", "empty choice"]),
        (["space.train.learning_rate.low=0"], ["space.train.learning_rate", "log"]),
        (["space.lora.rank.type=normal"], ["space.lora.rank"]),
        (["space.train.max_steps={type: int, low: 10, high: 20}"], ["space.train.max_steps", "fixed"]),
        (["space.lora.alpha={type: float, low: 1, high: 8}"], ["space.lora.alpha", "not both"]),
        (["space.lora.dropout={type: float, low: 0.0, high: 1.5}"], ["lora.dropout"]),  # a corner is invalid
        (["trial.overrides.lora.dropout=2"], ["lora.dropout"]),
        (["trial.config=configs/nope.yaml"], ["trial.config", "nope.yaml"]),
        (["resources.gpu=1"], ["resources.gpu_memory_gb"]),
        (["resources.gpu=2", "resources.gpu_memory_gb=24"], ["resources.gpu"]),
        (["scheduler.grace_period_steps=24"], ["scheduler.grace_period_steps", "train.max_steps"]),
        (["scheduler.grace_period_steps=8"], ["scheduler.grace_period_steps", "eval_every_steps"]),
        (["scheduler.reduction_factor=1.5"], ["scheduler.reduction_factor"]),  # rung 9 falls between reports
        (["objective.eval_slice=17"], ["objective.eval_slice", "eval.max_examples"]),
        (["objective.metric=eval/py_pass_at_1"], ["objective.metric", "eval/sql_exec_acc"]),
        (["objective.metric=train/loss"], ["objective.metric"]),
        (["search.max_concurrent=5"], ["search.max_concurrent"]),
        (["storage_path=ftp://host/x"], ["storage_path", "ftp"]),
        (["trial.overrides.eval.loss=false"], ["eval.loss"]),
        (["trial.overrides.eval.splits=[test]"], ["eval.splits", "dev"]),
    ],
)
def test_bad_sweep_configs_fail_naming_the_key(overrides, names):
    with pytest.raises(ConfigError) as e:
        load_sweep(SMOKE, overrides)
    for name in names:
        assert name in str(e.value), str(e.value)


def test_overrides_reach_search_space_and_trial():
    cfg = load_sweep(SMOKE, ["search.num_trials=8", "space.lora.rank.high=32", "trial.overrides.train.max_steps=48"])
    assert cfg.search.num_trials == 8 and cfg.space["lora.rank"].high == 32
    assert trial_base(cfg)["train"]["max_steps"] == 48
    assert rungs(cfg, 48) == [6, 12, 24]


def _model_dir(tmp_path, **dims) -> Path:
    c = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 1,
         "vocab_size": 512, "tie_word_embeddings": True, **dims}
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(c))
    return folder


def test_rank_above_the_models_hidden_size_is_refused(tmp_path):
    model = _model_dir(tmp_path)
    cfg = load_sweep(SMOKE, [f"trial.overrides.model.name_or_path={model}"])
    p = plan(cfg)
    assert p.dims.hidden_size == 64 and p.worst_sample["lora.rank"] == 64  # 64 is allowed
    with pytest.raises(ConfigError, match=r"space\.lora\.rank: rank 128 is above the model's hidden size 64"):
        plan(load_sweep(SMOKE, [f"trial.overrides.model.name_or_path={model}", "space.lora.rank.high=128"]))


def test_a_gpu_request_on_a_cluster_without_gpus_is_refused():
    cpu_cfg = load_sweep(SMOKE)
    check_cluster(cpu_cfg, {"CPU": 2.0, "memory": 1e10})
    gpu_cfg = load_sweep(SMOKE, ["resources.gpu=1", "resources.gpu_memory_gb=24"])
    with pytest.raises(ConfigError, match=r"resources\.gpu: each trial asks for 1 GPU but the cluster has 0"):
        check_cluster(gpu_cfg, {"CPU": 2.0})
    check_cluster(gpu_cfg, {"CPU": 16.0, "GPU": 4.0})
    check_cluster(load_sweep(SMOKE, ["resources.gpu=1", "resources.gpu_memory_gb=24", "resources.check_cluster=false"]),
                  {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"resources\.cpu"):
        check_cluster(load_sweep(SMOKE, ["resources.cpu=4"]), {"CPU": 2.0})


def test_a_sample_that_cannot_fit_the_gpu_is_refused_before_launch(tmp_path):
    d = memory.LLAMA2_7B
    model = _model_dir(tmp_path, hidden_size=d.hidden_size, intermediate_size=d.intermediate_size,
                       num_hidden_layers=d.num_hidden_layers, num_attention_heads=d.num_attention_heads,
                       vocab_size=d.vocab_size, tie_word_embeddings=False)
    gpu = ["resources.gpu=1", "resources.gpu_memory_gb=24", f"trial.overrides.model.name_or_path={model}",
           "trial.overrides.data.max_seq_len=512"]
    fits = plan(load_sweep(SMOKE, [*gpu, "trial.overrides.train.batch_size=4",
                                   "trial.overrides.train.gradient_checkpointing=true"]))
    assert fits.worst_sample["lora.rank"] == 64 and fits.worst.peak_gb < 24
    with pytest.raises(ConfigError) as e:
        plan(load_sweep(SMOKE, [*gpu, "trial.overrides.train.batch_size=8"]))  # no checkpointing
    msg = str(e.value)
    assert msg.startswith("resources.gpu_memory_gb:") and "'lora.rank': 64" in msg and "24.0 GB" in msg
    assert "gradient_checkpointing" in msg


def test_memory_estimate_of_llama2_7b_follows_the_qlora_arithmetic():
    cfg = load_config(REPO / "configs/sql_llama2_7b.yaml")  # r=16, all-linear, batch 4 x 512, checkpointing
    est = memory.estimate(cfg, memory.LLAMA2_7B)
    assert est.lora_params == 39_976_960  # what peft prints for Llama-2-7B, r=16 on all linear layers
    assert 3.3 < est.base_gb < 4.6 and 6 < est.peak_gb < 12  # fits one 24 GB GPU, as in the QLoRA paper

    def peak(*o):
        return memory.estimate(load_config(REPO / "configs/sql_llama2_7b.yaml", list(o)), memory.LLAMA2_7B).peak_gb

    assert peak("train.gradient_checkpointing=false", "train.batch_size=8") > 24
    assert peak("lora.rank=64") > peak() and peak("train.batch_size=8") > peak() and peak("data.max_seq_len=1024") > peak()
    assert peak("lora.target_modules=[q_proj, v_proj]") < peak()
    assert peak("quantization.mode=16bit") > peak() + 8  # 13 GB of bf16 weights instead of ~4


def test_define_by_run_samples_every_leaf_and_derives_alpha_only():
    import optuna

    cfg = load_sweep(SMOKE, ["space.lora.target_modules={type: choice, values: [all-linear, [q_proj, v_proj]]}"])
    space = {k: d.model_dump() for k, d in cfg.space.items()}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    seen_modules = set()
    for _ in range(12):
        t = study.ask()
        derived = define_by_run(t, space)
        sample = {**t.params, **derived}  # what OptunaSearch hands Tune
        assert sample["lora.alpha"] == sample["lora.rank"] * sample["lora.alpha_multiplier"]
        assert sample["trial_number"] == t.number
        assert 4 <= sample["lora.rank"] <= 64 and 1e-4 <= sample["train.learning_rate"] <= 1e-2
        trial = trial_config(trial_base(cfg), sample)  # the full config rebuilt from the flat sample
        assert trial.lora.rank == sample["lora.rank"] and trial.lora.alpha == sample["lora.alpha"]
        assert trial.train.learning_rate == sample["train.learning_rate"] and trial.train.max_steps == 24
        assert set(to_overrides(sample)) == {"lora.rank", "lora.alpha", "train.learning_rate", "lora.target_modules"}
        seen_modules.add(json.dumps(trial.lora.target_modules))
        study.tell(t, 0.0)
    assert seen_modules == {'"all-linear"', '["q_proj", "v_proj"]'}


def test_optuna_search_is_seeded_and_its_state_survives_a_restore(tmp_path):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    cfg = load_sweep(SMOKE)
    space = {k: d.model_dump() for k, d in cfg.space.items()}

    def searcher():
        return OptunaSearch(space=partial(define_by_run, space=space), metric=OBJECTIVE, mode="max",
                            sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=2))

    a, b = searcher(), searcher()
    first = [a.suggest(f"t{i}") for i in range(3)]
    assert first == [b.suggest(f"t{i}") for i in range(3)]
    for i in range(3):
        a.on_trial_complete(f"t{i}", {OBJECTIVE: float(i)})
    a.save(str(tmp_path / "searcher.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert len(restored._ot_study.trials) == 3
    assert restored.suggest("t3")["trial_number"] == 3  # numbering (and what TPE learned) carries on
    pickle.dumps(partial(define_by_run, space=space))  # the searcher state is pickled with the space in it


def test_objective_lets_accuracy_decide_and_loss_break_ties():
    obj = Objective("eval/sql_exec_acc", "max", True, max_examples=16)
    one_right_bad_loss = obj.value({"eval/sql_exec_acc": 1 / 16, "eval/loss": 50.0})
    none_right_perfect_loss = obj.value({"eval/sql_exec_acc": 0.0, "eval/loss": 0.0})
    assert one_right_bad_loss > none_right_perfect_loss
    assert obj.value({"eval/sql_exec_acc": 0.0, "eval/loss": 1.0}) > obj.value({"eval/sql_exec_acc": 0.0, "eval/loss": 2.0})
    plain = Objective("eval/loss", "min", False, 16)
    assert plain.value({"eval/loss": 1.5, "eval/sql_exec_acc": 0.5}) == 1.5


def test_corners_cover_the_extremes():
    cfg = load_sweep(SMOKE)
    cs = corners(cfg.space)
    assert len(cs) == 2 * 2 * 2
    assert {c["lora.rank"] for c in cs} == {4, 64} and {c["lora.alpha"] for c in cs} == {4, 8, 64, 128}


def test_summary_ranks_by_objective_with_failures_last():
    from sweeps.run import summarize

    p = SimpleNamespace(trial=SimpleNamespace(train=SimpleNamespace(max_steps=24)),
                        objective=Objective("eval/sql_exec_acc", "max", True, 16))

    def result(n, objectives, error=None):
        steps = 6 * len(objectives)
        history = pd.DataFrame({OBJECTIVE: objectives, "train/steps": [6 * (i + 1) for i in range(len(objectives))]})
        return SimpleNamespace(metrics={"train/steps": steps, OBJECTIVE: objectives[-1], "trial_id": f"id{n}"},
                               config={"trial_number": n, "lora.rank": 8}, error=error, path=f"/x/trial-{n}",
                               metrics_dataframe=history)

    rows = summarize([result(0, [0.01, 0.02, 0.02, 0.02]), result(1, [0.1, 0.5]), result(2, [0.9], RuntimeError("boom")),
                      result(3, [0.01, 0.06, 0.03, 0.04]), result(4, [0.01, 0.06])], p)
    # ranked on the best value reached (ASHA's numbers), ties by the last value: 3 and 4 both reached 0.06
    assert [r["trial_number"] for r in rows] == [1, 4, 3, 0, 2]
    assert [r["position"] for r in rows] == [1, 2, 3, 4, None]
    assert [r["state"] for r in rows] == ["stopped", "stopped", "finished", "finished", "failed"]
    assert rows[0]["objective"] == 0.5 and rows[0]["sample"] == {"lora.rank": 8}


def test_trial_states_for_the_metrics():
    from sweeps.trials import trial_state

    assert [trial_state("TERMINATED", 24, 24), trial_state("TERMINATED", 6, 24), trial_state("ERROR", 6, 24),
            trial_state("RUNNING", 6, 24), trial_state("PENDING", None, 24), trial_state("TERMINATED", None, 24),
            trial_state(None, 24, 24, failed=True)] == \
        ["finished", "stopped", "failed", "running", "pending", "no_result", "failed"]


def test_run_help_and_a_bad_config_fail_fast_without_ray():
    out = subprocess.run([sys.executable, "-m", "sweeps.run", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0
    for option in ("--config", "--resume", "--name", "--address", "--check", "overrides"):
        assert option in out.stdout
    code = (
        "import sys; from sweeps.run import main; "
        "rc = main(['--config', 'configs/sweeps/sql_smoke.yaml', 'space.lora.rank.low=128']); "
        "print(rc, 'ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert "space.lora.rank: empty search range" in out.stderr


def test_storage_helpers_work_the_same_on_a_path_and_a_uri(tmp_path):
    from shared.storage import join, put_dir, read_text, write_text

    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "card.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"\0\1")
    for root in (str(tmp_path / "local"), f"file://{tmp_path}/uri"):
        write_text(join(root, "latest", "sql.json"), '{"a": 1}')
        assert json.loads(read_text(join(root, "latest", "sql.json"))) == {"a": 1}
        put_dir(src, join(root, "best_adapter"))
        put_dir(src, join(root, "best_adapter"))  # replacing works
        local = Path(join(root, "best_adapter").removeprefix("file://"))
        assert (local / "sub" / "w.bin").read_bytes() == b"\0\1" and (local / "card.json").is_file()


def test_a_local_storage_path_is_refused_on_a_cluster_of_several_nodes():
    from sweeps.config import check_cluster

    cluster = {"CPU": 4.0, "GPU": 0.0}
    local = load_sweep(SMOKE)
    check_cluster(local, cluster, nodes=1)  # one node: a local folder is fine
    with pytest.raises(ConfigError, match=r"storage_path: '~/qlora-sweeps' .* 2 nodes .*s3://"):
        check_cluster(local, cluster, nodes=2)
    check_cluster(load_sweep(SMOKE, ["storage_path=s3://b/sweeps"]), cluster, nodes=2)
    check_cluster(load_sweep(SMOKE, ["storage_shared=true"]), cluster, nodes=2)  # an NFS folder, declared
    with pytest.raises(ConfigError, match="storage_path"):
        check_cluster(load_sweep(SMOKE, ["storage_path=file:///tmp/x", "resources.check_cluster=false"]), cluster, 3)


def test_the_gpu_presets_store_to_a_bucket_named_by_the_environment():
    from sweeps.config import resolve_storage

    for name in ("sql", "code"):
        cfg = load_sweep(REPO / f"configs/sweeps/{name}.yaml")
        assert cfg.storage_path.startswith("s3://")
        assert resolve_storage(cfg, {"QLORA_SWEEP_BUCKET": "b1"}) == "s3://b1/qlora-sweeps"
        with pytest.raises(ConfigError, match="storage_path: .* needs the environment variable QLORA_SWEEP_BUCKET"):
            resolve_storage(cfg, {})


def test_the_winner_has_the_best_lower_bound_after_rescoring():
    """The search's first led on a 16-example slice; re-scored on 200 examples the second holds up better."""
    from sweeps.run import decision_notes, select_winner, summarize

    cfg = load_sweep(SMOKE, ["selection.top_k=3", "selection.examples=200"])
    p = SimpleNamespace(trial=SimpleNamespace(train=SimpleNamespace(max_steps=24), data=plan(cfg).trial.data),
                        objective=Objective("eval/sql_exec_acc", "max", True, 16))

    def result(n, objectives):
        history = pd.DataFrame({OBJECTIVE: objectives, "train/steps": [6 * (i + 1) for i in range(len(objectives))]})
        ckpt = f"ckpt-{n}"
        return SimpleNamespace(metrics={"train/steps": 24, OBJECTIVE: objectives[-1], "trial_id": f"id{n}"},
                               config={"trial_number": n}, error=None, path=f"/x/trial-{n}", metrics_dataframe=history,
                               best_checkpoints=[(ckpt, {OBJECTIVE: max(objectives)})], checkpoint=ckpt)

    right = {"ckpt-0": 40, "ckpt-1": 70, "ckpt-2": 10}  # of 200, on the larger slice
    seen = []

    def scorer(checkpoint, examples):
        seen.append(len(examples))
        return [i < right[checkpoint] for i in range(len(examples))]

    ranked = summarize([result(0, [0.3, 0.5]), result(1, [0.2, 0.45]), result(2, [0.1, 0.2])], p)
    winner, sel = select_winner(ranked, cfg, p, scorer)
    assert [r["trial_number"] for r in ranked] == [0, 1, 2] and seen == [200, 200, 200]
    assert winner["trial_number"] == 1 and sel["winner_trial_number"] == 1
    assert [r["correct"] for r in sel["rescored"]] == [40, 70, 10]
    assert all(r["interval"][0] < r["accuracy"] < r["interval"][1] for r in sel["rescored"])
    assert "did not hold" in sel["why"] and "trial 0" in sel["why"]
    notes = decision_notes({"selection": sel})
    assert "| 1 | 2 | 70/200 | 0.350 |" in notes and "Wilson" in notes

    single, why = select_winner(ranked, load_sweep(SMOKE, ["selection.top_k=1"]), p, scorer)
    assert single is ranked[0] and "top_k is 1" in why["why"] and len(seen) == 3
