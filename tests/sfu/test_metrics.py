"""The SFU's Prometheus metrics (facecall.sfu.metrics): rooms and participants as gauges, and
what rooms count per packet (facecall.sfu.room.RoomStats) added to counters on each tick and
when a room closes, never per packet. A room with the fake transport of test_room_audit.py."""

from __future__ import annotations

from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci
from prometheus_client import REGISTRY

from facecall.sfu import metrics
from facecall.sfu.room import TICK, Room
from tests.sfu.test_room_audit import enter, fake_room, publish, send, video, video_slot
from tests.sfu.test_transport import until

__all__ = ["fake_room"]  # the fixture


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_what_a_room_counts_reaches_the_metrics_by_its_tick_and_its_close(
        fake_room: Room) -> None:
    room = fake_room
    rooms, people = sample("facecall_sfu_rooms"), sample("facecall_sfu_participants")
    forwarded = sample("facecall_sfu_forwarded_packets_total") - room.stats.forwarded
    unknown = sample("facecall_sfu_dropped_packets_total", reason="unknown_ssrc")
    congestions = sample("facecall_sfu_congestions_total")
    await enter(room, "alice", "bob")
    assert sample("facecall_sfu_participants") == people + 2
    await publish(room, "alice", 1, 20)
    await send(room, "alice", video(room, "alice", 21, ssrc=0xBAD))  # nobody's
    slot = video_slot(room, "bob", "alice")
    await room.handle_rtcp(room.participants["bob"].transport, RtcpPsfbPacket(  # type: ignore[arg-type]
        fmt=RTCP_PSFB_APP, ssrc=7, media_ssrc=0, fci=pack_remb_fci(1_000, [slot.munger.ssrc])))
    counted = room.stats.forwarded
    assert counted >= 20 and room.stats.congestions == 1
    await until(lambda: sample("facecall_sfu_forwarded_packets_total") == forwarded + counted,
                timeout=3 * TICK + 1, what="the tick's report")
    assert sample("facecall_sfu_dropped_packets_total", reason="unknown_ssrc") == unknown + 1
    assert sample("facecall_sfu_congestions_total") == congestions + 1
    await room.leave("bob")
    assert sample("facecall_sfu_participants") == people + 1
    await room.close()
    await room.close()  # twice: counted once
    assert sample("facecall_sfu_rooms") == rooms - 1
    assert sample("facecall_sfu_participants") == people
    assert sample("facecall_sfu_forwarded_packets_total") == forwarded + room.stats.forwarded


def test_a_report_adds_only_what_is_new() -> None:
    from facecall.sfu.room import RoomStats
    stats, reported = RoomStats(forwarded=10, layer_switches=2), RoomStats()
    before = sample("facecall_sfu_layer_switches_total")
    metrics.report(stats, reported)
    metrics.report(stats, reported)
    assert sample("facecall_sfu_layer_switches_total") == before + 2 and reported == stats
