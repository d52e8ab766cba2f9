#!/usr/bin/env bash
# psql (PostgreSQL client), curl and openssl: the real clients the serve tests drive.
# Idempotent: does nothing when all three are installed.
set -euo pipefail
missing=()
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"
