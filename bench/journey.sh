#!/usr/bin/env bash
# Builds in release mode and runs the journey benchmark (benches/journey.rs): click-stream
# events through the in-process bus into the user module's store, against writing the same
# rows straight in, and the journey PDF's render time for 1, 100 and 1,000 steps.
#
#   bash bench/journey.sh                    # 200,000 events from 64 senders
#   bash bench/journey.sh --events 50000     # a quicker run
#   bash bench/journey.sh --help             # every flag (each also has a BENCH_* variable)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench journey --no-run
cargo bench --bench journey -- "$@"
