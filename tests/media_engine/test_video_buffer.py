"""VideoReceiveBuffer driven packet by packet with a fake clock."""

from __future__ import annotations

from facecall.media.engine.nack import NackConfig, NackTracker
from facecall.media.engine.video_buffer import VideoBufferConfig, VideoPacket, VideoReceiveBuffer


def frame_packets(first_seq: int, ts: int, count: int, key: bool = False) -> list[VideoPacket]:
    return [VideoPacket(seq=(first_seq + i) % 65536, timestamp=ts, marker=i == count - 1,
                        data=bytes([ts % 256, i]), starts_frame=i == 0, keyframe=key and i == 0)
            for i in range(count)]


def stream(frames: int, per_frame: int = 3, start_seq: int = 100, key_every: int = 0) -> list[VideoPacket]:
    out: list[VideoPacket] = []
    for n in range(frames):
        key = n == 0 or (key_every and n % key_every == 0)
        out += frame_packets(start_seq + n * per_frame, 3000 * n, per_frame, bool(key))
    return out


def test_frame_released_on_its_last_packet_not_the_next_frame() -> None:
    buf = VideoReceiveBuffer()
    packets = stream(2)
    out = [buf.add(p, 0.0) for p in packets[:3]]
    assert [len(o.frames) for o in out] == [0, 0, 1]
    assert out[2].frames[0].keyframe and out[2].frames[0].data == b"\x00\x00\x00\x01\x00\x02"
    assert [len(buf.add(p, 0.0).frames) for p in packets[3:]] == [0, 0, 1]


def test_gap_is_nacked_and_filled_in_order() -> None:
    buf = VideoReceiveBuffer()
    packets = stream(3)
    for p in packets[:3]:
        buf.add(p, 0.0)
    out = buf.add(packets[4], 0.001)          # seq 103 lost
    assert out.nack == [103]
    released = [buf.add(p, 0.002).frames for p in packets[5:]]   # frame 2 complete, blocked
    assert all(not f for f in released)
    out = buf.add(packets[3], 0.004)          # retransmission arrives
    assert [f.timestamp for f in out.frames] == [3000, 6000]


def test_nack_retries_are_bounded_and_spaced_by_rtt() -> None:
    buf = VideoReceiveBuffer(VideoBufferConfig(min_delay=1.0, max_delay=1.0))
    buf.rtt = 0.02
    packets = stream(2)
    for p in packets[:3]:
        buf.add(p, 0.0)
    assert buf.add(packets[4], 0.0).nack == [103]
    asked = []
    t = 0.0
    while t < 0.5:
        t += 0.005
        asked += buf.on_timer(t).nack
    assert asked == [103, 103]               # 3 requests in all, then given up


def test_incomplete_frame_dropped_at_deadline_then_wait_for_keyframe() -> None:
    buf = VideoReceiveBuffer(VideoBufferConfig(min_delay=0.05, max_delay=0.05))
    buf.rtt = 0.001
    packets = stream(6, key_every=4)         # key frames at 0 and 4
    for p in packets[:3]:
        buf.add(p, 0.0)
    for p in packets[4:12]:                  # seq 103 never comes; frames 2 and 3 complete behind it
        assert not buf.add(p, 0.01).frames
    deadline = buf.next_timer()
    assert deadline is not None and 0.01 < deadline <= 0.07
    out = buf.on_timer(0.07)
    assert out.frames == [] and out.keyframe_request  # frames 1..3 dropped: 2 and 3 reference 1
    assert buf.waiting_for_keyframe
    out = buf.add(packets[12], 0.08)
    out = [buf.add(p, 0.07) for p in packets[13:15]][-1]
    assert [f.timestamp for f in out.frames] == [12000] and out.frames[0].keyframe


def test_complete_keyframe_behind_a_gap_is_released_at_once() -> None:
    buf = VideoReceiveBuffer()
    packets = stream(3, key_every=2)
    for p in packets[:3]:
        buf.add(p, 0.0)
    buf.add(packets[3], 0.0)                 # frame 1 misses its last two packets
    frames = []
    for p in packets[6:]:                    # frame 2 is a key frame
        frames += buf.add(p, 0.01).frames
    assert [f.timestamp for f in frames] == [6000] and not buf.waiting_for_keyframe


