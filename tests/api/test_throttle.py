"""Sign-up / sign-in limits (facecall.api.throttle, facecall.ratelimit) and password hashing
off the event loop, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from facecall.api import auth
from facecall.ratelimit import KeyedRateLimit, TokenBucket
from tests.live import LiveServer, live_server

PASSWORD = "correct horse battery"


@asynccontextmanager
async def throttled(tmp_path: Path, **overrides: Any) -> AsyncIterator[LiveServer]:
    async with live_server(f"sqlite+aiosqlite:///{tmp_path / 'facecall.db'}", **overrides) as live:
        yield live


async def _sign_in(live: LiveServer, username: str, password: str = PASSWORD) -> Any:
    return await live.http.post("/v1/sessions", json={"username": username, "password": password})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keyed_rate_limit_refills_and_keeps_keys_apart() -> None:
    clock = FakeClock()
    limit = KeyedRateLimit(rate=0.5, burst=2, clock=clock)
    assert limit.take("a") == 0 and limit.take("a") == 0
    assert limit.take("a") == pytest.approx(2.0)  # one token in 2 s
    assert limit.take("b") == 0  # another key has its own bucket
    clock.now += 2.0
    assert limit.wait("a") == 0
    assert limit.take("a") == 0
    assert limit.take("a") > 0


def test_keyed_rate_limit_is_bounded_and_zero_rate_is_off() -> None:
    clock = FakeClock()
    limit = KeyedRateLimit(rate=1.0, burst=1, max_keys=3, clock=clock)
    for key in "abcde":
        limit.take(key)
    assert len(limit) == 3  # the least recently used went first
    assert limit.take("a") == 0  # forgotten: starts full again
    off = KeyedRateLimit(rate=0, burst=0)
    assert all(off.take("x") == 0 for _ in range(100))
    assert len(off) == 0


def test_token_bucket_wait() -> None:
    bucket = TokenBucket(rate=4.0, burst=1.0, now=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.25)
    assert bucket.take(0.25)
    assert TokenBucket(rate=0.0, burst=0.0, now=0.0).wait(5.0) == float("inf")


async def test_attempts_per_address_are_limited(tmp_path: Path) -> None:
    async with throttled(tmp_path, auth_attempts_per_minute=1.0, auth_attempt_burst=3) as live:
        await live.sign_up("first")
        assert (await _sign_in(live, "first")).status_code == 200
        assert (await _sign_in(live, "first", "wrong-password")).status_code == 401
        refused = await live.http.post("/v1/accounts", json={"username": "fourth",
                                                             "password": PASSWORD})
        assert refused.status_code == 429
        assert "from this address" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # nothing was created by the refused sign-up, and other routes are not limited
        assert await live.app.app.state.store.get_user_by_username("fourth") is None
        assert (await live.http.get("/healthz")).status_code == 200


def _from(address: str) -> dict[str, str]:
    """Headers of a request relayed by a trusted proxy (uvicorn trusts 127.0.0.1 by default)
    for a client at ``address``."""
    return {"X-Forwarded-For": address}


async def test_failed_sign_ins_per_account_and_address_are_limited(tmp_path: Path) -> None:
    """A guesser locks out itself, not the account: its owner, elsewhere, still signs in."""
    async with throttled(tmp_path, sign_in_failures_per_hour=1.0, sign_in_failure_burst=2) as live:
        await live.sign_up("victim")
        await live.sign_up("bystander")
        guesser, owner = _from("127.0.0.66"), _from("127.0.0.7")
        sign_in = "/v1/sessions"
        for _ in range(2):
            r = await live.http.post(sign_in, json={"username": "victim", "password": "guess-guess"},
                                     headers=guesser)
            assert r.status_code == 401
        locked = await live.http.post(sign_in, json={"username": "VICTIM", "password": PASSWORD},
                                      headers=guesser)  # the right password, any spelling: waits
        assert locked.status_code == 429
        assert "failed sign-ins for this account from this address" in locked.json()["detail"]
        assert int(locked.headers["retry-after"]) > 60
        r = await live.http.post(sign_in, json={"username": "victim", "password": PASSWORD},
                                 headers=owner)
        assert r.status_code == 200
        r = await live.http.post(sign_in, json={"username": "bystander", "password": PASSWORD},
                                 headers=guesser)
        assert r.status_code == 200
        # an unknown account is limited the same way (whether it exists does not show)
        for expected in (401, 401, 429):
            r = await live.http.post(sign_in, json={"username": "nobody-here",
                                                    "password": "guess-guess"}, headers=guesser)
            assert r.status_code == expected


async def test_failed_sign_ins_per_account_from_all_addresses_are_limited(tmp_path: Path) -> None:
    """Guesses spread over addresses are bounded too; a right password gives its tokens back."""
    async with throttled(tmp_path, account_sign_in_failures_per_hour=1.0,
                         account_sign_in_failure_burst=3) as live:
        await live.sign_up("target")
        r = await live.http.post("/v1/sessions", json={"username": "target", "password": PASSWORD},
                                 headers=_from("127.0.0.9"))
        assert r.status_code == 200  # costs nothing
        for i in range(3):
            r = await live.http.post("/v1/sessions", json={"username": "target",
                                                           "password": "guess-guess"},
                                     headers=_from(f"127.0.1.{i}"))
            assert r.status_code == 401
        r = await live.http.post("/v1/sessions", json={"username": "target", "password": PASSWORD},
                                 headers=_from("127.0.2.1"))
        assert r.status_code == 429
        assert r.json()["detail"] == "too many failed sign-ins for this account; retry later"


async def test_guessers_elsewhere_do_not_lock_the_owner_out_of_their_own_device(tmp_path: Path) -> None:
    """A sign-in that shows a device token of the account is not held by the account-wide
    limit that guesses from many addresses spent; any other token shown changes nothing."""
    async with throttled(tmp_path, account_sign_in_failures_per_hour=1.0,
                         account_sign_in_failure_burst=3) as live:
        account = await live.sign_up("owner")
        phone = await live.register_device(account["token"], "phone")
        other = await live.sign_up("other")
        others_phone = await live.register_device(other["token"], "phone")
        removed = await live.register_device(account["token"], "old tablet")
        assert (await live.http.delete(f"/v1/devices/{removed['device']['id']}", headers={
            "Authorization": f"Bearer {account['token']}"})).status_code == 204
        for i in range(3):  # a guesser spends the account's allowance from three addresses
            r = await live.http.post("/v1/sessions", json={"username": "owner", "password": "guess-guess"},
                                     headers=_from(f"127.0.1.{i}"))
            assert r.status_code == 401

        def shown(token: str) -> dict[str, str]:
            return {**_from("127.0.3.1"), "Authorization": f"Bearer {token}"}

        for token in (None, account["token"], others_phone["token"], removed["token"], "x" * 500):
            headers = shown(token) if token else _from("127.0.3.1")
            r = await live.http.post("/v1/sessions", json={"username": "owner", "password": PASSWORD},
                                     headers=headers)
            assert r.status_code == 429, token  # no device of this account: the limit holds
        r = await live.http.post("/v1/sessions", json={"username": "OWNER", "password": PASSWORD},
                                 headers=shown(phone["token"]))
        assert r.status_code == 200 and r.json()["user"]["username"] == "owner"
        wrong = await live.http.post("/v1/sessions", json={"username": "owner", "password": "nope-nope"},
                                     headers=shown(phone["token"]))
        assert wrong.status_code == 401  # still a wrong password, counted for this address
        r = await live.http.post("/v1/sessions", json={"username": "owner", "password": PASSWORD},
                                 headers=_from("127.0.3.2"))
        assert r.status_code == 429  # the owner's sign-in gave nothing back to the guessers


async def test_a_stolen_device_token_gets_no_more_guesses_over_many_addresses(tmp_path: Path) -> None:
    """Shown with a device token, failed sign-ins count per device as well as per address."""
    async with throttled(tmp_path, sign_in_failures_per_hour=1.0, sign_in_failure_burst=3) as live:
        account = await live.sign_up("owner")
        phone = await live.register_device(account["token"], "phone")
        stolen = {"Authorization": f"Bearer {phone['token']}"}
        for i in range(3):
            r = await live.http.post("/v1/sessions", json={"username": "owner", "password": "guess-guess"},
                                     headers={**stolen, **_from(f"127.0.4.{i}")})
            assert r.status_code == 401
        r = await live.http.post("/v1/sessions", json={"username": "owner", "password": PASSWORD},
                                 headers={**stolen, **_from("127.0.4.9")})
        assert r.status_code == 429
        assert r.json()["detail"] == "too many failed sign-ins for this account on this device; retry later"
        r = await live.http.post("/v1/sessions", json={"username": "owner", "password": PASSWORD},
                                 headers=_from("127.0.4.9"))
        assert r.status_code == 200  # without the device: the account's own allowance is whole


async def test_with_no_limit_per_address_a_device_token_meets_the_account_limit(tmp_path: Path) -> None:
    """FACECALL_SIGN_IN_FAILURES_PER_HOUR=0 turns the per-device count off too: a sign-in shown
    with a device token then meets the account-wide limit, as one without."""
    async with throttled(tmp_path, sign_in_failures_per_hour=0.0, account_sign_in_failures_per_hour=1.0,
                         account_sign_in_failure_burst=3) as live:
        account = await live.sign_up("owner")
        phone = await live.register_device(account["token"], "phone")
        stolen = {"Authorization": f"Bearer {phone['token']}"}
        codes = [(await live.http.post("/v1/sessions", json={"username": "owner", "password": "guess-guess"},
                                       headers={**stolen, **_from(f"127.0.5.{i}")})).status_code
                 for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]


async def test_password_hashing_leaves_the_event_loop_free(server: LiveServer) -> None:
    await server.sign_up("busy")
    sign_ins = [asyncio.create_task(_sign_in(server, "busy", "wrong-password")) for _ in range(4)]
    await asyncio.sleep(0.01)  # the sign-ins reached the server
    health = await server.http.get("/healthz")
    assert health.status_code == 200
    # argon2 runs on the password threads: /healthz was answered while the hashes ran
    assert not all(task.done() for task in sign_ins)
    assert [r.status_code for r in await asyncio.gather(*sign_ins)] == [401] * 4


async def test_too_many_hashes_at_once_get_503(server: LiveServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    await server.sign_up("crowd")
    monkeypatch.setattr(auth, "PASSWORD_QUEUE_LIMIT", 1)
    replies = await asyncio.gather(*(_sign_in(server, "crowd") for _ in range(3)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses[0] == 200 and 503 in statuses
    busy = next(r for r in replies if r.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    monkeypatch.undo()
    assert (await _sign_in(server, "crowd")).status_code == 200


async def test_guesses_sent_at_once_get_no_more_than_the_allowance(tmp_path: Path) -> None:
    async with throttled(tmp_path, sign_in_failures_per_hour=1.0, sign_in_failure_burst=3) as live:
        await live.sign_up("target")
        replies = await asyncio.gather(*(_sign_in(live, "target", f"guess-{i:04d}")
                                         for i in range(12)))
        statuses = [r.status_code for r in replies]
        assert statuses.count(401) == 3 and statuses.count(429) == 9
