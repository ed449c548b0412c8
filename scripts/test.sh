#!/usr/bin/env bash
# Runs backstop's whole test suite on a fresh machine: installs what the tests need
# (PostgreSQL, age, zstd, moto_server in .venv-s3), checks formatting and lints, then runs
# the unit and integration tests against real services the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
python3 scripts/check-layers.py
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast "$@"
else
  cargo test --locked --no-fail-fast "$@"
fi
