"""facecall.turn: our STUN (RFC 8489) / TURN (RFC 8656) server; see docs/turn.md.

Public API: :class:`facecall.turn.server.TurnServer`, :class:`facecall.turn.config.TurnConfig`,
:func:`facecall.turn.rest.ephemeral_credentials`, and :mod:`facecall.turn.cli`
(``add_turn_arguments``, ``run_turn``).
"""
