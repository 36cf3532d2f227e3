"""Protocol parsing: every kind of bad frame gets its stable code; good frames parse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from facecall.signaling import protocol as p
from facecall.signaling.errors import ErrorCode, ProtocolError
from facecall.signaling.protocol import parse_client_message, parse_server_message
from facecall.signaling.schema import render

ROOT = Path(__file__).resolve().parents[2]


def frame(**fields: Any) -> str:
    return json.dumps({"v": 1, "id": "m1", **fields})


def code_of(raw: str | bytes, max_bytes: int = p.MAX_FRAME_BYTES) -> tuple[ErrorCode, str | None]:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw, max_bytes)
    return info.value.code, info.value.re


GOOD: list[dict[str, Any]] = [
    {"type": "hello", "resume_from": None},
    {"type": "hello"},
    {"type": "hello", "resume_from": 17},
    {"type": "ack", "seq": 0},
    {"type": "ping"},
    {"type": "call.start", "to": ["bob"], "media": "video"},
    {"type": "call.start", "to": [f"u{i}" for i in range(32)], "media": "audio"},
    {"type": "call.answer", "call_id": "c"},
    {"type": "call.decline", "call_id": "c"},
    {"type": "call.decline", "call_id": "c", "busy": True},
    {"type": "call.cancel", "call_id": "c"},
    {"type": "call.hangup", "call_id": "c"},
    {"type": "call.hangup", "call_id": "c", "reason": "no_media"},
    {"type": "call.hangup", "call_id": "c", "reason": "connection_lost"},
    {"type": "call.hangup", "call_id": "c", "reason": "identity_check_failed"},
    {"type": "call.rejoin", "call_id": "c", "to_device": "d"},
    {"type": "bye"},
    {"type": "call.invite", "call_id": "c", "to": ["carol", "dave"]},
    {
        "type": "call.sdp",
        "call_id": "c",
        "to_device": "d",
        "description": {"type": "offer", "sdp": "v=0\r\n" * 10},
        "ice_restart": True,
    },
    {"type": "call.sdp", "call_id": "c", "to_device": "d",
     "description": {"type": "answer", "sdp": "x" * p.MAX_SDP_CHARS}},
    {"type": "call.sdp", "call_id": "c", "to_device": "d",
     "description": {"type": "answer", "sdp": "v=0"}, "signature": "-_" * 42 + "gw"},
    {"type": "call.sdp", "call_id": "c", "to_device": "d",
     "description": {"type": "answer", "sdp": "v=0"}, "signature": None},
    {"type": "call.candidate", "call_id": "c", "to_device": "d", "candidate": None},
    {
        "type": "call.candidate",
        "call_id": "c",
        "to_device": "d",
        "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host",
                      "sdpMid": "0", "sdpMLineIndex": 0},
    },
    {"type": "sfu.join", "call_id": "c", "sdp": "v=0\r\n"},
    {"type": "sfu.join", "call_id": "c", "sdp": "x" * p.MAX_SDP_CHARS},
    {"type": "sfu.leave", "call_id": "c"},
]


@pytest.mark.parametrize("fields", GOOD, ids=lambda f: f["type"])
def test_good_frames_parse(fields: dict[str, Any]) -> None:
    msg = parse_client_message(frame(**fields))
    assert msg.type == fields["type"]
    assert msg.id == "m1"
    dumped = msg.model_dump(mode="json", exclude_unset=True)
    assert dumped == {"v": 1, "id": "m1", **fields}


def test_bytes_are_accepted() -> None:
    msg = parse_client_message(frame(type="ping").encode())
    assert isinstance(msg, p.Ping)


@pytest.mark.parametrize(
    "raw",
    ["", "{", "nope", '{"v":1,', b"\xff\xfe{}", "[1,2]", '"text"', "42", "null", "{}{}",
     # not JSON, though Python's json reads them (RFC 8259 §6) ...
     "NaN", '{"v":1,"id":"a","type":"ping","x":NaN}', b'{"v":1,"id":"a","type":"ping","x":-Infinity}',
     # ... and not UTF-8, though Python's json guesses UTF-16 and UTF-32 from bytes
     '{"v":1,"id":"a","type":"ping"}'.encode("utf-16"),
     '{"v":1,"id":"a","type":"ping"}'.encode("utf-32-le"),
     b'\xef\xbb\xbf{"v":1,"id":"a","type":"ping"}'],  # a byte-order mark
)
def test_malformed_json(raw: str | bytes) -> None:
    assert code_of(raw) == (ErrorCode.MALFORMED_JSON, None)


def test_too_large_counts_utf8_bytes() -> None:
    sdp = "é" * 600  # 1200 bytes, 600 characters
    raw = frame(type="call.sdp", call_id="c", to_device="d",
                description={"type": "offer", "sdp": sdp})
    raw = raw.replace("\\u00e9", "é")
    assert code_of(raw, max_bytes=1000) == (ErrorCode.TOO_LARGE, None)
    assert parse_client_message(raw, max_bytes=2000).type == "call.sdp"


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    raw = '{"v":1,"id":"a","type":"ping","x":' + "[" * 100_000 + "]" * 100_000 + "}"
    assert code_of(raw, max_bytes=10**6)[0] in (ErrorCode.MALFORMED_JSON, ErrorCode.INVALID_FIELD)


@pytest.mark.parametrize("version", [0, 2, "1", 1.0, True, None, [1]])
def test_unsupported_version(version: Any) -> None:
    raw = json.dumps({"v": version, "id": "m7", "type": "ping"})
    assert code_of(raw) == (ErrorCode.UNSUPPORTED_VERSION, "m7")


def test_missing_version_is_invalid_field() -> None:
    assert code_of(json.dumps({"id": "m7", "type": "ping"})) == (ErrorCode.INVALID_FIELD, "m7")


@pytest.mark.parametrize("bad_id", [None, "", "x" * 65, "has space", 5, ["a"], "\u00e9"])
def test_bad_id_is_invalid_field_without_re(bad_id: Any) -> None:
    assert code_of(json.dumps({"v": 1, "id": bad_id, "type": "ping"})) == (
        ErrorCode.INVALID_FIELD,
        None,
    )
    assert code_of(json.dumps({"v": 1, "type": "ping"})) == (ErrorCode.INVALID_FIELD, None)


@pytest.mark.parametrize("kind", [None, "", "call.explode", "ok", "call.ring", 3, {"a": 1}])
def test_unknown_type(kind: Any) -> None:
    fields = {} if kind is None else {"type": kind}
    assert code_of(frame(**fields)) == (ErrorCode.UNKNOWN_TYPE, "m1")


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "ping", "extra": 1},  # extra field
        {"type": "hello", "resume_from": -1},
        {"type": "hello", "resume_from": "3"},  # no coercion
        {"type": "hello", "resume_from": 1.5},
        {"type": "ack"},  # missing
        {"type": "ack", "seq": True},  # bool is not an int
        {"type": "call.start", "to": [], "media": "video"},
        {"type": "call.start", "to": ["bob"], "media": "hologram"},
        {"type": "call.start", "to": "bob", "media": "video"},
        {"type": "call.start", "to": ["bob", "bob"], "media": "video"},
        {"type": "call.start", "to": [f"u{i}" for i in range(33)], "media": "video"},
        {"type": "call.start", "to": ["x" * 65], "media": "video"},
        {"type": "call.answer", "call_id": 12},
        {"type": "call.answer", "call_id": ""},
        {"type": "call.decline", "call_id": "c", "busy": "yes"},
        {"type": "call.decline", "call_id": "c", "busy": 1},
        {"type": "call.invite", "call_id": "c", "to": []},
        {"type": "call.hangup", "call_id": "c", "reason": "declined"},  # not a hang-up's reason
        {"type": "call.hangup", "call_id": "c", "reason": None},
        {"type": "call.hangup", "call_id": "c", "reason": "x" * 200},
        {"type": "call.sdp", "call_id": "c", "to_device": "d",
         "description": {"type": "pranswer", "sdp": "v=0"}},
        {"type": "call.sdp", "call_id": "c", "to_device": "d",
         "description": {"type": "offer", "sdp": "x" * (p.MAX_SDP_CHARS + 1)}},
        {"type": "call.sdp", "call_id": "c", "to_device": "d",
         "description": {"type": "offer", "sdp": "v=0", "extra": 1}},
        {"type": "call.sdp", "call_id": "c", "description": {"type": "offer", "sdp": "v=0"}},
        *({"type": "call.sdp", "call_id": "c", "to_device": "d",  # a signature is 86 base64url
           "description": {"type": "offer", "sdp": "v=0"}, "signature": signature}
          for signature in ("", "A" * 85, "A" * 87, "A" * 5000, "A" * 85 + "B", "+" * 86,
                            "A" * 84 + "==", 42, ["A" * 86])),
        {"type": "call.candidate", "call_id": "c", "to_device": "d"},  # candidate is required
        {"type": "call.candidate", "call_id": "c", "to_device": "d",
         "candidate": {"candidate": "x", "sdpMLineIndex": -1}},
        {"type": "call.candidate", "call_id": "c", "to_device": "d",
         "candidate": {"candidate": "x" * (p.MAX_CANDIDATE_CHARS + 1)}},
        {"type": "sfu.join", "call_id": "c"},  # the offer is required
        {"type": "sfu.join", "call_id": "c", "sdp": ""},
        {"type": "sfu.join", "call_id": "c", "sdp": "x" * (p.MAX_SDP_CHARS + 1)},
        {"type": "sfu.join", "call_id": "c", "sdp": {"type": "offer", "sdp": "v=0"}},
        {"type": "sfu.join", "sdp": "v=0"},
        {"type": "sfu.join", "call_id": "c", "sdp": "v=0", "slots": 3},
        {"type": "sfu.leave"},
        {"type": "sfu.leave", "call_id": "c", "sdp": "v=0"},
    ],
)
def test_invalid_field(fields: dict[str, Any]) -> None:
    code, re = code_of(frame(**fields))
    assert (code, re) == (ErrorCode.INVALID_FIELD, "m1")


def test_error_reply_shape() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(frame(type="nope"))
    reply = p.error_reply(info.value)
    assert reply["re"] == "m1"
    assert reply["code"] == "unknown_type"
    parsed = parse_server_message(reply)
    assert isinstance(parsed, p.Error)
    assert parsed.code is ErrorCode.UNKNOWN_TYPE


def test_ok_reply_carries_result() -> None:
    reply = p.ok_reply("m1", call_id="c9")
    parsed = parse_server_message(reply)
    assert isinstance(parsed, p.Ok)
    assert parsed.re == "m1"
    assert parsed.model_extra == {"call_id": "c9"}


def test_the_slots_event_parses() -> None:
    slots = [{"mid": "2", "kind": "video", "user_id": "bob", "device_id": "b1"},
             {"mid": "3", "kind": "audio", "user_id": None, "device_id": None}]
    event = {"v": 1, "type": "sfu.slots", "seq": 9, "call_id": "c", "slots": slots}
    assert parse_server_message(event).type == "sfu.slots"
    for bad in ({**slots[0], "kind": "screen"}, {"mid": "2", "kind": "video", "user_id": "bob"}):
        with pytest.raises(ValidationError):
            parse_server_message({**event, "slots": [bad]})


def test_server_events_need_seq() -> None:
    event = {"v": 1, "type": "call.ended", "call_id": "c", "reason": "hung_up"}
    with pytest.raises(ValidationError):
        parse_server_message(event)
    assert parse_server_message({**event, "seq": 4}).type == "call.ended"
    with pytest.raises(ValidationError):
        parse_server_message({**event, "seq": 4, "reason": "boredom"})


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_input_never_crashes(raw: str | bytes) -> None:
    try:
        msg = parse_client_message(raw, max_bytes=200)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert exc.re is None or isinstance(exc.re, str)
    else:
        assert msg.v == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.sampled_from(sorted(p.CLIENT_MESSAGE_TYPES)),
    st.dictionaries(
        st.sampled_from(["to", "media", "call_id", "busy", "seq", "resume_from", "to_device",
                         "description", "candidate", "ice_restart", "sdp", "junk"]),
        json_values,
        max_size=5,
    ),
)
def test_random_fields_give_a_stable_code(kind: str, fields: dict[str, Any]) -> None:
    try:
        parse_client_message(frame(type=kind, **fields))
    except ProtocolError as exc:
        assert exc.code is ErrorCode.INVALID_FIELD
        assert exc.re == "m1"


def test_committed_schema_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "protocol.schema.json").read_text()
    assert committed == render(), "run: python -m facecall.signaling.schema > docs/protocol.schema.json"


def test_schema_names_every_message_type() -> None:
    schema = json.loads(render())
    client = schema["$defs"]["ClientMessage"]["discriminator"]["mapping"]
    server = schema["$defs"]["ServerMessage"]["discriminator"]["mapping"]
    assert set(client) == set(p.CLIENT_MESSAGE_TYPES)
    assert {"ok", "error", "welcome", "pong", "call.ring", "call.ended", "call.sdp"} <= set(server)
