"""Which ``sfu.members`` lists the SDK's group keys follow (facecall.client.group_keys): only
those of this device's current join, in the order the server made them, whatever the order in
which the reply and the events reach the SDK; malformed entries are skipped."""

from __future__ import annotations

from facecall.client.group_keys import MAX_EARLY, MAX_MEMBERS, MemberLists, parse_members


def entry(device: str, joined: int, user: str = "u") -> dict[str, object]:
    return {"user_id": user, "device_id": device, "joined": joined}


def test_parse_members_skips_what_is_not_a_member() -> None:
    wire = [entry("a", 1, "alice"), {"user_id": "bob", "device_id": "b"},  # no joined
            {"user_id": "carol", "device_id": "c", "joined": True},  # a bool is not a number
            {"user_id": 5, "device_id": "d", "joined": 2}, "e", None,
            {"user_id": "frank", "device_id": "f", "joined": "3"}]
    assert parse_members(wire) == {"a": ("alice", 1)}
    assert parse_members("not a list") == parse_members(None) == {}
    many = [entry(f"d{i}", i) for i in range(MAX_MEMBERS + 10)]
    assert len(parse_members(many)) == MAX_MEMBERS


def test_the_reply_is_followed_when_no_event_came_first() -> None:
    lists = MemberLists("me")
    assert lists.replied([entry("x", 5), entry("me", 7)]) == {"x": ("u", 5), "me": ("u", 7)}
    assert lists.joined == 7
    assert lists.event([entry("me", 7), entry("y", 8)]) == {"me": ("u", 7), "y": ("u", 8)}


def test_events_before_the_reply_wait_and_the_newest_of_this_join_wins() -> None:
    lists = MemberLists("me")
    assert lists.event([entry("me", 3), entry("x", 1)]) is None  # an earlier join of mine
    assert lists.event([entry("me", 7), entry("x", 1), entry("y", 8)]) is None
    assert lists.event([entry("me", 7), entry("y", 8)]) is None
    # the reply (this join: 7) is older than the last two events: the newest of them applies
    assert lists.replied([entry("x", 1), entry("me", 7)]) == {"me": ("u", 7), "y": ("u", 8)}
    # afterwards a list of the earlier join is stale, and so is one that does not name me
    assert lists.event([entry("me", 3), entry("x", 1)]) is None
    assert lists.event([entry("x", 1)]) is None


def test_a_reply_that_does_not_name_this_device_is_refused() -> None:
    lists = MemberLists("me")
    assert lists.replied([entry("x", 1)]) is None and lists.joined is None
    assert lists.replied("garbage") is None


def test_events_kept_before_the_reply_are_bounded() -> None:
    lists = MemberLists("me")
    for i in range(MAX_EARLY * 4):
        assert lists.event([entry("me", 9), entry(f"d{i}", i)]) is None
    last = MAX_EARLY * 4 - 1
    assert lists.replied([entry("me", 9)]) == {"me": ("u", 9), f"d{last}": ("u", last)}
