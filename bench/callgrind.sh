#!/usr/bin/env bash
# Counts the CPU instructions a checkout costs, with valgrind's callgrind: ekart on SQLite (the
# release build, with line tables) and the bare baseline of benches/shop.rs, under the same
# workload. One shopper (the shop bench's `--callgrind-drive` client): a warm-up of add +
# checkout pairs, then `callgrind_control --zero`, the measured pairs, `callgrind_control
# --dump`. Start-up, set-up and warm-up are not counted; what the server does in the background
# meanwhile (timers, relay sweeps) is, and valgrind makes the window ~50x longer than native.
#
# Prints instructions per checkout (one add + one checkout) for both and their ratio, writes
# bench/out/callgrind.json, and the top functions of ekart's dump (inclusive and self, from
# callgrind_annotate) to bench/out/callgrind-ekart.txt; the raw dumps stay in
# bench/out/callgrind/ for `callgrind_annotate` or kcachegrind.
#
#   bash bench/callgrind.sh                                        # 20 warm-up, 100 measured
#   BENCH_CALLGRIND_WARMUP=50 BENCH_CALLGRIND_PAIRS=200 bash bench/callgrind.sh
set -euo pipefail
cd "$(dirname "$0")/.."

warmup="${BENCH_CALLGRIND_WARMUP:-20}"
pairs="${BENCH_CALLGRIND_PAIRS:-100}"
top="${BENCH_CALLGRIND_TOP:-25}"
goal=4
out=bench/out
# Under valgrind a server takes minutes where it takes seconds natively.
timeout_secs="${BENCH_CALLGRIND_TIMEOUT_SECS:-1800}"

for tool in valgrind callgrind_control callgrind_annotate jq; do
  command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is needed (apt-get install valgrind jq)" >&2; exit 2; }
done

# Build first so compiler output does not interleave with the run's progress lines.
exe() { jq -r --arg name "$1" 'select(.executable != null and .target.name == $name) | .executable' | tail -n1; }
ekart_bin="$(cargo build --release --bin ekart --message-format=json-render-diagnostics | exe ekart)"
shop_bin="$(cargo bench --bench shop --no-run --message-format=json-render-diagnostics | exe shop)"
[[ -x "$ekart_bin" && -x "$shop_bin" ]] || { echo "callgrind.sh: build produced no binaries" >&2; exit 1; }

work="$(mktemp -d -t ekart-callgrind-XXXXXX)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  exec 3>&-
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The baseline exits when its stdin closes: it reads a FIFO this script holds open, so it
# also goes if the script dies.
mkfifo "$work/stdin"
exec 3<>"$work/stdin"

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 4<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

# Starts target $1 (ekart or baseline) under callgrind in the background, on port $2 with its
# data in directory $3, as $server_pid: valgrind runs the tool in the process it was started
# as, so that is the pid callgrind_control wants. ekart gets the settings benches/shop.rs
# gives it, from the environment alone.
start_under_callgrind() {
  local name="$1" port="$2" dir="$3"
  (
    cd "$dir"
    unset $(compgen -e | grep '^EKART_' || true) RUST_LOG
    case "$name" in
      ekart)
        export EKART_SERVER__HOST=127.0.0.1 EKART_SERVER__PORT="$port" \
          EKART_DATABASE__URL="sqlite://$dir/" EKART_DATABASE__SQLITE_SYNCHRONOUS=FULL \
          EKART_AUTH__MODE=dev EKART_LIMITS__ENABLED=false EKART_CATALOG__SEED_DEMO=false \
          EKART_LOG__LEVEL=warn
        set -- "$ekart_bin" --config /nonexistent/ekart.toml serve ;;
      baseline)
        set -- "$shop_bin" --serve-baseline "$port" "$dir" ;;
    esac
    exec valgrind --tool=callgrind --trace-children=no \
      --callgrind-out-file="$dir/callgrind.out.%p" "$@"
  ) <&3 >"$dir/server.log" 2>&1 &
  server_pid=$!
}

