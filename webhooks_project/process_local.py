"""One object per operating-system process, built lazily: prefork children (Celery, gunicorn)
must not share the sockets or threads their parent created before the fork."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ProcessLocal(Generic[T]):
    """`get()` returns this process's instance, building it with `factory` the first time."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._value: T | None = None

    def get(self) -> T:
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    self._value = self._factory()
                    self._pid = pid
        return self._value  # type: ignore[return-value]  # set above for this pid

    def current(self) -> T | None:
        """This process's instance if it has been built, else None."""
        return self._value if self._pid == os.getpid() else None
