#!/usr/bin/env bash
# Builds in release mode and runs the scale benchmark (benches/scale.rs): two shops per
# database, one with 50 products, orders and sessions and one with a million of each, seeded
# through the modules' own stores in bulk (timed); then the catalog page, searches that hit
# and miss, a cursor page deep in the catalog, the admin's order search and the journeys list
# under 16 clients at each size. Prints the table and the tracked ratios; writes
# bench/out/scale.json.
#
#   bash bench/scale.sh                                   # SQLite, a million rows
#   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres bash bench/scale.sh
#                                                         # PostgreSQL too (scratch databases)
#   bash bench/scale.sh --products 100000 --orders 100000 --duration 3   # a quicker run
#   bash bench/scale.sh --help                            # every flag (each has a BENCH_* variable)
set -euo pipefail
cd "$(dirname "$0")/.."
# Build first so compiler output does not interleave with the run's progress lines.
cargo bench --bench scale --no-run
cargo bench --bench scale -- "$@"
