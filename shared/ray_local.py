"""How this project starts and joins Ray: token authentication always on, a token made before Ray is asked.

    python -m shared.ray_local      # make sure a token exists (mode 600); prints where it is, never the token

Ray 2.60 with RAY_AUTH_MODE=token takes its token from, in this order: RAY_AUTH_TOKEN (the value itself),
the file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token. `ray start --head` does not create one: on a
home without a token it fails with "AuthenticationError: Token authentication is enabled but no authentication
token was found". Only ray.init() and `ray get-auth-token --generate` write one, with the process umask (mode
644 under the usual 022: readable by every local user). ensure_token() writes the same kind of token (256
random bits as hex, what Ray's own generator makes) to the file Ray will read, mode 600 in a 700 folder, and
tightens an existing token file of ours that others can read. Nothing here prints or logs the token.

Loopback: on one machine, Ray's switch for a single-node local Ray, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the
default on macOS and Windows), makes every Ray process take 127.0.0.1 as its node address. Measured with
`ss -ltnp` on `ray start --head` (Ray 2.60): with it, the GCS, raylet, dashboard agent, runtime-env agent,
client server and workers listen on 127.0.0.1 only; without it, on `*` or the machine's address (token
guarded). `ray start` itself turns `--node-ip-address 127.0.0.1` into the machine's address. The cost: no
other node can join such a head, so a cluster of several nodes (cluster.yaml) is started without it.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path

AUTH_MODE = "RAY_AUTH_MODE"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class RayAuthError(RuntimeError):
    """Token authentication is off, or its token file cannot be made."""


def token_path() -> Path | None:
    """The file Ray reads its token from, or None when RAY_AUTH_TOKEN holds the token itself."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"


def ensure_token() -> Path | None:
    """Turn token authentication on for this process and its children, and make sure the token exists.

    Returns the token file (None when RAY_AUTH_TOKEN gives the token). Raises RayAuthError when RAY_AUTH_MODE
    is set to anything but `token`: this project never runs or joins a Ray without authentication."""
    mode = os.environ.setdefault(AUTH_MODE, "token")
    if mode.lower() != "token":
        raise RayAuthError(f"{AUTH_MODE}={mode}: this project runs Ray with token authentication only; "
                           f"unset {AUTH_MODE} or set it to token")
    path = token_path()
    if path is None:
        return None
    if path.is_file() and path.stat().st_size:
        if path.stat().st_uid == os.getuid() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)  # ray.init() and `ray get-auth-token --generate` leave it 644
        return path
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise RayAuthError(f"cannot write the Ray token file {path}: {e.strerror}") from e
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def loopback_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) for starting a single-node Ray on 127.0.0.1, token authentication on."""
    return {**(os.environ if env is None else env), AUTH_MODE: "token", **LOOPBACK_ENV}


def main() -> int:
    try:
        path = ensure_token()
    except RayAuthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("Ray token: from RAY_AUTH_TOKEN" if path is None else f"Ray token: {path} (mode 600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
