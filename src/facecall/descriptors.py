"""The process's open-file limit, shared by every server part (API, signaling, TURN)."""

from __future__ import annotations

import resource


def raise_descriptor_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (setrlimit(2)) and return the
    soft limit now in force. A server holds a descriptor per connected device, relay socket and
    TCP/TLS client: under the common soft limit of 1024 it would run out long before its own
    caps. Where the hard limit is infinite, 2**20 is asked for."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have
    return soft
