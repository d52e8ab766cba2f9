#!/usr/bin/env bash
# MariaDB server binaries for the export tests (mariadbd, mariadb-install-db). The tests start
# their own throwaway server in a temporary folder; the system service is not used.
# Idempotent: a quick no-op when the binaries are present.
set -euo pipefail
if command -v mariadbd >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1; then
  exit 0
fi
echo "installing MariaDB (Debian package mariadb-server)" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >/dev/null
