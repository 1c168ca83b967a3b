"""A throwaway PostgreSQL server from Debian's packages: initdb in a temporary folder, started on a free loopback port,
stopped by its postmaster's process id."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER_USER = "postgres"
"""PostgreSQL refuses to run as root: under root the server runs as Debian's postgres user."""


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin; None when absent."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


@contextmanager
def temporary_postgres(timeout: float = 30.0) -> Iterator[str]:
    """A fresh server on 127.0.0.1; yields a URL of its `dagster` database (user postgres, trust auth on loopback)."""
    binaries = postgres_bin()
    assert binaries is not None, "PostgreSQL is not installed: `make postgresql` (Debian's postgresql package)"
    root = Path(tempfile.mkdtemp(prefix="gonka-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", _free_port()
    subprocess.run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                    "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)
    server = subprocess.Popen(_as_server_user([str(binaries / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                                               "-p", str(port), "-k", str(root), "-c", "fsync=off"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(binaries, port, timeout)
        subprocess.run(_as_server_user([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                        "dagster"]), check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/dagster"
    finally:
        postmaster = int((data / "postmaster.pid").read_text().split()[0]) if (data / "postmaster.pid").exists() else server.pid
        os.kill(postmaster, signal.SIGINT)  # fast shutdown: roll back open transactions, close connections, exit
        server.wait(timeout=timeout)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(binaries: Path, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = subprocess.run([str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"PostgreSQL on 127.0.0.1:{port} not ready after {timeout:.0f} s")
