"""Servers on 127.0.0.1 for tests and benchmarks: pick a port, start, wait until it answers, stop.

:class:`LoopbackServer` is the base (a ``with`` block, ``port``, ``root_url``, ``base_url``, ``get_json``);
two kinds of it:

- :class:`ProcessServer`: a subprocess given ``--port``. With ``ready=None`` it gets ``--port 0`` and must
  print one line ``PORT <n>`` once it listens (tests/fake_openai_server.py and bench/arith_teacher.py,
  which serve with :func:`serve_aiohttp`); with ``ready="/path"`` it gets a free port and is polled at that
  path until it answers (llama.cpp's server). Stopping it: SIGTERM, then SIGKILL after ``stop_timeout``.
- :class:`ThreadServer`: an ``http.server`` handler served from a thread of this process.

It lives in tests/ beside fake_openai_server.py, which runs as a script from there and so imports it with
no path set-up; the bench scripts put tests/ on sys.path, as they already did for fake_openai_server.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

HOST = "127.0.0.1"
_Server = TypeVar("_Server", bound="LoopbackServer")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class LoopbackServer:
    """A server on 127.0.0.1 for the duration of a ``with`` block."""

    name = "server"
    port: int = 0

    @property
    def root_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style API root."""
        return f"{self.root_url}/v1"

    def get_json(self, path: str, timeout: float = 10) -> Any:
        with urllib.request.urlopen(f"{self.root_url}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())

    def post(self, path: str, timeout: float = 10) -> None:
        request = urllib.request.Request(f"{self.root_url}{path}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Server) -> _Server:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ProcessServer(LoopbackServer):
    """``command --port N`` as a subprocess: N = 0 and its ``PORT <n>`` line read (``ready=None``), or N a
    free port and ``GET ready`` polled until it answers."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        ready: str | None = None,
        name: str = "server",
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.command = list(command)
        self.ready = ready
        self.name = name
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if self.ready is None:
            self._start_announced()
        else:
            self._start_polled(self.ready)

    def _start_announced(self) -> None:
        cmd = [*self.command, "--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.start_timeout)
        if not line or not line[0].startswith("PORT "):
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {cmd!r} printed {line!r}")
        self.port = int(line[0].split()[1])

    def _start_polled(self, ready: str) -> None:
        self.port = free_port()
        cmd = [*self.command, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.root_url}{ready}", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not start") from None
                time.sleep(0.5)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.stop_timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        self.proc = None


class ThreadServer(LoopbackServer):
    """An ``http.server`` handler class, served from a daemon thread; listening (``port`` known) at once."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer((HOST, 0), handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def serve_aiohttp(app: Any, port: int) -> None:
    """The server side of :class:`ProcessServer` (``ready=None``): serve the aiohttp ``app`` on
    127.0.0.1:``port`` (0: any free one), print ``PORT <n>`` once listening, stop on SIGTERM/SIGINT."""
    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # installed before PORT is printed, so no signal is missed
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=2048)
    await site.start()
    sys.stdout.write(f"PORT {runner.addresses[0][1]}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
