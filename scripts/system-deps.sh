#!/usr/bin/env bash
# Install the Debian packages the test suite uses: coturn (client tools for interop),
# PostgreSQL (store tests), Redis (scale-out), Chromium (browser tests, driven by Playwright
# with executable_path — never Playwright's own browser download), iproute2/util-linux (network namespaces). Skipped when not root or already present.
set -euo pipefail
need=()
command -v turnutils_uclient >/dev/null || need+=(coturn)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${need[*]}; run as root or install them (tests needing them will fail)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >/dev/null
# coturn's package enables a system service on some setups; we only want its tools.
if command -v systemctl >/dev/null && systemctl is-active --quiet coturn 2>/dev/null; then
  systemctl stop coturn || true
fi
