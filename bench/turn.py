"""Our TURN server against coturn under the same turnutils_uclient load.

    .venv/bin/python bench/turn.py                   # all loads
    .venv/bin/python bench/turn.py --loads call      # one load
    .venv/bin/python bench/turn.py --workers         # also ours as 2 SO_REUSEPORT workers
    .venv/bin/python bench/turn.py --asyncio         # also ours on the asyncio UDP path
    .venv/bin/python bench/turn.py --transport tls --loads call --allocations 0
                                                     # clients over TLS (or tcp) instead of UDP

For each load, starts a fresh server (ours: ``python -m facecall.turn`` on uvloop; coturn:
``turnserver`` with the equivalent configuration: loopback listener, REST secret, relay ports
61000-65535, loopback peers allowed), an echo ``turnutils_peer``, runs ``turnutils_uclient``
and prints loss, average RTT and server CPU per relayed packet (utime+stime of the server
process from /proc, divided by the packets the server relayed: every message is relayed
twice, client->peer and peer->client), then the ratio ours/coturn. It also times 500
sequential Allocate transactions (401 challenge + authenticated Allocate) per server.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facecall.turn import stun
from facecall.turn.auth import long_term_key
from facecall.turn.rest import ephemeral_credentials
from facecall.turn.tls import write_self_signed
from procstat import cpu_times, exit_on_sigterm, udp_and_tcp_free_port

SECRET = "bench-secret"

# name: (clients, interval ms, message bytes, messages per client)
LOADS: dict[str, tuple[int, int, int, int]] = {
    "call": (100, 20, 1000, 500),  # 100 allocations x 50 pkt/s x 1000 B, 10 s
    "20k": (200, 10, 100, 1000),  # 20k msg/s from clients, 10 s
    "45k": (450, 10, 100, 1000),  # 45k msg/s from clients, 10 s
}


@dataclass
class Result:
    sent: int
    received: int
    lost: int
    rtt_ms: float
    user_seconds: float
    system_seconds: float

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds

    @property
    def relayed(self) -> int:
        return self.sent + self.received

    @property
    def us_per_packet(self) -> float:
        return self.cpu_seconds / max(self.relayed, 1) * 1e6

    @property
    def loss(self) -> float:
        return self.lost / max(self.sent, 1) * 100


def wait_ready(port: int, timeout: float = 10) -> None:
    """Until the server answers a STUN Binding on UDP."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, os.urandom(12))
            sock.sendto(request.encode(), ("127.0.0.1", port))
            try:
                sock.recv(1500)
                return
            except TimeoutError:
                continue
    raise RuntimeError(f"server on {port} did not come up")


