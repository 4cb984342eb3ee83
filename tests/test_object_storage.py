"""Sweep storage in a real S3-compatible bucket (moto's server on 127.0.0.1), through pyarrow: files and
folders round trip, the `latest` pointer is read from the bucket, and serving's registry resolves
`latest:sql` there to a local copy of the adapter. No Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from s3server import s3_server

from shared import storage


@pytest.fixture(scope="module")
def bucket():
    with s3_server() as s3:
        yield s3


def test_text_and_folders_round_trip_through_the_bucket(bucket, tmp_path):
    root = f"s3://{bucket['bucket']}/roundtrip"
    storage.write_text(storage.join(root, "a", "x.json"), '{"x": 1}\n')
    assert storage.read_text(storage.join(root, "a", "x.json")) == '{"x": 1}\n'
    assert storage.exists(storage.join(root, "a", "x.json")) and not storage.exists(storage.join(root, "nope"))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "card.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(bytes(range(256)) * 40)
    storage.put_dir(src, storage.join(root, "folder"))
    storage.put_dir(src, storage.join(root, "folder"))  # replacing is idempotent
    back = storage.get_dir(storage.join(root, "folder"), tmp_path / "back")
    assert (back / "sub" / "w.bin").read_bytes() == (src / "sub" / "w.bin").read_bytes()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        storage.get_dir(storage.join(root, "missing"), tmp_path / "x")


def test_shared_storage_is_an_object_store_uri():
    assert storage.is_shared("s3://b/p") and storage.is_shared("gs://b/p")
    assert not storage.is_shared("~/qlora-sweeps") and not storage.is_shared("file:///tmp/x")


def test_serving_resolves_latest_from_the_bucket(bucket, tmp_path, monkeypatch):
    from serving.registry import Unavailable, resolve

    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path / "cache"))
    root = f"s3://{bucket['bucket']}/serve"
    with pytest.raises(Unavailable, match="no sweep has exported a sql adapter"):
        resolve("latest:sql", root)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "card.json").write_text(json.dumps({"v": 1}))
    (adapter / "adapter_model.safetensors").write_bytes(b"w1")
    storage.put_dir(adapter, f"{root}/sweep-1/best_adapter")
    storage.write_text(storage.latest_pointer(root, "sql"), json.dumps({"adapter": f"{root}/sweep-1/best_adapter"}))
    first = resolve("latest:sql", root)
    assert Path(first).is_relative_to(tmp_path / "cache") and (first / "adapter_model.safetensors").read_bytes() == b"w1"
    assert resolve("latest:sql", root) == first  # cached: one copy per adapter
    # a new winner: the pointer names another folder, and the registry follows it on its next read
    (adapter / "card.json").write_text(json.dumps({"v": 2}))
    (adapter / "adapter_model.safetensors").write_bytes(b"w2")
    storage.put_dir(adapter, f"{root}/sweep-2/best_adapter")
    storage.write_text(storage.latest_pointer(root, "sql"), json.dumps({"adapter": f"{root}/sweep-2/best_adapter"}))
    second = resolve("latest:sql", root)
    assert second != first and (second / "adapter_model.safetensors").read_bytes() == b"w2"
