#!/bin/bash
# Detail calls per message and per run, against the simulator (issue 19): BENCHMARKS.md,
# "Read lists". Needs the local Postgres (psql, trust auth), curl and a built binary.
set -euo pipefail
work=$(mktemp -d)
BIN=${BIN:-target/debug/receipt-exporter}
export TIM_SDKAPPID=1400000001 TIM_SECRET_KEY=5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e
for members in 50 100 200; do
  db=rexp_detail_bench_$members
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db EXPORT_PARQUET_DIR=$(mktemp -d)
  echo "[{\"group_id\":\"@TGS#m$members\",\"group_type\":\"Public\",\"member_num\":$members,\"next_msg_seq\":201}]" > $work/groups.json
  $BIN simulate --port 0 --groups-file $work/groups.json > $work/sim.out 2>$work/sim.err &
  sim=$!
  sleep 1
  addr=$(grep -o "listening on [0-9.:]*" $work/sim.out | awk '{print $3}')
  export TIM_API_BASE=http://$addr
  $BIN migrate >/dev/null
  $BIN track add "@TGS#m$members" --seqs 1..200 --details >/dev/null
  for run in 1 2 3 4 5 6 7; do
    bound=$($BIN run --dry-run | grep -o 'at most [0-9]*' | awk '{print $3}')
    $BIN run >/dev/null 2>&1 || true
    row=$(psql -At -h 127.0.0.1 -U postgres -d $db -c "SELECT details->'read_lists'->>'due', details->'read_lists'->>'calls', details->'read_lists'->>'events' FROM receipts.export_runs ORDER BY run_id DESC LIMIT 1")
    echo "$members $run bound=$bound due|calls|events=$row"
    curl -s -X POST "http://$addr/sim/advance" >/dev/null
  done
  total=$(psql -At -h 127.0.0.1 -U postgres -d $db -c "SELECT count(*), count(DISTINCT msg_seq) FROM receipts.read_events")
  echo "$members total events|messages with readers=$total"
  kill $sim; wait $sim 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE $db"
done
