"""Relay-only media (`iceTransportPolicy: "relay"`) through our own TURN server."""

from __future__ import annotations

from playwright.async_api import expect

from facecall.turn.server import TurnServer
from tests.web.conftest import PersonFactory


def relayed_bytes(turn: TurnServer) -> int:
    return sum(a.usage.bytes_to_peer + a.usage.bytes_from_peer for a in turn.allocations.values())


async def test_relay_only_call_goes_through_our_turn_server(people: PersonFactory, turn: TurnServer) -> None:
    bob = await people("bob")
    alice = await people("alice", query="?relay=1")  # the URL switch; the checkbox shows it
    await expect(alice.page.get_by_label("Relay all media through the server")).to_be_checked()
    await expect(bob.page.get_by_label("Relay all media through the server")).not_to_be_checked()

    await alice.call("bob", "video")
    await bob.expect_ringing("alice")
    await bob.accept()
    diag = await alice.wait_connected()
    await bob.wait_connected()

    # Alice's side of the selected pair is a TURN relay candidate; Bob sees the relay's address.
    assert diag["stats"]["localCandidateType"] == "relay", diag
    bob_diag = await bob.diagnostics()
    assert bob_diag["stats"]["remoteCandidateType"] == "relay", bob_diag
    assert relayed_bytes(turn) > 0
    await expect(alice.page.locator("#quality-text")).to_contain_text("relayed")
    before = relayed_bytes(turn)
    await bob.wait_for(lambda d: relayed_bytes(turn) > before + 10_000, "receiving media through the relay")
    await alice.hang_up()
    await expect(bob.page.locator("#home-view")).to_be_visible()
