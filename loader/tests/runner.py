"""Running the loader as a child process (as at boot), with its JSON log and peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """Environment for running the loader in a child Python."""
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def loader_argv(address: str, preseed: Path, *extra: str, timeout: float = 10) -> list[str]:
    """The loader's command line, with JSON logs."""
    return [
        sys.executable,
        "-m",
        "loader.main",
        "--address",
        address,
        "--preseed-dir",
        str(preseed),
        "--timeout",
        f"{timeout:g}",
        "--log-format=json",
        *extra,
    ]


@dataclass
class Finished:
    rc: int
    stderr: str
    max_rss_kib: int  # -1 when not measured

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.splitlines()]


def start(argv: Sequence[str]) -> tuple[subprocess.Popen[bytes], Any]:
    """Start a child with stderr in a temp file; finish() collects it."""
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=child_env()
    )
    return proc, err


def finish(proc: subprocess.Popen[bytes], err: Any, timeout: float = 120.0) -> Finished:
    """Wait for a child started by start(); returns its exit code, stderr and peak RSS."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    err.seek(0)
    return Finished(proc.returncode, err.read().decode(errors="replace"), -1)  # RSS unknown


def run(argv: Sequence[str], timeout: float = 120.0) -> Finished:
    """Run a child to its end; returns its exit code, stderr and peak resident memory."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=child_env(),
        )
        try:
            _, status, usage = _wait4(proc.pid, timeout)
        except TimeoutError:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return Finished(proc.returncode, err.read().decode(errors="replace"), usage.ru_maxrss)


def _wait4(pid: int, timeout: float) -> tuple[int, int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return got, status, usage
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} still runs after {timeout}s")
        time.sleep(0.02)
