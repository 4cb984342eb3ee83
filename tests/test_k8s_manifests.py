"""k8s/: the RayJob (the sweep) and RayService (serving) manifests validate against KubeRay's own CRD schemas
(../shared/kuberay, copied from ray-project/kuberay; skipped with the reason where absent), keep Ray's token
authentication on, and take every secret (the HTTP API key, the bucket's credentials) from a Secret."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
KUBERAY = REPO.parent / "shared" / "kuberay"
MANIFESTS = {"RayJob": REPO / "k8s" / "rayjob-sweep.yaml", "RayService": REPO / "k8s" / "rayservice.yaml"}
CRDS = {"RayJob": "ray.io_rayjobs.yaml", "RayService": "ray.io_rayservices.yaml"}


@functools.cache
def _schema(kind: str) -> dict:
    path = KUBERAY / CRDS[kind]
    if not path.is_file():
        pytest.skip(f"KubeRay's CRD {path} is absent (the project ships no copy; see ../shared/kuberay)")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _env(doc: dict) -> list[list[dict]]:
    cluster = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c.get("env", []) for g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("kind", list(MANIFESTS))
def test_manifest_matches_kuberays_schema(kind):
    import jsonschema

    schema = _schema(kind)
    doc = yaml.safe_load(MANIFESTS[kind].read_text())
    assert doc["kind"] == kind and doc["apiVersion"] == "ray.io/v1"
    validator = jsonschema.Draft7Validator(schema)  # OpenAPI v3 structural schemas: x-kubernetes-* are ignored
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors[:20])
    # the validator sees mistakes: a misspelled key under a closed object, a wrong type
    bad = yaml.safe_load(MANIFESTS[kind].read_text())
    cluster = bad["spec"].get("rayClusterSpec") or bad["spec"]["rayClusterConfig"]
    cluster["authOptions"]["mode"] = "off"
    assert any("authOptions" in "/".join(map(str, e.absolute_path)) for e in validator.iter_errors(bad))


@pytest.mark.parametrize("kind", list(MANIFESTS))
def test_token_auth_on_and_secrets_only_from_secrets(kind):
    text = MANIFESTS[kind].read_text()
    doc = yaml.safe_load(text)
    cluster = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
    assert cluster["authOptions"]["mode"] == "token"
    assert not any(e.get("name") == "RAY_AUTH_MODE" for env in _env(doc) for e in env)  # nothing overrides it
    for env in _env(doc):
        names = {e["name"]: e for e in env}
        for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "secretKeyRef" in names[secret]["valueFrom"] and "value" not in names[secret]
        if kind == "RayService":
            assert names["QLORA_SERVE_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "qlora-serve"
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def test_the_sweep_stores_to_a_bucket_and_serving_reads_it():
    from sweeps.config import load_sweep, resolve_storage

    job = yaml.safe_load(MANIFESTS["RayJob"].read_text())
    config = job["spec"]["entrypoint"].split("--config", 1)[1].split()[0]
    cfg = load_sweep(REPO / config)
    (bucket,) = [e["value"] for e in _env(job)[0] if e["name"] == "QLORA_SWEEP_BUCKET"]
    storage = resolve_storage(cfg, {"QLORA_SWEEP_BUCKET": bucket})
    assert storage.startswith("s3://")
    service = yaml.safe_load(MANIFESTS["RayService"].read_text())
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "serving.app:build_app" and app["args"]["storage_path"] == storage
    assert app["args"]["adapters"]["sql"] == "latest:sql"
