#!/bin/bash
# Peak RSS and CPU of whole runs of release binaries (issue 26): BENCHMARKS.md, "A run's
# memory and CPU (issue 26)". Not `cargo bench`: each run is the real binary under
# `/usr/bin/time -v`, start-up included, against `receipt-exporter simulate` in a process of
# its own, in a fresh database with N/500 groups of 500 seqs tracked.
#
#   benches/rss.sh fast 100000 1000000 4000000    # no limit, 500 seqs per call: the exporter is the bottleneck
#   benches/rss.sh paced 200000                   # the API's pace: 200 calls/s, 50 ms +- 20 ms, 50 seqs per call
#
# Each size runs twice (RUNS=N: N times) in its database: the first run sees every seq for the first time, the
# second (a scheduled run's case) plans against the first run's history. BINS (default
# target/release/receipt-exporter) is a space-separated list of binaries measured one after
# the other at each size, e.g. BINS="/tmp/main/receipt-exporter target/release/receipt-exporter".
# Needs the local Postgres (DATABASE_URL's server, default postgres://postgres@127.0.0.1:5432,
# a role that may create databases), psql and GNU time (`apt-get install time`).
set -euo pipefail
WRAP=${WRAP:-}  # a command the run is started under, e.g. "heaptrack -o /tmp/ht/@RUN@" (@RUN@: size-run)
mode=${1:?usage: benches/rss.sh fast|paced RECEIPTS...}
shift
[ $# -gt 0 ] || { echo "usage: benches/rss.sh fast|paced RECEIPTS..." >&2; exit 2; }
BINS=${BINS:-target/release/receipt-exporter}
server=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
server=${server%/*}
case $mode in
  fast) sim_flags=(--limit 0 --max-batch 1000); run_env=(EXPORT_RATE_LIMIT=10000 EXPORT_BATCH_SIZE=500) ;;
  paced) sim_flags=(--limit 200 --max-batch 100 --latency '50ms±20ms'); run_env=(EXPORT_RATE_LIMIT=200 EXPORT_BATCH_SIZE=50) ;;
  *) echo "benches/rss.sh: the mode is fast or paced, not '$mode'" >&2; exit 2 ;;
esac
command -v /usr/bin/time >/dev/null || { echo "benches/rss.sh: needs GNU time (apt-get install time)" >&2; exit 2; }
work=$(mktemp -d)
sim=
cleanup() { [ -n "$sim" ] && kill "$sim" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export TIM_SDKAPPID=1400000001 TIM_SECRET_KEY=5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e RUST_LOG=warn

echo "mode receipts run binary wall_s cpu_s peak_rss_mb api_calls cpu_s_per_1000_calls receipts_written"
for receipts in "$@"; do
  groups=$((receipts / 500))
  for bin in $BINS; do
    db=rexp_rss_bench_$$
    psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    export DATABASE_URL=$server/$db EXPORT_PARQUET_DIR=$work/lake
    rm -rf "$work/lake"
    "$bin" simulate --port 0 --groups "$groups" --messages 500 "${sim_flags[@]}" >"$work/sim.out" 2>"$work/sim.err" &
    sim=$!
    for _ in $(seq 100); do grep -q "listening on" "$work/sim.out" && break; sleep 0.1; done
    export TIM_API_BASE=http://$(grep -o "listening on [0-9.:]*" "$work/sim.out" | awk '{print $3}')
    "$bin" migrate >/dev/null
    psql -q "$DATABASE_URL" -c "INSERT INTO receipts.tracked_groups (group_id)
        SELECT '@TGS#sim1-' || n FROM generate_series(1, $groups) AS n" \
      -c "INSERT INTO receipts.seq_windows (group_id, from_seq, to_seq) SELECT group_id, 1, 500 FROM receipts.tracked_groups"
    for run in $(seq "${RUNS:-2}"); do
      env "${run_env[@]}" /usr/bin/time -v -o "$work/time" ${WRAP//@RUN@/$receipts-$run} "$bin" run >/dev/null 2>"$work/run.err" \
        || { echo "the run failed:" >&2; cat "$work/run.err" "$work/time" >&2; exit 1; }
      wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; print s}' "$work/time")
      cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {print s}' "$work/time")
      rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$work/time")
      read -r calls written < <(psql -At -F' ' "$DATABASE_URL" -c \
        "SELECT api_calls, receipts_written FROM receipts.export_runs WHERE status = 'succeeded' ORDER BY run_id DESC LIMIT 1")
      per=$(awk -v c="$cpu" -v n="$calls" 'BEGIN {printf "%.3f", c * 1000 / n}')
      echo "$mode $receipts $run $bin $wall $cpu $rss $calls $per $written"
    done
    kill "$sim"; wait "$sim" 2>/dev/null || true; sim=
    psql -q "$server/postgres" -c "DROP DATABASE $db WITH (FORCE)"
  done
done
