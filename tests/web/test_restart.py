"""The signaling server dies under a browser call (SIGKILL) and comes back: the call goes on."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from facecall.server import turn_uris
from facecall.turn.server import TurnServer
from tests.live import ServerProcess, free_socket
from tests.web.people import STEP, Person


async def test_a_call_goes_on_across_a_server_kill_9(browser: Browser, turn: TurnServer,
                                                      tmp_path: Path) -> None:
    """The node's mailboxes die with it, so neither page can resume; each names its call in its
    hello, stays in it, and the call goes on: the media never stopped, and a hang-up afterwards
    reaches the other side as an ordinary end of the call."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    node = ServerProcess(tmp_path / "facecall.db", port, ring_timeout=30.0, resume_grace=30.0,
                         turn_urls=turn_uris(turn))
    node.start()
    people: list[Person] = []
    try:
        await node.ready()
        for name in ("bob", "alice"):
            person = await Person.open(browser, node.base_url, name)
            people.append(person)
            await person.sign_in(device_name=f"{name}'s browser")
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
        await alice.expect_alert("Call ended")
    finally:
        for person in people:
            await person.close()
        node.stop()
