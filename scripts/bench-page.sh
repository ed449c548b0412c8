#!/usr/bin/env bash
# The status page's render time for 20 jobs x 2,000 snapshots (and two other sizes): what
# `daemon --listen` does for each request, from the cache it refreshes in the background
# (so requests never read storage). Target: under 200 ms for 20 x 2,000.
#   scripts/bench-page.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q --example page_bench
for size in "1 100" "20 2000" "50 5000"; do
  # shellcheck disable=SC2086
  target/release/examples/page_bench $size
done
