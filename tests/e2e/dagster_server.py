"""A `dg dev` webserver (and daemon) over a temporary chain, for the browser tests.

`DagsterDevServer(data_dir)` runs `gonka init` on data_dir, starts `dg dev` (the code location of pyproject's
[tool.dg.project]: gonka_pipelines.definitions) from the repository root
on a free loopback port in its own process group (GONKA_DATA_DIR=data_dir, DAGSTER_HOME=data_dir/dagster_home),
and waits for `/server_info`. `stop()` ends the whole process group (SIGTERM, then SIGKILL after a grace period) and
checks that nothing is left running or listening; it is idempotent.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # tests/e2e/ -> the repository root
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 30.0

# `dg dev` (like `dagster dev`) maps SIGTERM to its SIGINT handler; when the parent ignores SIGINT (a background job of a
# non-interactive shell), the child inherits SIG_IGN and would ignore SIGTERM too. Restore the default first.
_EXEC_WITH_DEFAULT_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); os.execv(sys.argv[1], sys.argv[1:])"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def group_members(pgid: int) -> list[str]:
    """The live (not zombie) processes of process group pgid, as "PID COMMAND" (from /proc; else kill(0) only)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [f"process group {pgid}"]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
                members.append(f"{entry.name} {command}")
        except (OSError, ValueError, IndexError):
            continue
    return members


class DagsterDevServer:
    def __init__(self, data_dir: Path, log_dir: Path):
        self.data_dir = Path(data_dir)
        self.home = self.data_dir / "dagster_home"
        self.log_path = Path(log_dir) / "dagster-dev.log"
        self.env = os.environ | {"GONKA_DATA_DIR": str(self.data_dir), "DAGSTER_HOME": str(self.home), "VIRTUAL_ENV": str(BIN.parent)}
        self.env.pop("GONKA_FAILPOINT", None)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.started_at = time.perf_counter()
        self.killed = False  # whether stop() needed SIGKILL
        self.stop_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gonka(self, *args: str) -> str:
        """Run the `gonka` command line on this server's chain; returns its stdout."""
        result = subprocess.run([str(BIN / "gonka"), "--data-dir", str(self.data_dir), *args], cwd=REPO_ROOT, env=self.env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"gonka {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self) -> str:
        """`gonka init` (installs dagster.yaml in DAGSTER_HOME, registers epoch 1) is the caller's; this starts the server."""
        assert (self.home / "dagster.yaml").exists(), "run `gonka init` first: it installs dagster.yaml into DAGSTER_HOME"
        self.port = free_port()
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGINT, str(BIN / "dg"), "dev", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = os.getpgid(self.process.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dg dev exited with {self.process.returncode} before serving:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"dg dev did not answer {self.url}/server_info within {START_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL whatever is left after STOP_GRACE_S; then nothing may remain."""
        if self.pgid is None:
            return
        pgid, self.pgid = self.pgid, None
        started = time.monotonic()
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and group_members(pgid):
            self.process.poll()  # reap the leader so the group can empty
            time.sleep(0.25)
        if group_members(pgid):
            self.killed = True
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (group_members(pgid) or port_in_use(self.port)):
            time.sleep(0.25)
        self._log.close()
        self.stop_seconds = time.monotonic() - started
        left = group_members(pgid)
        assert not left, f"processes of dg dev (group {pgid}) survived SIGKILL: {left}"
        assert not port_in_use(self.port), f"something still listens on 127.0.0.1:{self.port} after dg dev stopped"
