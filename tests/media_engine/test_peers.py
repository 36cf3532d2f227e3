"""Real aiortc peers through the impairment relay: the engine's behaviour end to end.

Behaviour only (frames keep arriving, losses are repaired or concealed, quality steps down and
back up); the figures belong to ``bench/media.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from facecall.media.engine.adaptation import Reason
from facecall.media.impairment import Direction, ImpairmentProfile
from tests.media_engine.peers import one_way_call, wait_for

pytestmark = pytest.mark.slow


async def test_clean_call_uses_the_engine_both_ways_of_the_pipeline() -> None:
    async with one_way_call(engine=True) as call:
        assert await wait_for(lambda: call.video.summary().stamped >= 20 and len(call.audio) >= 2, 20)
        receive = {r["kind"]: r for r in call.engine_b.stats()["receive"]}
        assert receive["video"]["frames_released"] >= 20
        assert receive["audio"]["packets"] >= 25
        assert call.engine_a.quality is not None            # the sender is adapting


async def test_three_percent_loss_is_repaired_and_concealed() -> None:
    profile = ImpairmentProfile(loss=0.03)
    async with one_way_call(engine=True, profile=profile, seed=7) as call:
        assert await wait_for(lambda: call.relay.pipes[Direction.A_TO_B].counters.dropped >= 15, 30)
        before = call.video.summary().stamped
        assert await wait_for(lambda: call.video.summary().stamped >= before + 30, 20)
        receive = {r["kind"]: r for r in call.engine_b.stats()["receive"]}
        assert receive["video"]["nacked"] > 0                # lost video packets were asked for
        assert receive["audio"]["fec"] + receive["audio"]["concealed"] > 0
        assert len(call.audio) >= 3                          # the markers are still heard


async def test_bandwidth_drop_steps_down_and_recovery_steps_back_up() -> None:
    async with one_way_call(engine=True, width=640, height=360, fps=15) as call:
        engine = call.engine_a
        events = []
        engine.on_quality_change(events.append)
        assert await wait_for(lambda: engine.quality is not None and engine.quality.height == 360, 20)
        call.relay.set_profile(ImpairmentProfile(rate_kbps=300), Direction.A_TO_B)
        assert await wait_for(lambda: engine.quality.height < 360, 20)
        assert any(e.after.reason == Reason.CONGESTION for e in events)
        frames = call.video.frames
        assert await wait_for(lambda: call.video.frames >= frames + 15, 20)   # video keeps flowing
        call.relay.set_profile(ImpairmentProfile(), Direction.A_TO_B)
        assert await wait_for(lambda: engine.quality.height == 360, 40)
        assert events[-1].after.reason == Reason.RECOVERY
        assert engine.stats()["quality"]["rung"].startswith("360p")
        await asyncio.sleep(0)
