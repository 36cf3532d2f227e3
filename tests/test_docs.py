"""What docs/operations.md, README.md and docs/protocol.md say about settings and `seq`, checked
against the code that does it."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

from facecall.bus.memory import InProcessBus
from facecall.cli import build_parser
from facecall.config import Settings

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
README = (ROOT / "README.md").read_text()
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


def _settings_table() -> dict[str, str]:
    """``FACECALL_<NAME>`` → the rest of its row, from the settings table of operations.md."""
    return dict(re.findall(r"^\| `FACECALL_([A-Z0-9_]+)`(.*)$", OPERATIONS, re.M))


def test_operations_table_lists_exactly_the_settings() -> None:
    names = {f.name.upper() for f in dataclasses.fields(Settings)}
    rows = set(_settings_table())
    # the burst settings share the row of their rate
    bursts = {n for n in names if n.endswith("_BURST") and f"`FACECALL_{n}`" in OPERATIONS}
    assert rows | bursts == names


def test_operations_table_names_the_flag_of_each_setting_that_has_one() -> None:
    table = _settings_table()
    for command in ("serve", "signaling"):
        parser = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        for action in parser._actions:
            flag = next((s for s in action.option_strings if s.startswith("--")), None)
            if flag and action.dest.upper() in table:
                assert table[action.dest.upper()].startswith(f" / `{flag}`"), (command, flag)


def test_readme_says_which_options_have_environment_variables() -> None:
    """Not every option has one: the `--turn-*` options of `facecall serve`/`facecall turn`
    have none but `--turn-secret` (FACECALL_TURN_SECRETS)."""
    assert "Every option has" not in README
    running = README.split("## Running it", 1)[1].split("\n## ", 1)[0]
    assert "`--turn-*`" in running and "`FACECALL_TURN_SECRETS`" in running
    assert "docs/operations.md" in running


def test_operations_says_which_turn_options_have_environment_variables() -> None:
    turn_options = OPERATIONS.split("TURN options (`--turn-*`", 1)[1].split("\n\n", 1)[0]
    assert "no environment variable" in turn_options
    assert "`FACECALL_TURN_SECRETS`" in turn_options


async def test_protocol_seq_statements_match_the_bus() -> None:
    """A new device's first event is numbered from the clock in microseconds, not from 1; the
    Frames table and the session example say so."""
    before = int(time.time() * 1_000_000)
    bus = InProcessBus()
    replay = await bus.replay("d1", None)  # a device's first hello: nothing to resume
    seq = await bus.deliver("d1", {"v": 1, "type": "call.ended", "call_id": "c1"})
    assert replay.last_seq >= before and seq == replay.last_seq + 1

    row = re.search(r"^\| event \(`call\.\*`\) \| server → client \| (.*) \| yes \|$", PROTOCOL, re.M)
    assert row is not None
    assert "from 1" not in row[1] and "microseconds" in row[1]
    session = PROTOCOL.split("## Session: hello, ack, resume", 1)[1]
    example = session.split("```json", 1)[1].split("```", 1)[0]
    welcome = json.loads(re.search(r"← (\{.*\"welcome\".*\})", example)[1])  # type: ignore[index]
    assert welcome["resumed"] is False and welcome["last_seq"] >= 10**15  # a microsecond clock
    acks = [json.loads(m) for m in re.findall(r"→ (\{.*\"ack\".*\})", example)]
    assert acks and all(a["seq"] > welcome["last_seq"] for a in acks)
