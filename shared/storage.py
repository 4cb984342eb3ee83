"""Sweep storage: a local folder or an object-store URI (s3://bucket/path, gs://bucket/path), through pyarrow.

The sweep writes its folders and the `latest/<task>.json` pointers here; serving reads the pointers and copies
the adapter they name into a local cache. One vocabulary for both sides, so a sweep stored in a bucket can be
served.

Credentials and endpoint come from the environment only, as every AWS/GCS client reads them, never from a
config file: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role), AWS_DEFAULT_REGION, and for an
S3-compatible server (MinIO, Ceph, moto) AWS_ENDPOINT_URL=http://host:port, which pyarrow 26's S3
filesystem honours. On a Ray cluster every node needs them in the environment `ray start` ran with: trials
write their checkpoints from whichever node they run on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

URI = re.compile(r"^([a-z][a-z0-9+.-]*)://")


def is_uri(location: str) -> bool:
    return bool(URI.match(location))


def is_shared(location: str) -> bool:
    """Reachable from every node of a cluster: an object-store URI (not file://, which is each node's disk)."""
    m = URI.match(location)
    return bool(m) and m.group(1) != "file"


def fs_and_path(location: str):
    """A local path or URI -> (pyarrow filesystem, path on it)."""
    import pyarrow.fs

    if is_uri(location):
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    if is_uri(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location).expanduser().joinpath(*parts))


def exists(location: str) -> bool:
    import pyarrow.fs

    fs, path = fs_and_path(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def write_text(location: str, text: str) -> None:
    """Writes a file whole. On S3 an object appears at once when its upload completes, so a reader sees the
    old text or the new, never half; locally the same by a rename."""
    fs, path = fs_and_path(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if is_uri(location):
        with fs.open_output_stream(path) as f:
            f.write(text.encode())
        return
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_text(location: str) -> str:
    fs, path = fs_and_path(location)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def put_dir(local: Path, location: str) -> None:
    """Copies a local folder to a local path or URI, replacing what was there."""
    import pyarrow.fs

    fs, path = fs_and_path(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(path)
    fs.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(
        str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs
    )


def get_dir(location: str, local: Path) -> Path:
    """Copies a folder at a URI (or local path) into `local`, which is created."""
    import pyarrow.fs

    fs, path = fs_and_path(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        raise FileNotFoundError(f"{location} is not a folder")
    local.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
    return local


def cache_dir() -> Path:
    return Path(os.environ.get("QLORA_SWEEP_CACHE", "~/.cache/qlora-sweep")).expanduser()


def local_adapter(location: str) -> Path:
    """An adapter folder as a local path: itself when local; for a URI, a copy under the cache, one per URI
    and card (a re-exported adapter at the same URI gets a new copy)."""
    if not is_uri(location):
        return Path(location).expanduser().resolve()
    card = read_text(join(location, "card.json"))
    key = hashlib.sha256(f"{location}\n{card}".encode()).hexdigest()[:16]
    dest = cache_dir() / "adapters" / key
    if not (dest / "card.json").is_file():
        tmp = dest.with_name(f"{key}.{os.getpid()}.tmp")
        get_dir(location, tmp)
        try:
            tmp.rename(dest)  # card.json last in place: a half-copied folder is never taken for an adapter
        except OSError:  # another process put it there first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def latest_pointer(storage_path: str, task: str) -> str:
    return join(storage_path, "latest", f"{task}.json")


def read_latest(storage_path: str, task: str) -> dict | None:
    """The `latest/<task>.json` pointer under storage_path (local or URI), or None where there is none."""
    pointer = latest_pointer(storage_path, task)
    if not exists(pointer):
        return None
    return json.loads(read_text(pointer))
