#!/usr/bin/env bash
# A Python venv with psycopg 3 (binary wheel), for the serve tests' real Python client.
# Lives in ~/.cache/shoplake/venv (SHOPLAKE_VENV overrides); idempotent and quick when present.
set -euo pipefail
VENV="${SHOPLAKE_VENV:-$HOME/.cache/shoplake/venv}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import psycopg' >/dev/null 2>&1; then
  exit 0
fi
echo "creating $VENV with psycopg" >&2
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'psycopg[binary]>=3.1,<4'