def start_ours(
    port: int, log: Path, workers: int = 1, udp_io: str = "auto",
    tls: tuple[int, Path, Path] | None = None,
) -> subprocess.Popen[bytes]:
    """``tls``: (port, certificate, key) of a TLS listener besides UDP/TCP on ``port``."""
    tls_options = [] if tls is None else [
        "--turn-tls-listen", f"127.0.0.1:{tls[0]}", "--turn-tls-cert", str(tls[1]),
        "--turn-tls-key", str(tls[2])]
    return subprocess.Popen(
        [sys.executable, "-m", "facecall.turn", "--workers", str(workers), "--turn-udp-io", udp_io,
         "--turn-listen", f"127.0.0.1:{port}", *tls_options,
         "--turn-secret", SECRET, "--turn-allow-peer", "127.0.0.0/8",
         "--turn-relay-ports", "61000-65535", "--turn-user-quota", "5000",
         "--turn-total-quota", "5000", "--turn-connections-per-address", "5000",
         "--log-level", "warning"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )


def start_coturn(port: int, log: Path,
                 tls: tuple[int, Path, Path] | None = None) -> subprocess.Popen[bytes]:
    tls_options = ["--no-tls"] if tls is None else [
        f"--tls-listening-port={tls[0]}", f"--cert={tls[1]}", f"--pkey={tls[2]}"]
    return subprocess.Popen(
        ["turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
         "--relay-ip=127.0.0.1", "--min-port=61000", "--max-port=65535",
         "--allow-loopback-peers", *tls_options, "--no-dtls", "--realm=facecall",
         "--use-auth-secret", f"--static-auth-secret={SECRET}", "--no-cli",
         "--no-multicast-peers", f"--log-file={log}", "--no-stdout-log", "--simple-log",
         f"--pidfile={log}.pid"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


#: turnutils_uclient's options for the client-to-server transport
TRANSPORT_OPTIONS = {"udp": [], "tcp": ["-t"], "tls": ["-t", "-S"]}


def run_uclient(port: int, peer_port: int, load: tuple[int, int, int, int],
                transport: str = "udp") -> str:
    clients, interval, size, count = load
    out = subprocess.run(
        ["turnutils_uclient", *TRANSPORT_OPTIONS[transport], "-p", str(port), "-W", SECRET,
         "-u", "bench", "-e", "127.0.0.1", "-r", str(peer_port), "-c", "-l", str(size),
         "-m", str(clients), "-z", str(interval), "-n", str(count), "127.0.0.1"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    return out.stdout + out.stderr


def parse(output: str, cpu: tuple[float, float]) -> Result:
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n", output)
    lost = re.search(r"Total lost packets (\d+)", output)
    rtt = re.search(r"Average round trip delay ([\d.]+) ms", output)
    if not totals or not lost or not rtt:
        raise RuntimeError("uclient output not understood:\n" + output[-3000:])
    sent, received = map(int, totals[-1])
    return Result(sent, received, int(lost.group(1)), float(rtt.group(1)), *cpu)


def time_allocations(port: int, count: int) -> list[float]:
    """Seconds per Allocate (401 challenge, then the signed request), one at a time."""
    username, password = ephemeral_credentials(SECRET, "setup", 3600, time.time())
    key = long_term_key(username, "facecall", password)
    sockets, times = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(2)
            sockets.append(sock)
            transport = [(stun.REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))]
            start = time.perf_counter()
            first = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, os.urandom(12),
                                 list(transport))
            sock.sendto(first.encode(), ("127.0.0.1", port))
            challenge = stun.parse_message(sock.recv(1500))
            nonce = challenge.get(stun.NONCE) or b""
            second = stun.Message(
                stun.Method.ALLOCATE, stun.Class.REQUEST, os.urandom(12),
                [*transport, (stun.USERNAME, username.encode()), (stun.REALM, b"facecall"),
                 (stun.NONCE, nonce)],
            )
            sock.sendto(second.encode(integrity_key=key), ("127.0.0.1", port))
            response = stun.parse_message(sock.recv(1500))
            times.append(time.perf_counter() - start)
            if response.message_class != stun.Class.SUCCESS:
                raise RuntimeError(f"allocation {len(times)} failed")
    finally:
        for sock in sockets:
            sock.close()
    return times


def measure(kind: str, load_name: str | None, workdir: Path, allocations: int,
            transport: str = "udp") -> object:
    port, peer_port = udp_and_tcp_free_port(), udp_and_tcp_free_port()
    log = workdir / f"{kind}.log"
    tls = None
    if transport == "tls":
        cert, key = write_self_signed(workdir, ["127.0.0.1", "localhost"])
        tls = (udp_and_tcp_free_port(), cert, key)
    if kind == "coturn":
        server = start_coturn(port, log, tls)
    else:
        server = start_ours(port, log, workers=2 if kind == "ours-2w" else 1,
                            udp_io="asyncio" if kind == "ours-aio" else "auto", tls=tls)
    peer = subprocess.Popen(["turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port)
        time.sleep(0.5)
        if load_name is None:
            return time_allocations(port, allocations)
        user, system = cpu_times(server.pid, children=True)
        output = run_uclient(tls[0] if tls else port, peer_port, LOADS[load_name], transport)
        user_after, system_after = cpu_times(server.pid, children=True)
        return parse(output, (user_after - user, system_after - system))
    finally:
        peer.terminate()
        server.terminate()
        for process in (peer, server):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--loads", nargs="*", default=list(LOADS), choices=list(LOADS))
    parser.add_argument("--allocations", type=int, default=500)
    parser.add_argument("--workers", action="store_true",
                        help="also run ours as 2 SO_REUSEPORT worker processes")
    parser.add_argument("--transport", choices=list(TRANSPORT_OPTIONS), default="udp",
                        help="how the clients reach the server (the relay to the peer is UDP)")
    parser.add_argument("--asyncio", action="store_true",
                        help="also run ours on the asyncio UDP path (ours-aio; ours takes the "
                        "batched path where available)")
    args = parser.parse_args()
    kinds = ("ours", *(("ours-aio",) if args.asyncio else ()),
             *(("ours-2w",) if args.workers else ()), "coturn")
    with tempfile.TemporaryDirectory(prefix="turn-bench-") as tmp:
        workdir = Path(tmp)
        print(f"clients over {args.transport}")
        print(f"{'load':6} {'server':7} {'sent':>8} {'recv':>8} {'loss %':>7} {'rtt ms':>7} "
              f"{'user s':>6} {'sys s':>6} {'us/pkt':>7}")
        for load_name in args.loads:
            results = {}
            for kind in kinds:
                r = measure(kind, load_name, workdir, 0, args.transport)
                assert isinstance(r, Result)
                results[kind] = r
                print(f"{load_name:6} {kind:7} {r.sent:8} {r.received:8} {r.loss:7.3f} "
                      f"{r.rtt_ms:7.2f} {r.user_seconds:6.2f} {r.system_seconds:6.2f} "
                      f"{r.us_per_packet:7.2f}", flush=True)
            for kind in kinds[:-1]:
                ratio = results[kind].us_per_packet / max(results["coturn"].us_per_packet, 1e-9)
                print(f"{load_name:6} ratio {kind}/coturn CPU per relayed packet: {ratio:.2f}")
        if args.allocations:
            for kind in ("ours", "coturn"):
                times = measure(kind, None, workdir, args.allocations)
                assert isinstance(times, list)
                times.sort()
                print(f"allocate {kind:7} n={len(times)} median {times[len(times) // 2] * 1e3:.2f} ms"
                      f"  p99 {times[int(len(times) * 0.99)] * 1e3:.2f} ms"
                      f"  max {times[-1] * 1e3:.2f} ms")


if __name__ == "__main__":
    exit_on_sigterm()
    main()
