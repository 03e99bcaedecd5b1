#!/usr/bin/env bash
# The main job: the whole pipeline on the local services and generated
# sample data, ending with a readable summary of what landed in PostgreSQL.
#
#   1. start whatever local service is missing (PostgreSQL, NATS, Firebird);
#   2. build the binaries (release);
#   3. recreate the demo database and stream;
#   4. start two loaders sharing one durable consumer;
#   5. publish generated qMS and Infoclinica patients, then changes,
#      deletions and a few poison messages, as the extractors would;
#   6. wait until the loaders have processed everything, stop them
#      gracefully (SIGTERM), and print the summary.
#
# Environment: DEMO_QMS (default 20000) and DEMO_INFOCLINICA (default 10000)
# records. Logs go to .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

qms=${DEMO_QMS:-20000}
infoclinica=${DEMO_INFOCLINICA:-10000}

deploy/local-services.sh >/dev/null
echo "== building (release)"
cargo build --release --quiet -p loader -p etl
bin=target/release

# The demo's own database and stream, so it never touches real ones.
export ETL__DATABASE__HOST=127.0.0.1 ETL__DATABASE__USERNAME=postgres ETL__DATABASE__DATABASE_NAME=etl_demo
export ETL__NATS__URL=nats://127.0.0.1:4222
export ETL__STREAM__NAME=DEMO_PATIENTS ETL__STREAM__SUBJECT_PREFIX=demo_patients
mkdir -p .demo

echo "== recreating database etl_demo and stream DEMO_PATIENTS"
psql -q -h 127.0.0.1 -U postgres -d postgres -c 'DROP DATABASE IF EXISTS etl_demo WITH (FORCE)' -c 'CREATE DATABASE etl_demo'
"$bin/etl" delete-stream --yes

echo "== starting two loaders"
pids=()
for n in 1 2; do
    "$bin/loader" 2>".demo/loader-$n.log" &
    pids+=("$!")
done
stop_loaders() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap stop_loaders EXIT

echo "== publishing sample data"
"$bin/etl" sample --source qms --count "$qms" --seed 1 --changes 500 --deletes 100 --poison 3
"$bin/etl" sample --source infoclinica --count "$infoclinica" --seed 2 --changes 200 --deletes 50
# Publishing the same content again is dropped by the stream's duplicate window.
"$bin/etl" sample --source infoclinica --count 1000 --seed 2

echo "== waiting for the loaders"
"$bin/etl" wait --consumer loader --timeout 300
stop_loaders
trap - EXIT
for n in 1 2; do
    grep -h "loader stopped" ".demo/loader-$n.log" | sed "s/^/   loader $n: /" || true
done
echo
"$bin/etl" summary
