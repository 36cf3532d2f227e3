#!/usr/bin/env bash
# Run the whole suite. As root, it runs inside a fresh network namespace that has only a
# loopback interface, so that no test — Chromium and ICE included — can send a packet anywhere
# but 127.0.0.0/8 and ::1 (see shared notes/webrtc-testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
pytest=(.venv/bin/python -m pytest -q --durations=25 "$@")  # the slowest 25: the suite's time
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -z "${FACECALL_NO_NETNS:-}" ]; then
  exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh "${pytest[@]}"
fi
echo "run-tests: not root; running without a loopback-only namespace" >&2
exec "${pytest[@]}"
