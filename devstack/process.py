"""One child process of a local stack, and ports for it without the bind race.

A port found free can be taken by another process (a dev stack, a parallel run) before our child
binds it. Two ways out, in order of preference:

- the parent binds the socket and hands it over (`listening_socket`, then gunicorn's
  `--bind fd://N` with `pass_fds`): nothing can come between;
- the child binds port 0 itself and prints the port it got (the benchmark sinks: `ready 43121`);
- for servers that only take a port number (PostgreSQL, Redis), `on_free_port` tries a fresh port
  when the child exits while starting, and their readiness check asks the server who it is (its
  data directory), so a stranger already listening on the port is never taken for ours.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

BASE_DIR = Path(__file__).resolve().parent.parent

# How many fresh ports a server that binds its own is tried on.
PORT_TRIES = 5

T = TypeVar("T")


class ExitedWhileStarting(RuntimeError):
    """The child exited before it was ready (most often: its port was taken meanwhile)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (see the module's doc)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_socket(host: str = "127.0.0.1", backlog: int = 1024) -> socket.socket:
    """A socket bound to a port of its own and listening, inheritable by a child (`pass_fds`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def on_free_port(start: Callable[[int], T], port: int | None = None, tries: int = PORT_TRIES) -> T:
    """`start(port)` on `port`, or on fresh free ports while the child exits while starting."""
    if port is not None:
        return start(port)
    for tries_left in reversed(range(tries)):
        try:
            return start(free_port())
        except ExitedWhileStarting:
            if not tries_left:
                raise
    raise AssertionError("unreachable")


def wait_until(
    predicate: Callable[[], Any],
    what: str,
    timeout: float,
    *,
    child: Child | None = None,
    interval: float = 0.1,
) -> Any:
    """Poll `predicate` until it is truthy (and return it); ExitedWhileStarting if `child` exits,
    RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if child is not None and not child.alive():
            raise ExitedWhileStarting(
                f"{what} exited with code {child.returncode} while starting{child.tail_note()}"
            )
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s")
        time.sleep(interval)


class Child:
    """A process in its own session (so its whole tree can be signalled), with its output.

    Output goes to `log_path` when given (appended), else it is read into `output` (lines) by a
    thread. `start(ready=...)` waits for a line matching `ready` (a regular expression; the match
    is kept in `ready_match`) or for a callable to answer true.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path = BASE_DIR,
        log_path: Path | None = None,
        pass_fds: Sequence[int] = (),
        user: int | None = None,
        group: int | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.pass_fds = tuple(pass_fds)
        self.user, self.group = user, group
        self.popen: subprocess.Popen[bytes] | None = None
        self.output: list[str] = []
        self.ready_match: re.Match[str] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, *, ready: str | Callable[[], Any] | None = None, timeout: float = 60) -> Child:
        """Spawn the process and wait until it is ready; stopped again if it does not get there."""
        # a log file is handed to the child and closed here below
        out: Any = open(self.log_path, "ab") if self.log_path else subprocess.PIPE  # noqa: SIM115
        extra: dict[str, Any] = {}
        if self.user is not None:
            extra = {"user": self.user, "group": self.group}
        try:
            self.popen = subprocess.Popen(  # noqa: S603 - our own commands
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=self.pass_fds,
                start_new_session=True,
                **extra,
            )
        finally:
            if self.log_path:
                out.close()
        if self.log_path is None:
            threading.Thread(target=self._pump, daemon=True, name=f"pump-{self.name}").start()
        if ready is None:
            return self
        check = ready if callable(ready) else self._line_check(re.compile(ready))
        try:
            wait_until(check, self.name, timeout, child=self, interval=0.05)
        except BaseException:
            self.stop(timeout=5)
            raise
        return self

    def _line_check(self, pattern: re.Pattern[str]) -> Callable[[], bool]:
        def check() -> bool:
            match = pattern.search(self.text())
            if match:
                self.ready_match = match
            return match is not None

        return check

    def _pump(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace")
            with self._lock:
                self.output.append(line)

    def text(self) -> str:
        """Everything the child wrote so far."""
        if self.log_path is not None:
            try:
                return self.log_path.read_text(errors="replace")
            except FileNotFoundError:
                return ""
        with self._lock:
            return "".join(self.output)

    def tail(self, lines: int = 60) -> str:
        return "".join(self.text().splitlines(keepends=True)[-lines:])

    def tail_note(self) -> str:
        where = f" (log: {self.log_path})" if self.log_path else ""
        tail = self.tail(30)
        return f"{where}:\n{tail}" if tail else where

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Send `sig` to the process and wait; SIGKILL its whole group if it lingers."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the process and everything in its session (a crash, for fault tests)."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
