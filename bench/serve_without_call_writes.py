"""``facecall`` with its call writes skipped: a measuring instrument, never a server to run.

``bench/signaling.py --without-call-writes`` starts the server through this script to find the
ceiling of any work on the store: what a call set-up costs when the three durable writes of
``call.start``, ``call.answer`` and ``call.hang-up`` cost nothing. Everything else runs as in
``facecall serve``: the rows and the snapshot of each write are still built and validated, the
callee lookups and the busy and glare reads still run; only the statements and the ``COMMIT``
of the ``calls``, ``call_participants`` and ``call_device_legs`` writes are skipped (the write
still yields to the event loop once, as a group-committed one does). Nothing about a call is
stored, so this process breaks every promise of docs/operations.md ("Durability").

    .venv/bin/python bench/serve_without_call_writes.py serve --no-turn --port 8099
"""

from __future__ import annotations

import asyncio
import sys

from facecall.cli import main
from facecall.store import calls
from facecall.store.records import CallWrite


async def create_call_unstored(self: calls.CallsRepository, call: CallWrite) -> int:
    """:meth:`CallsRepository.create_call` up to its write."""
    calls._call_values(call), calls._participant_values(call), calls._leg_values(call)
    await asyncio.sleep(0)
    return 1


async def save_call_unstored(self: calls.CallsRepository, call: CallWrite, expected_version: int) -> int:
    """:meth:`CallsRepository.save_call` up to its write."""
    calls._call_values(call), calls._participant_values(call), calls._leg_values(call)
    await asyncio.sleep(0)
    return expected_version + 1


if __name__ == "__main__":
    print("facecall: call writes are skipped in this process (a benchmark ceiling); "
          "nothing about calls is stored", file=sys.stderr)
    calls.CallsRepository.create_call = create_call_unstored  # type: ignore[method-assign]
    calls.CallsRepository.save_call = save_call_unstored  # type: ignore[method-assign]
    sys.exit(main())
