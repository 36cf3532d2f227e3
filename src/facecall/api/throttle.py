"""Rate limits for the routes that cost a password hash: sign-up and sign-in.

Each argon2id hash costs ~0.1 s of a core, so these routes are where one client could spend the
node's CPU, and sign-in is where a password is guessed. Three limits, each a token bucket per
key:

- attempts per client address (sign-ups and sign-ins together): ``Settings.auth_attempts_per_minute``
  with a burst of ``Settings.auth_attempt_burst``;
- failed sign-ins per account *and* client address: ``Settings.sign_in_failures_per_hour`` with a
  burst of ``Settings.sign_in_failure_burst`` -- one guesser locks out only itself, not the
  account's owner signing in from elsewhere;
- failed sign-ins per account from any address: ``Settings.account_sign_in_failures_per_hour``
  with a burst of ``Settings.account_sign_in_failure_burst`` -- guesses spread over many
  addresses are bounded too (NIST SP 800-63B §5.2.2: no more than 100 failed attempts on one
  account). Reaching it locks the account's password sign-in until tokens come back; devices
  already signed in keep working, and a sign-in that shows a device token of the account (a
  browser or app signing in again on its own device) is not held by it: guessers elsewhere
  cannot lock the owner out of the devices they use (the "device cookie" of OWASP's
  authentication cheat sheet). The first two limits still apply to it, and the second also
  per device: whoever stole a device's token gets no more guesses by spreading them over
  addresses.

A refused attempt costs no hash.

A refusal is ``429 Too Many Requests`` with ``Retry-After`` (RFC 6585 §4). Behind a reverse
proxy the client address is the one uvicorn takes from ``X-Forwarded-For`` when the proxy is
trusted (``FORWARDED_ALLOW_IPS``); a rate of 0 turns a limit off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fastapi import HTTPException, Request, status

from facecall.ratelimit import KeyedRateLimit


def too_many(retry_after: float, detail: str) -> HTTPException:
    """A 429 that says when to come back (whole seconds, RFC 9110 §10.2.3)."""
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=detail,
                         headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


def client_address(request: Request) -> str:
    """The client's address (the proxy's ``X-Forwarded-For`` when uvicorn trusts the proxy)."""
    return request.client.host if request.client else "unknown"


class AuthThrottle:
    """The three limits of sign-up / sign-in (see the module docstring)."""

    def __init__(self, attempts_per_minute: float, attempt_burst: float,
                 failures_per_hour: float, failure_burst: float,
                 account_failures_per_hour: float, account_failure_burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = KeyedRateLimit(attempts_per_minute / 60.0, attempt_burst, clock=clock)
        self.failures = KeyedRateLimit(failures_per_hour / 3600.0, failure_burst, clock=clock)
        self.account_failures = KeyedRateLimit(account_failures_per_hour / 3600.0,
                                               account_failure_burst, clock=clock)

    def attempt(self, request: Request) -> None:
        """Count an attempt from the request's client address, or raise 429."""
        if wait := self.attempts.take(client_address(request)):
            raise too_many(wait, "too many sign-up or sign-in attempts from this address; "
                                 "retry later")

    def sign_in_attempt(self, request: Request, username: str, *, device_id: str | None = None) -> None:
        """Spend one of ``username``'s failed sign-ins before its password is checked, so that
        guesses sent at once cannot all get through, or raise 429: from this address, and in
        all — or, when the client showed the token of its device ``device_id`` of the account,
        from that device. A sign-in that succeeds, or is not checked at all, gives them back
        (:meth:`give_back`)."""
        account = username.lower()
        pair = f"{account}\n{client_address(request)}"
        if wait := self.failures.take(pair):
            raise too_many(wait, "too many failed sign-ins for this account from this address; "
                                 "retry later")
        if (device := self._device_key(account, device_id)) is not None:
            if wait := self.failures.take(device):
                self.failures.give_back(pair)
                raise too_many(wait, "too many failed sign-ins for this account on this device; "
                                     "retry later")
            return
        if wait := self.account_failures.take(account):
            self.failures.give_back(pair)
            raise too_many(wait, "too many failed sign-ins for this account; retry later")

    def give_back(self, request: Request, username: str, *, device_id: str | None = None) -> None:
        """That sign-in of ``username`` was not a failed one (right password, or not checked);
        ``device_id`` as it was given to :meth:`sign_in_attempt`."""
        account = username.lower()
        self.failures.give_back(f"{account}\n{client_address(request)}")
        if (device := self._device_key(account, device_id)) is not None:
            self.failures.give_back(device)
        else:
            self.account_failures.give_back(account)

    def _device_key(self, account: str, device_id: str | None) -> str | None:
        """The key of the failures counted per device instead of per account, or None: no
        device shown, or no limit of failures per address and device (rate 0), when the
        account-wide limit stays the one that holds."""
        if device_id is None or self.failures.rate <= 0:
            return None
        return f"{account}\ndevice {device_id}"
