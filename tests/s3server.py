"""A real S3-compatible server on 127.0.0.1 for tests: moto's server mode (`python -m moto.server`) in a
process of its own, with a bucket made through pyarrow, and the environment a client needs to reach it.

The credentials are moto's throwaway ones, handed over only through the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), as a real deployment hands over its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(bucket: str = "sweeps"):
    """Yields {"env": the AWS_* variables, "bucket": name, "secret": the secret key (tests look for leaks)}."""
    pytest = __import__("pytest")
    pytest.importorskip("moto", reason="moto[server] is a test extra (pip install -e '.[test]')")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test-" + secrets.token_hex(4),
           "AWS_SECRET_ACCESS_KEY": "secret-" + secrets.token_hex(12), "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "moto.server exited"
                assert time.time() < deadline, "moto.server did not answer in 60 s"
                time.sleep(0.5)
        os.environ.update(env)
        import pyarrow.fs

        pyarrow.fs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir(bucket)
        yield {"env": env, "bucket": bucket, "secret": env["AWS_SECRET_ACCESS_KEY"], "endpoint": endpoint}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
