"""The browser's handoff bar never offers a call that has moved or ended (web/js/handoff.js).

A `welcome` lists the calls elsewhere as they stand (`welcome.elsewhere`). The `call.elsewhere`
events a resume replays after it are older than that list, and a fresh start does not carry
older ones over (signaling/session.py): either would bring an ended call back on the bar (an
audit found both).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import WebSocketRoute, expect

from facecall.client import EndReason
from tests.live import LiveServer, MakeDevice, sdk_devices
from tests.web.conftest import PersonFactory
from tests.web.people import STEP, Person


@pytest.fixture
async def sdk_device(server: LiveServer) -> AsyncIterator[MakeDevice]:
    async with sdk_devices(server.base_url) as make:
        yield make


class Network:
    """The network under a page's signaling connections, in the test's hands.

    ``go_down()``: what the node sends the page's current connection is lost on the way, and
    what the page's next connection sends the node waits (its hello cannot get through).
    ``come_back()``: that next connection's waiting messages reach the node. ``connections``:
    ``(page side, node side)`` of each connection since :meth:`install`. What the node sends
    (lost or not) is kept by connection in ``from_node``."""

    def __init__(self) -> None:
        self.connections: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self.down = False
        self.held: list[str | bytes] = []
        self.from_node: dict[int, list[tuple[dict[str, Any], bool]]] = {}  # node side: (frame, passed on)
        self.acked = 0  # the highest seq the page acknowledged
        self.pings = 0

    async def install(self, person: Person) -> None:
        """Route ``person``'s signaling through this network; reload the page onto it."""
        await person.page.route_web_socket(re.compile(r".*/v1/signaling.*"), self._route)
        await person.page.reload()
        await expect(person.page.locator("#home-view")).to_be_visible(timeout=STEP)
        await until(lambda: len(self.connections) > 0, "connected")
        self.connections[:] = self.connections[-1:]
        await self.settled()

    async def _route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        self.connections.append((ws, server))
        first = len(self.connections) == 1
        frames = self.from_node.setdefault(id(server), [])

        def to_page(message: str | bytes) -> None:
            frame = json.loads(message)
            passed = not (self.down and first)  # else lost on the way
            if str(frame.get("re", "")).startswith("test-"):
                passed = False  # the answer to the test's own ping
            frames.append((frame, passed))
            if passed:
                ws.send(message)

        def to_node(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "ack":
                self.acked = max(self.acked, frame["seq"])
            if self.down and not first:
                self.held.append(message)
            else:
                server.send(message)

        ws.on_message(to_node)
        server.on_message(to_page)

    def go_down(self) -> None:
        self.down = True

    def come_back(self) -> None:
        self.down = False
        for message in self.held:
            self.connections[1][1].send(message)
        self.held.clear()

    def sent(self, index: int) -> list[dict[str, Any]]:
        """What the node sent on connection ``index``, lost or not."""
        return [frame for frame, _ in self.from_node[id(self.connections[index][1])]]

    async def settled(self) -> None:
        """Until the page has handled all the node sent on its newest connection, the welcome
        and any replay or carried events included: a ping of the test's is answered after all
        of that (the node answers in order), and the page acknowledges the events before it."""
        node = self.connections[-1][1]
        frames = self.from_node[id(node)]
        await until(lambda: any(f.get("type") == "welcome" for f, _ in frames), "welcomed")
        self.pings += 1
        ping = f"test-ping-{self.pings}"
        node.send(json.dumps({"v": 1, "id": ping, "type": "ping"}))
        await until(lambda: any(f.get("re") == ping for f, _ in frames), "answered the test's ping")
        seqs = [f["seq"] for f, passed in frames if passed and isinstance(f.get("seq"), int)]
        if seqs:
            await until(lambda: self.acked >= max(seqs), f"acknowledged {max(seqs)}")


async def until(check: Callable[[], bool], what: str, timeout: float = STEP / 1000) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not {what}"
        await asyncio.sleep(0.02)


async def offline(server: LiveServer, person: Person) -> None:
    """Until the node has seen ``person``'s page's connection end (no connection of its device
    has said hello since)."""
    device = (await person.diagnostics())["device"]
    bus = server.app.app.state.signaling.bus
    for _ in range(int(STEP / 20)):
        if not await bus.online([device]):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the node still has {person.username}'s device {device} online")


async def test_a_resume_does_not_bring_back_a_call_that_ended_meanwhile(
        people: PersonFactory, sdk_device: MakeDevice, server: LiveServer) -> None:
    laptop = await sdk_device("alice")  # alice's call is on her laptop (SDK)
    bob = await sdk_device("bob")
    phone = await people("alice", signup=False, device_name="phone")
    net = Network()
    await net.install(phone)

    net.go_down()
    outgoing = await laptop.call("bob", video=False)
    incoming = await bob.next_call(timeout=10)
    await incoming.answer()  # call.elsewhere(active) to the phone: lost on the way
    await until(lambda: any(f.get("type") == "call.elsewhere" and f.get("state") == "active"
                            for f in net.sent(0)), "call.elsewhere(active) sent to the phone")
    await net.connections[0][1].close()  # the node sees the connection end: the resume grace starts
    await offline(server, phone)
    # call.elsewhere(ended) is not kept for a device not connected (the reply to the hang-up
    # comes once the node has delivered what it caused)
    await outgoing.hangup()
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP
    await until(lambda: len(net.connections) >= 2, "the page reconnecting", 5)
    assert len(net.connections) == 2, "the page reconnects at once; its hello waits for the network"
    net.come_back()  # the hello: the node still has the device (resume grace)
    await expect(phone.page.locator("#handoff")).to_be_hidden(timeout=STEP)
    await net.settled()  # the resume has replayed what the mailbox kept, and the page handled it
    await expect(phone.page.locator("#handoff")).to_be_hidden()  # the call is over


async def test_a_page_reloaded_as_its_call_moved_does_not_offer_it_once_it_ended(
        people: PersonFactory, sdk_device: MakeDevice, server: LiveServer) -> None:
    """The laptop's page reloads as the phone takes its call: what its mailbox had about the
    call it held (call.ended handed_off, call.elsewhere active) is carried to the new page,
    numbered after its welcome. The call ends while the page loads (that call.elsewhere ended
    is not kept: the page is not connected). The new page must not offer the ended call."""
    bob = await sdk_device("bob")
    laptop = await people("alice", device_name="laptop")
    phone = await sdk_device("alice")
    net = Network()
    await net.install(laptop)

    await laptop.call("bob", "audio")
    incoming = await bob.next_call(timeout=10)
    await incoming.answer()
    await laptop.wait_for(lambda d: d["phase"] == "active", "in the call")
    await net.settled()  # acks

    net.go_down()
    taken = await phone.take_call(incoming.id)  # the laptop's page reloads right now
    await laptop.page.reload(wait_until="commit")
    await until(lambda: len(net.connections) >= 2, "the new page's connection")
    await offline(server, laptop)  # the old page's connection ended; the new one's hello waits
    assert len(net.connections) == 2, "the new page's connection"
    await taken.hangup()  # answered once the node has delivered what it caused
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP
    net.come_back()
    await expect(laptop.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await net.settled()  # the welcome and what was carried after it, handled
    await expect(laptop.page.locator("#handoff")).to_be_hidden()  # the call is over
