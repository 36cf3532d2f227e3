"""Reading another device's key when the server does not answer at once (a node restarting
during a call's set-up): the SDK tries again for a while instead of ending the call as a failed
identity check; a refusal (4xx) is an answer and ends the check at once."""

from __future__ import annotations

from typing import Any

import pytest

from facecall.client import identity as identity_module
from facecall.client.errors import ApiError
from facecall.client.identity import Identity
from facecall.e2ee.identity import IdentityError, new_private_key, public_key_text

THEIR_KEY = public_key_text(new_private_key())


class FlakyApi:
    """An API whose key list fails with ``failures`` (statuses, in order), then answers."""

    def __init__(self, *failures: int) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def identity_keys(self, token: str, user_id: str) -> dict[str, Any]:
        self.calls += 1
        if self.failures:
            status = self.failures.pop(0)
            raise ApiError(status, "unreachable" if status == 0 else "refused")
        return {"user_id": user_id, "devices": [{"device_id": "dev-b", "identity_key": THEIR_KEY}]}


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The real pauses, made instant; what was slept is recorded."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(identity_module.asyncio, "sleep", sleep)
    return slept


@pytest.mark.parametrize("status", [0, 500, 502, 503, 429])
async def test_a_server_that_does_not_answer_is_asked_again(status: int, short_pauses: list[float]) -> None:
    api = FlakyApi(status, status, status)
    identity = Identity()
    assert await identity.key_of(api, "token", "user-b", "dev-b") == THEIR_KEY  # type: ignore[arg-type]
    assert api.calls == 4
    assert short_pauses == list(identity_module.KEY_LOOKUP_PAUSES[:3])
    assert identity.pinned("dev-b") == ("user-b", THEIR_KEY)


async def test_no_answer_in_time_fails_the_check(short_pauses: list[float]) -> None:
    tries = len(identity_module.KEY_LOOKUP_PAUSES) + 1
    api = FlakyApi(*[503] * tries)
    identity = Identity()
    with pytest.raises(IdentityError, match="cannot read the identity keys of user user-b: HTTP 503"):
        await identity.key_of(api, "token", "user-b", "dev-b")  # type: ignore[arg-type]
    assert api.calls == tries
    assert sum(short_pauses) == pytest.approx(sum(identity_module.KEY_LOOKUP_PAUSES))
    assert 10 <= sum(identity_module.KEY_LOOKUP_PAUSES) <= 20  # long enough for a restart
    assert identity.pinned("dev-b") is None


@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_a_refusal_is_an_answer(status: int, short_pauses: list[float]) -> None:
    api = FlakyApi(status)
    identity = Identity()
    with pytest.raises(IdentityError, match=f"HTTP {status}"):
        await identity.key_of(api, "token", "user-b", "dev-b")  # type: ignore[arg-type]
    assert api.calls == 1 and short_pauses == []
    assert identity.pinned("dev-b") is None
