#!/usr/bin/env bash
# Node.js and playwright-core (pinned in tests/e2e/package-lock.json) for the dashboard's browser
# tests. Playwright drives Debian's Chromium (scripts/deps/chromium.sh); it downloads no browser.
# Idempotent: installs Node.js only when it is missing and the npm package only when it changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing Node.js and npm (Debian packages) for the dashboard tests" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
lock=tests/e2e/package-lock.json
stamp=tests/e2e/node_modules/.installed-lock
if [ ! -f "$stamp" ] || ! cmp -s "$lock" "$stamp"; then
  echo "installing playwright-core for the dashboard tests (npm ci)" >&2
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
  cp "$lock" "$stamp"
fi
