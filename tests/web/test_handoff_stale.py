"""The browser's handoff bar never offers a call that has moved or ended (web/js/handoff.js).

A `welcome` lists the calls elsewhere as they stand (`welcome.elsewhere`). The `call.elsewhere`
events a resume replays after it are older than that list, and a fresh start does not carry
older ones over (signaling/session.py): either would bring an ended call back on the bar (an
audit found both).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

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
    ``(page side, node side)`` of each connection since :meth:`install`."""

    def __init__(self) -> None:
        self.connections: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self.down = False
        self.held: list[str | bytes] = []

    async def install(self, person: Person) -> None:
        """Route ``person``'s signaling through this network; reload the page onto it."""
        await person.page.route_web_socket(re.compile(r".*/v1/signaling.*"), self._route)
        await person.page.reload()
        await expect(person.page.locator("#home-view")).to_be_visible(timeout=STEP)
        await asyncio.sleep(1)  # welcome, acks
        self.connections[:] = self.connections[-1:]

    async def _route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        self.connections.append((ws, server))
        first = len(self.connections) == 1

        def to_page(message: str | bytes) -> None:
            if not (self.down and first):  # else lost on the way
                ws.send(message)

        def to_node(message: str | bytes) -> None:
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


async def test_a_resume_does_not_bring_back_a_call_that_ended_meanwhile(
        people: PersonFactory, sdk_device: MakeDevice) -> None:
    laptop = await sdk_device("alice")  # alice's call is on her laptop (SDK)
    bob = await sdk_device("bob")
    phone = await people("alice", signup=False, device_name="phone")
    net = Network()
    await net.install(phone)

    net.go_down()
    outgoing = await laptop.call("bob", video=False)
    incoming = await bob.next_call(timeout=10)
    await incoming.answer()  # call.elsewhere(active) to the phone: lost on the way
    await asyncio.sleep(0.5)
    await net.connections[0][1].close()  # the node sees the connection end: the resume grace starts
    await asyncio.sleep(0.5)
    await outgoing.hangup()  # call.elsewhere(ended) is not kept for a device not connected
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP
    await asyncio.sleep(0.5)
    assert len(net.connections) == 2, "the page reconnects at once; its hello waits for the network"
    net.come_back()  # the hello: the node still has the device (resume grace)
    await expect(phone.page.locator("#handoff")).to_be_hidden(timeout=STEP)
    await asyncio.sleep(2)  # the resume has had time to replay what the mailbox kept
    await expect(phone.page.locator("#handoff")).to_be_hidden()  # the call is over


async def test_a_page_reloaded_as_its_call_moved_does_not_offer_it_once_it_ended(
        people: PersonFactory, sdk_device: MakeDevice) -> None:
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
    await asyncio.sleep(0.5)  # acks

    net.go_down()
    taken = await phone.take_call(incoming.id)  # the laptop's page reloads right now
    await laptop.page.reload(wait_until="commit")
    await asyncio.sleep(1.5)
    assert len(net.connections) == 2, "the new page's connection"
    await taken.hangup()
    assert await incoming.wait_ended(10) is EndReason.HUNG_UP
    await asyncio.sleep(0.5)
    net.come_back()
    await expect(laptop.page.locator("#home-view")).to_be_visible(timeout=STEP)
    await asyncio.sleep(2)
    await expect(laptop.page.locator("#handoff")).to_be_hidden()  # the call is over
