#!/usr/bin/env bash
# Builds in release mode and runs the Kafka benchmark (benches/kafka.rs): checkouts with the
# Kafka bus in one process and split into three, and journey events through Kafka end to end,
# each as a ratio to the in-process bus in the same run, all on PostgreSQL.
#
#   BENCH_KAFKA_BROKERS=127.0.0.1:19292 bash bench/kafka.sh            # 10 s per layout
#   BENCH_KAFKA_BROKERS=127.0.0.1:19292 bash bench/kafka.sh --duration 5
#   bash bench/kafka.sh --help      # every flag (each also has a BENCH_* variable)
#
# A broker to run it against: cargo install tansu --locked --features libsql,dynostore, then
#   (mkdir -p /tmp/tansu && cd /tmp/tansu && tansu broker --listener-url tcp://127.0.0.1:19292 \
#     --advertised-listener-url tcp://127.0.0.1:19292 --storage-engine sqlite://tansu.db) &
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin ekart
cargo bench --bench kafka --no-run
cargo bench --bench kafka -- "$@"
