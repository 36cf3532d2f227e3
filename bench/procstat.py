"""Small helpers shared by the benchmarks: process CPU and memory from /proc, ports, clean stops."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def cpu_times(pid: int, *, children: bool = False) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far, all threads (proc(5): fields 14 and 15 of
    /proc/PID/stat); with ``children``, its direct child processes' too (forked workers)."""
    pids = [pid]
    if children:
        pids += map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    user = system = 0.0
    for proc in pids:
        fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11]) / CLOCK_TICKS
        system += int(fields[12]) / CLOCK_TICKS
    return user, system


def exit_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, ``kill``) end this benchmark the way Ctrl-C does: as an
    exception, so that its ``finally`` blocks stop the servers it started and remove its
    temporary directories. Python's default for SIGTERM is to die on the spot, which left the
    server processes running and their databases behind."""

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM kills at once
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    return sum(cpu_times(pid))


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (proc(5): second field of /proc/PID/statm)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def udp_and_tcp_free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (STUN/TURN servers take one for both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