# Measures one target (ekart or baseline); sets $ir to the instructions of its measured pairs.
ir=""
measure() {
  local name="$1" dir="$work/$1" port dump
  mkdir -p "$dir"
  port="$(free_port)"
  echo "callgrind.sh: $name under callgrind on port $port (slow)" >&2
  start_under_callgrind "$name" "$port" "$dir"
  if ! timeout "$timeout_secs" "$shop_bin" --callgrind-drive "http://127.0.0.1:$port" "$server_pid" \
      --callgrind-warmup "$warmup" --callgrind-pairs "$pairs" >&2; then
    echo "callgrind.sh: driving $name failed; its log ends:" >&2
    tail -n 30 "$dir/server.log" >&2
    exit 1
  fi
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  # The part zeroed and then dumped is the first numbered one: callgrind.out.PID.1.
  dump="$(find "$dir" -name 'callgrind.out.*.1' | head -n1)"
  [[ -n "$dump" ]] || { echo "callgrind.sh: $name left no dump in $dir" >&2; exit 1; }
  mkdir -p "$out/callgrind"
  cp "$dump" "$out/callgrind/$name.out"
  ir="$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")"
  [[ "$ir" =~ ^[0-9]+$ ]] || { echo "callgrind.sh: no instruction total in $dump" >&2; exit 1; }
}

measure ekart
ekart_ir="$ir"
measure baseline
baseline_ir="$ir"

per_checkout() { echo $(( $1 / pairs )); }
ekart_per="$(per_checkout "$ekart_ir")"
baseline_per="$(per_checkout "$baseline_ir")"
ratio="$(awk -v a="$ekart_ir" -v b="$baseline_ir" 'BEGIN { printf "%.2f", a / b }')"
met="$(awk -v r="$ratio" -v g="$goal" 'BEGIN { print (r <= g) ? "true" : "false" }')"

# callgrind_annotate's header and its first $top functions by inclusive cost.
top_inclusive() {
  callgrind_annotate --auto=no --inclusive=yes "$1" | awk -v top="$top" '
    state == 2 { if (NF && shown < top) { print; shown++ } ; next }
    state == 1 { print; state = 2; next }
    /file:function/ { state = 1 }
    { print }'
}

# The first $top functions by self cost. callgrind_annotate 3.19 shows inclusive costs for
# these dumps even without --inclusive, so they are summed here: a cost line right after
# `calls=` is the call's inclusive cost, not the caller's own.
top_self() {
  TOP="$top" perl - "$1" <<'PERL'
my (%name, %self, $fn, $call, $total);
while (<>) {
  if (/^(c?)fn=\((\d+)\)(?: (.*))?$/) {
    $name{$2} = $3 if defined $3;
    $fn = $2 if $1 eq '';
  } elsif (/^calls=/) {
    $call = 1;
  } elsif (/^[-+*\d]\S* (\d+)/) {
    if ($call) { $call = 0 } else { $self{$fn} += $1; $total += $1 }
  }
}
my @top = grep { defined } (sort { $self{$b} <=> $self{$a} } keys %self)[0 .. $ENV{TOP} - 1];
printf "%15s %7s  %s\n", "Ir (self)", "share", "function";
printf "%15s %6.2f%%  %s\n", $self{$_}, 100 * $self{$_} / $total, $name{$_} for @top;
PERL
}
{
  echo "# ekart, $pairs add + checkout pairs after $warmup warm-up pairs (bench/callgrind.sh)"
  echo "# instructions per checkout: ekart $ekart_per, baseline $baseline_per, ratio ${ratio}x"
  echo
  echo "## top $top functions by inclusive cost"
  top_inclusive "$out/callgrind/ekart.out"
  echo
  echo "## top $top functions by self cost"
  top_self "$out/callgrind/ekart.out"
} >"$out/callgrind-ekart.txt"

jq -n --argjson warmup "$warmup" --argjson pairs "$pairs" \
  --argjson ekart "$ekart_ir" --argjson baseline "$baseline_ir" \
  --argjson ratio "$ratio" --argjson goal "$goal" --argjson met "$met" \
  --arg valgrind "$(valgrind --version)" '{
    config: { warmup_pairs: $warmup, pairs: $pairs, shoppers: 1, database: "sqlite",
              sqlite_synchronous: "FULL", valgrind: $valgrind },
    results: [
      { target: "ekart-sqlite", instructions: $ekart, instructions_per_checkout: ($ekart / $pairs | floor) },
      { target: "baseline-sqlite", instructions: $baseline, instructions_per_checkout: ($baseline / $pairs | floor) }
    ],
    ratio: { name: "instructions per checkout: ekart vs baseline, SQLite", value: $ratio,
             goal_at_most: $goal, goal_met: $met }
  }' >"$out/callgrind.json"

printf '\n%-16s %22s\n' "target" "instructions/checkout"
printf '%-16s %22s\n' ekart-sqlite "$ekart_per" baseline-sqlite "$baseline_per"
printf 'ratio ekart/baseline: %sx (goal <= %sx: %s)\n' "$ratio" "$goal" "$([[ $met == true ]] && echo met || echo MISSED)"
echo "results: $out/callgrind.json; where ekart's instructions go: $out/callgrind-ekart.txt"