def test_keyframe_requests_are_throttled() -> None:
    buf = VideoReceiveBuffer(VideoBufferConfig(keyframe_interval=0.3))
    for p in stream(1):
        buf.add(p, 0.0)
    requests = [buf.decode_error(t / 100).keyframe_request for t in range(0, 100)]
    requests += [buf.on_timer(t / 100).keyframe_request for t in range(100, 200)]
    assert sum(requests) == 7                # t = 0, .3, .6, .9, 1.2, 1.5, 1.8


def test_decode_error_drops_delta_frames_until_a_keyframe() -> None:
    buf = VideoReceiveBuffer()
    packets = stream(4, key_every=3)
    for p in packets[:3]:
        buf.add(p, 0.0)
    assert buf.decode_error(0.0).keyframe_request
    assert not [f for p in packets[3:9] for f in buf.add(p, 0.01).frames]
    frames = [f for p in packets[9:] for f in buf.add(p, 0.02).frames]
    assert [f.timestamp for f in frames] == [9000]


def test_sequence_wrap() -> None:
    buf = VideoReceiveBuffer()
    frames = [f for p in stream(5, start_seq=65530) for f in buf.add(p, 0.0).frames]
    assert [f.timestamp for f in frames] == [0, 3000, 6000, 9000, 12000]


def test_late_and_duplicate_packets_are_ignored() -> None:
    buf = VideoReceiveBuffer()
    packets = stream(2)
    for p in packets:
        buf.add(p, 0.0)
    assert not buf.add(packets[1], 0.0).frames and not buf.add(packets[5], 0.0).frames
    assert buf.counters.packets_late == 2 and buf.buffered() == 0


def test_huge_gap_asks_for_keyframe_instead_of_nacks() -> None:
    buf = VideoReceiveBuffer()
    for p in stream(1):
        buf.add(p, 0.0)
    out = buf.add(frame_packets(103 + 500, 9000, 1)[0], 0.01)
    assert out.nack == [] and out.keyframe_request


def test_h264_keyframe_from_nal_types() -> None:
    buf = VideoReceiveBuffer(VideoBufferConfig(codec="h264"))
    idr = VideoPacket(seq=1, timestamp=0, marker=True, data=b"\x00\x00\x00\x01\x65abc")
    buf.add(VideoPacket(seq=0, timestamp=-3000 % 2**32, marker=True, data=b"\x00\x00\x01\x41x"), 0.0)
    out = buf.on_timer(1.0)                  # unknown start: dropped at the deadline
    out = buf.add(idr, 1.0)
    assert [f.keyframe for f in out.frames] == [True]


def test_nack_tracker_gives_up_past_the_deadline() -> None:
    tracker = NackTracker(NackConfig(max_retries=5))
    tracker.add_missing(range(10, 12), now=0.0, deadline=0.1)
    assert tracker.due(0.0, rtt=0.05) == [10, 11]
    assert tracker.due(0.08, rtt=0.05) == []          # would arrive after the deadline
    assert len(tracker) == 0 and tracker.given_up == 2


def test_round_trip_measured_from_nack_to_retransmission() -> None:
    buf = VideoReceiveBuffer()
    packets = stream(2)
    for p in packets[:3]:
        buf.add(p, 0.0)
    assert buf.add(packets[4], 1.0).nack == [103]
    buf.add(packets[3], 1.08)
    assert buf.measured_rtt is not None and abs(buf.measured_rtt - 0.08) < 1e-9


def test_no_nacks_while_waiting_for_a_keyframe() -> None:
    buf = VideoReceiveBuffer()
    packets = stream(3)
    for p in packets[:3]:
        buf.add(p, 0.0)
    buf.decode_error(0.0)
    assert buf.add(packets[5], 0.01).nack == []         # 103 and 104 missing, not asked for
    assert len(buf.nacks) == 0


def test_while_waiting_the_key_frame_itself_is_repaired() -> None:
    buf = VideoReceiveBuffer()
    packets = stream(4, per_frame=4, key_every=3)      # frames 0..3 (seq 100..115); 3 is a key frame
    for p in packets[:4]:
        buf.add(p, 0.0)
    buf.decode_error(0.0)                              # now waiting for a key frame
    assert buf.add(packets[6], 0.01).nack == []        # 104, 105 (a delta frame) are not asked for
    key = packets[12:]                                 # seq 112..115, 113 lost on the way
    nacked = []
    for p in (key[0], key[2], key[3]):
        nacked += buf.add(p, 0.02).nack
    assert nacked == [113] and 104 not in nacked
    out = buf.add(key[1], 0.03)                        # the retransmission completes the key frame
    assert [f.timestamp for f in out.frames] == [9000] and out.frames[0].keyframe
    assert not buf.waiting_for_keyframe
