"""HTTPS connections on the node's own port: what a connection costs the node now that it runs
each TLS handshake itself (``facecall.api.tls_transport``), beside uvicorn running them
(``bench/serve_uvicorn_tls.py``, the code before ``f85449f``) in the same run.

Each of ``--clients`` loops opens a new TLS connection (TLS 1.3, the node's self-signed
certificate), sends ``GET /healthz`` with ``Connection: close`` and reads to the end. The
server's CPU comes from /proc; the two servers take turns, ``--rounds`` times, and the figures
are medians over the rounds.

    .venv/bin/python bench/https_connections.py --clients 8 --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facecall.turn.tls import write_self_signed
from procstat import cpu_seconds, exit_on_sigterm, free_port

HERE = Path(__file__).resolve().parent
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
SERVERS = {
    "facecall": [sys.executable, "-m", "facecall"],
    "uvicorn's TLS": [sys.executable, str(HERE / "serve_uvicorn_tls.py")],
}


async def one_connection(port: int, context: ssl.SSLContext) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(REQUEST)
    reply = await reader.read()
    writer.close()
    if not reply.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected reply: {reply[:80]!r}")


async def load(port: int, context: ssl.SSLContext, clients: int, seconds: float) -> int:
    done = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await one_connection(port, context)
            done += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


async def measure(name: str, workdir: Path, cert: Path, key: Path,
                  args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    db = workdir / f"{name.split()[0].strip(chr(39))}-{port}.db"
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once per round, before the clock runs)
        [*SERVERS[name], "serve", "--no-turn", "--port", str(port), "--tls-cert", str(cert),
         "--tls-key", str(key), "--database-url", f"sqlite:///{db}", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "FACECALL_HTTP_HEAD_TIMEOUT": "10"})
    context = ssl.create_default_context(cafile=str(cert))
    try:
        async with httpx.AsyncClient(verify=context) as http:
            for _ in range(200):
                try:
                    if (await http.get(f"https://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{name} did not start")
        await load(port, context, args.clients, 1.0)  # warm-up
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        connections = await load(port, context, args.clients, args.seconds)
        cpu, wall = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(15)
    return {"connections_per_s": connections / wall, "server_cpu_ms": 1000 * cpu / connections}


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cert, key = write_self_signed(workdir / "tls", ["127.0.0.1"])
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in SERVERS}
        ratios: list[float] = []
        for i in range(args.rounds):
            order = list(SERVERS) if i % 2 == 0 else list(reversed(SERVERS))
            this_round = {name: await measure(name, workdir, cert, key, args) for name in order}
            for name, figures in this_round.items():
                rounds[name].append(figures)
            ours, anchor = this_round["facecall"], this_round["uvicorn's TLS"]
            ratios.append(ours["server_cpu_ms"] / anchor["server_cpu_ms"])
            print(f"round {i + 1}: " + "; ".join(
                f"{n} {f['connections_per_s']:.0f}/s, {f['server_cpu_ms']:.2f} ms CPU"
                for n, f in this_round.items()), file=sys.stderr)
    print(f"{'server':16} {'connections/s':>14} {'server CPU per connection':>26}")
    for name, figures in rounds.items():
        rate = statistics.median(f["connections_per_s"] for f in figures)
        cpu = statistics.median(f["server_cpu_ms"] for f in figures)
        print(f"{name:16} {rate:14.0f} {cpu:23.2f} ms")
    print(f"ratio facecall / uvicorn's TLS, CPU per connection: {statistics.median(ratios):.2f} "
          f"(rounds {min(ratios):.2f}-{max(ratios):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent connecting clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per server and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the servers taking turns")
    exit_on_sigterm()
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
