"""Tests of the shared core, `common`.

Some checks need a Python process of their own: TensorFlow fixes its Keras and its
devices when it starts, and allows one MirroredStrategy per process. `FreshProcess`
runs such a check as `python -c CODE` in the repository. A test module starts its
processes when it is imported (at collection), so that their TensorFlow start-up, which
takes many seconds on a busy 2-core machine, overlaps the in-process tests; the test
that needs the answer waits for it.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


class FreshProcess:
    """`python -c code` started now in the repository; `result()` waits for it."""

    def __init__(self, code: str, *, env: dict | None = None, unset: tuple = ()):
        child_env = {key: value for key, value in os.environ.items() if key not in unset}
        child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        child_env.update(env or {})
        # Files, not pipes: a child that fills a pipe nobody reads yet would block.
        self._stdout = tempfile.TemporaryFile("w+")
        self._stderr = tempfile.TemporaryFile("w+")
        self._process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPOSITORY,
            env=child_env,
            stdout=self._stdout,
            stderr=self._stderr,
            text=True,
        )
        self._completed: subprocess.CompletedProcess | None = None
        atexit.register(self._stop)

    def result(self, timeout: float = 300) -> subprocess.CompletedProcess:
        if self._completed is None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._stop()
                raise
            self._stdout.seek(0)
            self._stderr.seek(0)
            self._completed = subprocess.CompletedProcess(
                self._process.args, self._process.returncode,
                self._stdout.read(), self._stderr.read(),
            )
        return self._completed

    def _stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
