"""facecall.media — media building blocks (see ``docs/media.md``).

* :mod:`facecall.media.stamp` — capture stamps drawn into pictures, read back after coding.
* :mod:`facecall.media.sources` — synthetic, file and camera tracks; the audio latency probe.
* :mod:`facecall.media.sinks` — frame callback sink, stamp statistics, recorder, blackhole.
* :mod:`facecall.media.impairment` — the seeded UDP impairment relay (and its CLI).

Submodules are imported explicitly, so the relay does not pull in numpy or aiortc.
"""
