#!/usr/bin/env bash
# Run the whole suite. Network tests stay on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q "$@"
