"""cluster.yaml: valid for Ray's own launcher schema, and safe. No Ray port is opened to the internet, the
dashboard stays on the head's loopback, token authentication is never turned off and its token travels by
file, every node joins with it, torch is installed before the project, and every key carries a comment.
No AWS call is made: these are the checks `ray up` runs before it touches the cloud, plus ours."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster.yaml"
RAY_PORTS = {6379, 8265, 10001, 8000}  # GCS, dashboard + job server, Ray client, Serve HTTP
OPEN_TO_ALL = {"0.0.0.0/0", "::/0"}


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER.read_text()


@pytest.fixture(scope="module")
def cfg(text) -> dict:
    return yaml.safe_load(text)


def start_commands(cfg) -> list[str]:
    return [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cfg[key] if "ray start" in c]


def test_matches_rays_own_schema(cfg):
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(cfg)]
    assert not errors, "\n".join(errors)


def test_passes_the_checks_ray_up_runs_first(cfg):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cfg))  # fills the AWS defaults, then schema + cross-field checks


def test_cpu_head_and_autoscaling_gpu_workers(cfg):
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["node_config"]["InstanceType"].startswith("m5.")
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0  # no trial on the head
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    assert len(workers) == 1
    (gpu,) = workers.values()
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge"
    assert gpu["resources"]["GPU"] == 1
    assert gpu["min_workers"] == 0 < gpu["max_workers"] <= cfg["max_workers"]
    assert cfg["provider"]["type"] == "aws"


def _opens(rule: dict, port: int) -> bool:
    if str(rule.get("IpProtocol")) == "-1":
        return True
    lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
    return lo == -1 or lo <= port <= hi


def test_no_ray_port_open_to_the_internet(cfg):
    rules = cfg["provider"].get("security_group", {}).get("IpPermissions", [])
    for node_type in cfg["available_node_types"].values():
        assert "IpPermissions" not in node_type["node_config"]
    for rule in rules:
        sources = {r.get("CidrIp") for r in rule.get("IpRanges", [])}
        sources |= {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
        if sources & OPEN_TO_ALL:
            assert not [p for p in RAY_PORTS if _opens(rule, p)], f"rule opens Ray ports to the internet: {rule}"


def test_the_rule_checker_sees_an_open_port():
    assert _opens({"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8300}, 8265)
    assert _opens({"IpProtocol": "-1"}, 6379)
    assert not _opens({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}, 8265)


def test_dashboard_on_loopback(cfg, text):
    (head_start,) = [c for c in start_commands(cfg) if "--head" in c]
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", head_start)
    assert not re.search(r"--dashboard-host[= ](0\.0\.0\.0|::)", text)


def test_token_auth_on_everywhere_and_no_secret_inline(cfg, text):
    assert not re.search(r"RAY_AUTH_MODE\s*=\s*['\"]?disabled", text, re.IGNORECASE)
    assert len(start_commands(cfg)) == 2
    for command in start_commands(cfg):
        assert "RAY_AUTH_MODE=token" in command, command
    # the token reaches every node as a file copied from the user's machine, never as a value in here
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "RAY_AUTH_TOKEN=" not in text
    assert not re.search(r"AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,}|BEGIN [A-Z ]*PRIVATE KEY", text)
    assert "ssh_private_key" not in cfg["auth"]


def test_torch_before_the_project_from_the_synced_tree(cfg):
    assert cfg["file_mounts"]["~/qlora-sweep"] == "."
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = cfg[key]
        torch_at = next(i for i, c in enumerate(commands) if re.search(r"pip install .*torch==\d", c))
        project_at = next(i for i, c in enumerate(commands) if "cd ~/qlora-sweep" in c and "pip install -q -e ." in c)
        assert torch_at < project_at, key
    (worker_torch,) = [c for c in cfg["worker_setup_commands"] if "torch==" in c]
    assert "whl/cpu" not in worker_torch  # the GPU workers take the CUDA build


def test_every_key_is_commented(text):
    """A key line carries a comment, or sits right under a comment line."""
    bare, previous = [], ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        is_key = re.match(r'^\s*(- )?["\w.~/-]+"?\s*:(\s|$)', line) and not stripped.startswith("#")
        if is_key and "#" not in line and not previous.startswith("#"):
            bare.append(f"{number}: {line}")
        if stripped:
            previous = stripped
    assert not bare, "keys without a comment:\n" + "\n".join(bare)
