"""Long fuzz run of the STUN/TURN codec and request handler (the suite runs a short one).

    .venv/bin/python bench/turn_fuzz.py --messages 1000000 --seed 1

Feeds random, mutated and structure-aware messages (random attributes, correctly signed so
they pass authentication and reach the TURN handlers) to ``parse_message``, every typed
attribute decoder, ``TurnCore.handle_stun`` and the ChannelData path of a live allocation.
Fails (exit 1) if any exception escapes, a response does not parse or answers another
transaction, or the allocation bookkeeping is inconsistent afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time

from facecall.logs import configure_logging
from facecall.turn import stun
from facecall.turn.allocation import Allocation, FiveTuple
from facecall.turn.auth import long_term_key
from facecall.turn.config import TurnConfig
from facecall.turn.core import ClientContext, TurnCore

USER, PASSWORD, REALM = "fuzz", "fuzz-password", "facecall"
ATTRIBUTE_TYPES = [
    stun.USERNAME, stun.MESSAGE_INTEGRITY, stun.MESSAGE_INTEGRITY_SHA256, stun.FINGERPRINT,
    stun.REALM, stun.NONCE, stun.XOR_PEER_ADDRESS, stun.CHANNEL_NUMBER, stun.LIFETIME,
    stun.DATA, stun.REQUESTED_TRANSPORT, stun.REQUESTED_ADDRESS_FAMILY, stun.EVEN_PORT,
    stun.ADDITIONAL_ADDRESS_FAMILY, stun.ERROR_CODE, stun.SOFTWARE, stun.DONT_FRAGMENT,
    stun.RESERVATION_TOKEN, stun.PRIORITY, stun.ICE_CONTROLLING, 0x7FFF, 0xFFFF,
]
METHODS = [1, 3, 4, 6, 7, 8, 9, 0x0A, 0xFFF]


class Fuzzer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.key = long_term_key(USER, REALM, PASSWORD)
        self.sent: list[tuple[bytes, bytes]] = []  # (request transaction id, response)
        self.errors: list[str] = []

    def rand_bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def attribute_value(self, kind: int, tid: bytes) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5 and kind in (stun.XOR_PEER_ADDRESS, stun.XOR_MAPPED_ADDRESS):
            host = rng.choice(["127.0.0.1", "10.0.0.1", "::1", "8.8.8.8", "::ffff:127.0.0.1",
                               "169.254.169.254", "2001:db8::1", "0.0.0.0"])
            return stun.encode_xor_address((host, rng.randint(0, 65535)), tid)
        if roll < 0.5 and kind == stun.CHANNEL_NUMBER:
            return stun.encode_channel_number(rng.choice([0x4000, 0x4FFF, 0x7FFF, 0x3FFF, 0x8000,
                                                          rng.randint(0, 0xFFFF)]))
        if roll < 0.5 and kind in (stun.LIFETIME, stun.REQUESTED_TRANSPORT,
                                   stun.REQUESTED_ADDRESS_FAMILY):
            return rng.choice([b"\x00\x00\x00\x00", b"\x11\x00\x00\x00", b"\x02\x00\x00\x00",
                               b"\xff\xff\xff\xff", b"\x01\x00\x00\x00"])
        return self.rand_bytes(rng.choice([0, 1, 3, 4, 8, 20, 32, rng.randint(0, 600)]))

    def structured(self, nonce: str) -> tuple[bytes, bool]:
        """A message with random attributes; half of them correctly signed."""
        rng = self.rng
        tid = self.rand_bytes(12)
        kinds = [rng.choice(ATTRIBUTE_TYPES) if rng.random() < 0.9 else rng.randint(0, 0xFFFF)
                 for _ in range(rng.randint(0, 6))]
        attrs = [(k, self.attribute_value(k, tid)) for k in kinds
                 if k not in (stun.MESSAGE_INTEGRITY, stun.FINGERPRINT) or rng.random() < 0.2]
        signed = rng.random() < 0.5
        if signed:
            attrs += [(stun.USERNAME, USER.encode()), (stun.REALM, REALM.encode()),
                      (stun.NONCE, nonce.encode())]
        method = rng.choice(METHODS)
        cls = rng.choice([stun.Class.REQUEST] * 6 + list(stun.Class))
        try:
            data = stun.Message(method, cls, tid, attrs).encode(
                integrity_key=self.key if signed else None, fingerprint=rng.random() < 0.5
            )
        except stun.StunError:
            data = self.rand_bytes(20)
        return data, signed

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(7)
            if not buf:
                buf = bytearray(self.rand_bytes(rng.randint(1, 40)))
            if op == 0:
                i = rng.randrange(len(buf))
                buf[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                buf[rng.randrange(len(buf))] = rng.choice([0, 0xFF, 0x40, 0x7F, rng.randrange(256)])
            elif op == 2:
                del buf[rng.randrange(len(buf)):]
            elif op == 3:
                buf += self.rand_bytes(rng.randint(1, 16))
            elif op == 4 and len(buf) >= 4:
                buf[2:4] = rng.randrange(0x10000).to_bytes(2, "big")
            elif op == 5 and len(buf) > 24:
                i = 20 + 4 * rng.randrange((len(buf) - 20) // 4)
                buf[i : i + 2] = rng.choice(ATTRIBUTE_TYPES).to_bytes(2, "big")
            elif op == 6 and len(buf) > 24:
                i = 20 + 4 * rng.randrange((len(buf) - 20) // 4)
                buf[i + 2 : i + 4] = rng.randrange(0x200).to_bytes(2, "big")
        return bytes(buf)


def decode_everything(message: stun.Message) -> None:
    """Every typed decoder on every attribute: only StunError may come out."""
    for _, value in message.attributes:
        for decode in (
            lambda v: stun.decode_xor_address(v, message.transaction_id),
            stun.decode_address, stun.decode_error_code, stun.decode_uint32,
            stun.decode_channel_number, lambda v: stun.decode_text(v, 763),
        ):
            try:
                decode(value)
            except stun.StunError:
                pass
    stun.check_fingerprint(message)
    stun.check_message_integrity(message, b"k")


async def run(total: int, seed: int) -> int:
    loop = asyncio.get_running_loop()
    fuzzer = Fuzzer(seed)
    loop.set_exception_handler(lambda _, ctx: fuzzer.errors.append(str(ctx.get("exception"))))
    config = TurnConfig(udp_listen=[], tcp_listen=[], static_users={USER: PASSWORD},
                        allowed_peers=["127.0.0.0/8", "::1/128"], max_allocations_per_user=8)
    core = TurnCore(config, time.time)
    indexes: list[dict[object, Allocation]] = [{} for _ in range(4)]
    contexts = []
    for i, index in enumerate(indexes):
        def send(frame: bytes, i: int = i) -> None:
            fuzzer.sent.append((b"", frame))
        five_tuple = FiveTuple("udp", ("127.0.0.1", 40000 + i), ("127.0.0.1", 3478))
        contexts.append(
            ClientContext(five_tuple, send, stream=False, index=index, index_key=i)
        )
    seeds = [fuzzer.structured(core.auth.new_nonce())[0] for _ in range(64)]
    seeds.append(stun.encode_channel_data(0x4000, b"payload"))
    start = time.perf_counter()
    responses = 0
    for n in range(total):
        if n % 20000 == 0:
            nonce = core.auth.new_nonce()
            await asyncio.sleep(0)  # let Allocate tasks finish
            for _, frame in fuzzer.sent:
                stun.parse_message(frame)
            fuzzer.sent.clear()
            core.expire()
        roll = fuzzer.rng.random()
        if roll < 0.15:
            data = fuzzer.rand_bytes(fuzzer.rng.randint(0, 120))
        elif roll < 0.55:
            data = fuzzer.mutate(fuzzer.rng.choice(seeds))
        else:
            data, _ = fuzzer.structured(nonce)
            if fuzzer.rng.random() < 0.01:
                seeds[fuzzer.rng.randrange(len(seeds))] = data
        try:
            decode_everything(stun.parse_message(data))
        except stun.StunError:
            pass
        ctx = contexts[n % 4]
        if data[:1] and 0x40 <= data[0] < 0x80:
            allocation = ctx.index.get(ctx.index_key)
            if allocation is not None:
                allocation.on_channel_data(data)
        else:
            core.handle_stun(data, ctx)
        for _, frame in fuzzer.sent:
            responses += 1
            if stun.is_stun(frame) and frame[8:20] != data[8:20]:
                fuzzer.errors.append(f"response to another transaction: {frame.hex()}")
            if stun.is_stun(frame):
                stun.parse_message(frame)
        fuzzer.sent.clear()
    await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - start
    consistent = sum(core.per_user.values()) == len(core.allocations) and all(
        a.index.get(a.index_key) is a for a in core.allocations.values()
    )
    live = len(core.allocations)
    await core.close()
    consistent = consistent and all(not index for index in indexes) and not core.allocations
    print(f"messages: {total}  seed: {seed}  seconds: {elapsed:.1f}  "
          f"rate: {total / elapsed:,.0f}/s  responses: {responses}  "
          f"allocations live at end: {live}  exceptions: {len(fuzzer.errors)}  "
          f"bookkeeping consistent: {consistent}")
    for error in fuzzer.errors[:5]:
        print("  exception:", error)
    return 0 if consistent and not fuzzer.errors else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure_logging("warning")
    sys.exit(asyncio.run(run(args.messages, args.seed)))


if __name__ == "__main__":
    main()
