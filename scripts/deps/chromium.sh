#!/usr/bin/env bash
# Headless Chromium for the report tests (they open the HTML reports and read the rendered DOM)
# and the dashboard tests (driven by playwright-core, scripts/deps/node.sh).
# Idempotent: does nothing when a chromium binary is already on the machine.
set -euo pipefail
for c in chromium chromium-browser google-chrome; do
  if command -v "$c" >/dev/null 2>&1; then
    exit 0
  fi
done
echo "installing chromium (Debian package) for the report tests" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
