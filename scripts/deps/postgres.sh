#!/usr/bin/env bash
# PostgreSQL server binaries for the export tests (initdb, postgres, pg_ctl). The tests start
# their own throwaway server in a temporary folder; the system service is not used.
# Idempotent: a quick no-op when the binaries are present.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
echo "installing PostgreSQL (Debian package postgresql)" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
