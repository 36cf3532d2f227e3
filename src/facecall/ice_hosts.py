"""Host addresses for aioice's gatherings, chosen per gathering: the SDK's peer connections
(``Device(ice_host_addresses=...)``) and the SFU's transports (``FACECALL_SFU_HOST_ADDRESSES``).

aioice gathers host candidates (RFC 8445 §5.1.1.1) on every interface but never on loopback
(``aioice.ice.get_host_addresses`` skips 127.0.0.1 and ::1). :func:`host_addresses` chooses
the addresses for the gatherings started inside it — for example ``["127.0.0.1"]`` in a
loopback-only test namespace, or the one public address of a server with several interfaces —
through one small hook on that function (installed once; it only acts inside the context
manager, and a context variable carries the choice, so other aioice users in the process and
other tasks are unaffected). aioice 0.13's private function name is pinned and tested in
``tests/client/test_hooks.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import aioice.ice

T = TypeVar("T")

_chosen: ContextVar[tuple[str, ...] | None] = ContextVar("facecall_ice_host_addresses", default=None)
_original: Callable[[bool, bool], list[str]] | None = None


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _chosen.get()
    if chosen is None:
        assert _original is not None
        return _original(use_ipv4, use_ipv6)
    return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]


def install_host_address_hook() -> None:
    """Replace ``aioice.ice.get_host_addresses`` by one that honours :func:`host_addresses`."""
    global _original
    if _original is None:
        _original = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def host_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Gather host candidates on exactly ``addresses`` inside this block (``None``: aioice's own)."""
    install_host_address_hook()
    token = _chosen.set(tuple(addresses) if addresses is not None else None)
    try:
        yield
    finally:
        _chosen.reset(token)


def gathered_on(addresses: Sequence[str], coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """``coro`` as a task whose gatherings use exactly ``addresses``: the choice goes with the
    task's own context (a ``with host_addresses(...)`` around an ``await`` fails where the
    caller's steps run in different contexts, as a server's request handlers may)."""
    install_host_address_hook()
    context = contextvars.copy_context()
    context.run(_chosen.set, tuple(addresses))
    return asyncio.get_running_loop().create_task(coro, context=context)


def ip_address(value: str) -> str:
    """``value`` as an IPv4 or IPv6 literal in its normal form (:class:`ValueError` if it is
    not one)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("not an IP address") from None


def ip_addresses(addresses: Iterable[str], what: str) -> tuple[str, ...]:
    """``addresses`` as :func:`ip_address` takes them; :class:`ValueError` naming the address
    and ``what`` for anything else."""
    result = []
    for address in addresses:
        try:
            result.append(ip_address(address))
        except ValueError:
            raise ValueError(f"not an IP address: {address!r} ({what})") from None
    return tuple(result)
