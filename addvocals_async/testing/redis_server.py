"""A throwaway ``redis-server`` for tests and benchmarks: a real server, started on a free
loopback port with persistence off, in a temporary directory, and stopped at the end.

    with RedisServer() as server:
        backend = RedisBackend(server.url)

``stop()`` and ``start()`` again keep the port, so a test can take Redis away mid-run and
bring it back. Needs the ``redis-server`` program (Debian: ``apt-get install redis-server``);
without it ``start()`` raises ``RedisServerError`` saying so. No Python Redis client needed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

__all__ = ["RedisServer", "RedisServerError"]


class RedisServerError(RuntimeError):
    """``redis-server`` could not be started."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1; see the module docstring."""

    def __init__(
        self, *, executable: str = "redis-server", password: str | None = None, port: int = 0
    ) -> None:
        self.executable = executable
        self.password = password
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on a free port the first time, on the same port after) and
        wait until it answers."""
        if self.running:
            return
        program = shutil.which(self.executable)
        if program is None:
            raise RedisServerError(
                f"{self.executable!r} is not installed (Debian: apt-get install redis-server)"
            )
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="addvocals-redis-")
        attempts = 3 if self.port == 0 else 1
        for attempt in range(attempts):
            port = self.port or free_port()
            try:
                self._spawn(program, port, timeout)
            except RedisServerError:
                if attempt == attempts - 1:
                    raise
                continue  # the free port was taken meanwhile: try another
            self.port = port
            return

    def _spawn(self, program: str, port: int, timeout: float) -> None:
        assert self._dir is not None
        args = [
            program,
            "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",
            "--dir", self._dir.name,
            "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        log_path = f"{self._dir.name}/redis-{port}.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                with open(log_path, "rb") as log_file:
                    tail = log_file.read()[-500:].decode(errors="replace").strip()
                raise RedisServerError(f"redis-server exited at start on port {port}: {tail}")
            if _answers(port):
                self._process = process
                return
            time.sleep(0.01)
        process.kill()
        process.wait()
        raise RedisServerError(f"redis-server did not answer on port {port} within {timeout} s")

    def stop(self) -> None:
        """Stop the server (its data goes: persistence is off); ``start()`` brings a fresh
        one back on the same port."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None


def _answers(port: int) -> bool:
    """Whether something speaking Redis answers on ``port`` (``-NOAUTH`` counts)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            answer = conn.recv(64)
    except OSError:
        return False
    return answer.startswith((b"+PONG", b"-NOAUTH"))
