"""Run `recsight serve` as a real process on a free loopback port (for kill and browser tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(
    model: Path,
    db: Path,
    api_key: str,
    port: int | None = None,
    extra: tuple[str, ...] = (),
    start_timeout: float = 60,
) -> Iterator[str]:
    """Start the service (`extra`: more `recsight serve` options), wait until /health answers
    (at most `start_timeout` seconds), yield its base URL, stop it after."""
    port = port or free_port()
    proc = start_raw(model, db, api_key, port, stderr=subprocess.PIPE, extra=extra)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, start_timeout)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, poll: float = 0.2) -> float:
    """Wait until the service at `url` answers /health; the seconds waited. RuntimeError when
    the process exits first (with its stderr's tail, if piped) or after `timeout` seconds."""
    t0 = time.perf_counter()
    while True:
        if proc.poll() is not None:
            tail = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"server exited: {tail}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"server did not start within {timeout:g} s")
        time.sleep(poll)


def start_raw(
    model: Path,
    db: Path,
    api_key: str,
    port: int,
    stderr: int = subprocess.DEVNULL,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    """Start the service without waiting (the caller stops it)."""
    env = {**os.environ, "RECSIGHT_API_KEY": api_key, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "recsight", "serve", "--model", str(model), "--db", str(db)]
    return subprocess.Popen(
        [*cmd, *extra, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=stderr
    )
