#!/usr/bin/env bash
# Builds ekart in release mode and runs the load benchmark (benches/shop.rs): the real binary
# and a bare axum + sqlx baseline, both on SQLite with synchronous=FULL, under the same
# catalog and checkout load; with a PostgreSQL server, both on PostgreSQL too (scratch
# databases, dropped at the end) and the server's one-row commit ceiling. Prints a table with
# the tracked ratios; writes bench/out/results.json.
#
#   bash bench/run.sh                      # 10 s per workload and target, 64 shoppers, 64 readers
#   bash bench/run.sh --duration 3         # a quick run
#   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres bash bench/run.sh
#                                          # the PostgreSQL targets too (or --postgres-url URL)
#   bash bench/run.sh --help               # every flag (each also has a BENCH_* variable)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin ekart
# Build first so compiler output does not interleave with the run's progress lines.
cargo bench --bench shop --no-run
cargo bench --bench shop -- "$@"
