#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, the test suite, doc tests, and a clean tree.
# Works on a fresh machine with the Rust toolchain: it installs what else it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

bash scripts/deps/chromium.sh
bash scripts/deps/node.sh
bash scripts/deps/postgres.sh
bash scripts/deps/mariadb.sh
bash scripts/deps/psql.sh
bash scripts/deps/python.sh

echo "== cargo fmt" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests" >&2
cargo nextest run --workspace --no-fail-fast
echo "== doc tests" >&2
cargo test --workspace --doc
echo "== tree is clean after the tests" >&2
git diff --exit-code
