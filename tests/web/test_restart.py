"""The signaling server dies under a browser call (SIGKILL) and comes back: the call goes on."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, WebSocketRoute, expect

from facecall.server import turn_uris
from facecall.turn.server import TurnServer
from tests.live import ServerProcess, free_socket
from tests.web.people import STEP, Person


def node_for(turn: TurnServer, tmp_path: Path) -> ServerProcess:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    return ServerProcess(tmp_path / "facecall.db", port, ring_timeout=30.0, resume_grace=30.0,
                         turn_urls=turn_uris(turn))


@asynccontextmanager
async def node_with(browser: Browser, turn: TurnServer, tmp_path: Path,
                    *names: str) -> AsyncIterator[tuple[ServerProcess, list[Person]]]:
    """A node in its own process (so that it can be killed) and a signed-up page of it for each
    of ``names``; the pages are closed and the node stopped at the end."""
    node = node_for(turn, tmp_path)
    node.start()
    people: list[Person] = []
    try:
        await node.ready()
        for name in names:
            person = await Person.open(browser, node.base_url, name)
            people.append(person)
            await person.sign_in(device_name=f"{name}'s browser")
        yield node, people
    finally:
        for person in people:
            await person.close()
        node.stop()


async def test_a_call_goes_on_across_a_server_kill_9(browser: Browser, turn: TurnServer,
                                                      tmp_path: Path) -> None:
    """The node's mailboxes die with it, so neither page can resume; each names its call in its
    hello, stays in it, and the call goes on: the media never stopped, and a hang-up afterwards
    reaches the other side as an ordinary end of the call."""
    async with node_with(browser, turn, tmp_path, "bob", "alice") as (node, people):
        bob, alice = people
        await alice.call("bob", "video")
        await bob.expect_ringing("alice")
        await bob.accept()
        await bob.wait_connected()

        node.kill()
        for person in people:
            await expect(person.page.locator("#connection")).to_have_text(
                "Connection lost. Reconnecting…", timeout=STEP)
        node.start()
        await node.ready()
        for person in people:
            await expect(person.page.locator("#connection")).to_be_hidden(timeout=STEP)
            assert await person.page.evaluate("window.facecall.signaling") == "open"
            assert (await person.diagnostics())["phase"] == "active"
        frames = (await bob.diagnostics())["stats"]["framesDecoded"]
        await bob.wait_for(lambda d: d["stats"]["framesDecoded"] > frames + 10,
                           "decoding after the restart")
        await bob.hang_up()
        await expect(alice.page.locator("#home-view")).to_be_visible(timeout=STEP)
        await alice.expect_notice("Call ended")


async def test_a_call_answered_while_the_caller_was_away_connects(
        browser: Browser, turn: TurnServer, tmp_path: Path) -> None:
    """The node dies while bob's page rings; bob is back first (alice's page cannot reach the
    node yet) and accepts. The call.answered for alice was numbered by the new node while she
    was away; her welcome says bob's device is in the call, and her page connects the call."""
    away = True

    async def alice_network(ws: WebSocketRoute) -> None:
        if away:
            await ws.close()
        else:
            ws.connect_to_server()

    async with node_with(browser, turn, tmp_path, "bob", "alice") as (node, people):
        bob, alice = people
        await alice.page.route_web_socket(re.compile(r".*/v1/signaling.*"), alice_network)
        await alice.call("bob", "video")
        await bob.expect_ringing("alice")

        await node.crash_and_restart()
        await expect(bob.page.locator("#connection")).to_be_hidden(timeout=STEP)
        await bob.expect_ringing("alice")  # still ringing after the restart
        await bob.accept()
        await expect(alice.page.locator("#connection")).to_have_text(  # she is still away
            "Connection lost. Reconnecting…")
        assert (await alice.diagnostics())["phase"] in ("calling", "ringing")
        away = False
        await expect(alice.page.locator("#connection")).to_be_hidden(timeout=STEP)
        await alice.wait_connected()
        await bob.wait_connected()
        await alice.hang_up()
        await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)


async def test_an_answer_whose_reply_died_with_the_node_is_resent(
        browser: Browser, turn: TurnServer, tmp_path: Path) -> None:
    """bob accepts; his ``call.answer`` reaches the node, its ``ok`` never reaches his page, and
    the node dies. The new node cannot resume bob's page and no longer knows the request, but
    ``call.answer`` is idempotent for the device that answered: the page sends it again and the
    call connects (it used to fail the request, and end the call bob had just accepted)."""
    eaten: set[str] = set()
    answer_eaten = asyncio.Event()

    async def bob_network(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "call.answer" and not answer_eaten.is_set():
                eaten.add(frame["id"])
            server.send(message)

        def from_server(message: str | bytes) -> None:
            if json.loads(message).get("re") in eaten:
                eaten.clear()  # the resend (same id) is answered
                answer_eaten.set()
                return
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)

    async with node_with(browser, turn, tmp_path, "bob", "alice") as (node, people):
        bob, alice = people
        await bob.page.route_web_socket(re.compile(r".*/v1/signaling.*"), bob_network)
        await bob.page.reload()  # the route applies to connections opened from now on
        await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
        await alice.call("bob", "video")
        await bob.expect_ringing("alice")
        await bob.accept()
        await asyncio.wait_for(answer_eaten.wait(), STEP / 1000)
        await node.crash_and_restart()
        await expect(bob.page.locator("#connection")).to_be_hidden(timeout=STEP)
        await bob.wait_connected()
        await alice.wait_connected()
        await alice.hang_up()
        await expect(bob.page.locator("#home-view")).to_be_visible(timeout=STEP)
