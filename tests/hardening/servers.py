"""Real processes for the fault tests: `sbt serve` subprocesses and a TCP proxy that can cut the database.

Ports: servers take 18100-18149, proxies 18150-18189 (this suite's range is 18100-18199).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from app.config import Settings

SERVER_PORTS = range(18100, 18150)
PROXY_PORTS = range(18150, 18190)
START_TIMEOUT_S = 30.0


def free_port(ports: range) -> int:
    # Random order, so parallel test workers probing the same range rarely race for one port.
    for port in random.sample(ports, len(ports)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def wait_until(predicate: object, *, timeout: float, what: str) -> None:
    """Poll `predicate()` (a condition, not a clock) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def server_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of an `sbt serve` for these settings (and no stray SBT_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBT_")}
    env.update({
        "SBT_DATABASE_URL": settings.database_url,
        "SBT_SIGNING_KEY_FILE": str(settings.key_file),
        "SBT_DATA_DIR": str(settings.data_dir),
        "SBT_ENV": "test",
        "SBT_CHECKPOINT_INTERVAL_SECONDS": "0",
        "SBT_RATE_LIMIT": "1000000/minute",
        "SBT_AUTH_FAILURE_LIMIT": "1000000/minute",
        **extra,
    })
    return env


def sbt_command() -> list[str]:
    script = Path(sys.executable).with_name("sbt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


class ServerProcess:
    """`sbt serve` on 127.0.0.1 and a free port of this suite; stopped (killed if need be) on exit."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.env = server_environment(settings, **env)
        self.log_path = log_path
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.port = free_port(SERVER_PORTS)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*sbt_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        wait_until(self._healthy, timeout=START_TIMEOUT_S, what=f"sbt serve on port {self.port}")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"sbt serve exited with {self.process.returncode}:\n"
                               f"{self.log_path.read_text()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` drops every connection and refuses new ones until
    `restore()` — a database that goes away and comes back, as far as the service can tell."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port(PROXY_PORTS)
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR is set on POSIX
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave it listening.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.start()

    def close(self) -> None:
        self.cut()


@contextlib.contextmanager
def proxied(host: str, port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(host, port).start()
    try:
        yield proxy
    finally:
        proxy.close()
