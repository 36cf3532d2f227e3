"""VP8 payloads as an SFU reads them (facecall.sfu.vp8, RFC 7741): real payloads from aiortc's
VP8 encoder, whose first picture is a key frame, and hand-made descriptors of every form."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import Vp8Encoder

from facecall.sfu.vp8 import is_keyframe, picture_numbers, rewrite_picture_numbers


def encoded_pictures(count: int = 3) -> list[list[bytes]]:
    """The RTP payloads of ``count`` pictures (320x240) from aiortc's VP8 encoder."""
    encoder = Vp8Encoder()
    pictures = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), i * 40, np.uint8), format="rgb24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=i == 0)
        pictures.append(payloads)
    return pictures


def test_real_payloads_key_frame_first_and_picture_ids_in_order() -> None:
    pictures = encoded_pictures()
    assert is_keyframe(pictures[0][0])
    assert not any(is_keyframe(p) for p in pictures[0][1:])  # later packets of the key frame
    assert not any(is_keyframe(p) for picture in pictures[1:] for p in picture)
    ids = [picture_numbers(picture[0]) for picture in pictures]
    assert all(numbers is not None and numbers[0] is not None for numbers in ids)
    first = ids[0][0]  # type: ignore[index]
    assert [n[0] for n in ids] == [(first + i) % (1 << 15) for i in range(3)]  # type: ignore[index]


def test_rewriting_keeps_the_form_and_the_rest_of_the_payload() -> None:
    payload = encoded_pictures(1)[0][0]
    rewritten = rewrite_picture_numbers(payload, 12345, None)
    assert len(rewritten) == len(payload) and picture_numbers(rewritten) == (12345, None)
    assert rewritten[4:] == payload[4:] and is_keyframe(rewritten)


@pytest.mark.parametrize("descriptor, numbers, rewritten", [
    (bytes([0x10]), (None, None), (None, None)),  # no extension
    (bytes([0x90, 0x80, 0x05]), (5, None), (300 & 0x7F, None)),  # 7-bit PictureID
    (bytes([0x90, 0x80, 0x81, 0x02]), (258, None), (300, None)),  # 15-bit
    (bytes([0x90, 0xC0, 0x81, 0x02, 0x33]), (258, 0x33), (300, 0x44)),  # and TL0PICIDX
    (bytes([0x90, 0x60, 0x77, 0x20]), (None, 0x77), (None, 0x44)),  # TL0PICIDX and TID
])
def test_every_descriptor_form(descriptor: bytes, numbers: tuple[int | None, int | None],
                               rewritten: tuple[int | None, int | None]) -> None:
    payload = descriptor + bytes([0x00, 0x9D, 0x01, 0x2A])  # a key frame's payload header
    assert picture_numbers(payload) == numbers
    assert is_keyframe(payload)
    moved = rewrite_picture_numbers(payload, 300, 0x44)
    assert picture_numbers(moved) == rewritten and len(moved) == len(payload)
    assert moved[len(descriptor):] == payload[len(descriptor):]


@pytest.mark.parametrize("payload", [b"", b"\x80", b"\x90\x80", b"\x90\xc0\x81"])
def test_truncated_descriptors_are_no_key_frame_and_have_no_numbers(payload: bytes) -> None:
    assert not is_keyframe(payload)
    assert picture_numbers(payload) is None
    with pytest.raises(ValueError):
        rewrite_picture_numbers(payload, 1, 1)


def test_a_delta_frame_or_a_later_partition_is_no_key_frame() -> None:
    assert not is_keyframe(bytes([0x10, 0x01]))  # P = 1: an inter frame
    assert not is_keyframe(bytes([0x11, 0x00]))  # PID 1
    assert not is_keyframe(bytes([0x00, 0x00]))  # not the start of a partition
    assert not is_keyframe(bytes([0x10]))  # no payload header at all
