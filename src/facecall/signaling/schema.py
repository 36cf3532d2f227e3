"""Generate the machine-readable JSON Schema of the signaling protocol from its models.

Run ``python -m facecall.signaling.schema > docs/protocol.schema.json``; a test checks that the
committed file matches what this prints.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from .protocol import PROTOCOL_VERSION, ClientMessage, ServerMessage


def _defs(adapter: TypeAdapter[Any], name: str, defs: dict[str, Any]) -> None:
    schema = adapter.json_schema(ref_template="#/$defs/{model}")
    for key, value in schema.pop("$defs", {}).items():
        if key in defs and defs[key] != value:
            raise RuntimeError(f"two different models named {key}")
        defs[key] = value
    defs[name] = schema


def protocol_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every frame of protocol version 1."""
    defs: dict[str, Any] = {}
    _defs(TypeAdapter(ClientMessage), "ClientMessage", defs)
    _defs(TypeAdapter(ServerMessage), "ServerMessage", defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://facecall.invalid/protocol/v{PROTOCOL_VERSION}.schema.json",
        "title": f"facecall signaling protocol v{PROTOCOL_VERSION}",
        "description": (
            "Frames exchanged over the signaling WebSocket (see docs/protocol.md). "
            "ClientMessage: client to server; ServerMessage: replies and events."
        ),
        "oneOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}],
        "$defs": dict(sorted(defs.items())),
    }


def render() -> str:
    """The schema as the exact text of ``docs/protocol.schema.json``."""
    return json.dumps(protocol_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    """Print the schema to stdout."""
    print(render(), end="")


if __name__ == "__main__":
    main()
