"""`validate.snapshot`: the JSON text the store keeps for a call, encoded with orjson."""

from __future__ import annotations

import json
import time

import pytest

from facecall.signaling.machine import CallMachine
from facecall.store import validate
from facecall.store.errors import InvalidInput


def test_a_call_snapshot_is_compact_json_that_reads_back_equal() -> None:
    machine = CallMachine.start(call_id="c" * 32, media="video", caller_user="u" * 32,
                                caller_device="d" * 32, callees={"v" * 32: ["e" * 32, "f" * 32]},
                                now=time.time())
    snapshot = machine.to_dict()
    text = validate.snapshot(snapshot)
    assert json.loads(text) == snapshot
    assert ", " not in text and ": " not in text
    assert CallMachine.from_dict(json.loads(text)).to_dict() == snapshot


@pytest.mark.parametrize("bad", [
    {"a": float("nan")},
    {"a": [1, {"b": float("inf")}]},
    {"a": (1, float("-inf"))},
    {"a": {"deep": [[[float("nan")]]]}},
])
def test_nan_and_infinity_anywhere_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate.snapshot(bad)
    assert info.value.field == "snapshot" and "NaN or infinity" in str(info.value)


@pytest.mark.parametrize("bad", [{1: "int key"}, {"a": object()}, {"a": 2**70}])
def test_values_json_cannot_hold_are_refused(bad: dict[object, object]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate.snapshot(bad)
    assert info.value.field == "snapshot"


def test_a_cycle_is_refused_not_looped_on() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    with pytest.raises(InvalidInput):
        validate.snapshot(cyclic)


def test_tuples_are_written_as_arrays_and_unicode_as_utf8() -> None:
    assert validate.snapshot({"t": (1, 2.5), "name": "Zoë"}) == '{"t":[1,2.5],"name":"Zoë"}'


def test_oversized_snapshot_is_refused() -> None:
    with pytest.raises(InvalidInput):
        validate.snapshot({"pad": "x" * (validate.MAX_SNAPSHOT_CHARS + 1)})
