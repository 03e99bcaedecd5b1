#!/usr/bin/env bash
# The main job: the whole pipeline on the local services and sample data,
# ending with a readable summary of what landed in PostgreSQL.
#
#   1. start whatever local service is missing (PostgreSQL, NATS, Firebird);
#   2. build the binaries (release);
#   3. recreate the demo database, stream and extractor state;
#   4. start two loaders sharing one durable consumer, and the matcher;
#   5. qMS: start the export simulator with generated patients, run a full
#      sync, change the export (edits, deletions), sync again: only the
#      changes are published;
#   6. Infoclinica: create a sample Firebird database (the same generated
#      people as qMS for the first DEMO_INFOCLINICA of them, so the matcher
#      finds cross-system matches), run the initial load, change rows as
#      hospital users would, run one delta pass;
#   7. publish a few poison messages (they end up as dead letters);
#   8. wait until the loaders and the matcher have processed everything, stop
#      them gracefully (SIGTERM);
#   9. train the matching model on the loaded records (`etl model train`,
#      which re-matches every record under it), and print the summary.
#
# Environment: DEMO_QMS (default 20000) and DEMO_INFOCLINICA (default 10000)
# patients. Logs go to .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

qms=${DEMO_QMS:-20000}
infoclinica=${DEMO_INFOCLINICA:-10000}
sim_addr=127.0.0.1:${DEMO_QMS_PORT:-8480}

deploy/local-services.sh >/dev/null
echo "== building (release)"
cargo build --release --quiet -p loader -p etl -p matcher -p qms-sim -p qms-extractor -p infoclinica-extractor
bin=target/release

# The demo's own database, stream, buckets and Firebird file, so it never
# touches real ones.
export ETL__DATABASE__HOST=127.0.0.1 ETL__DATABASE__USERNAME=postgres ETL__DATABASE__DATABASE_NAME=etl_demo
export ETL__NATS__URL=nats://127.0.0.1:4222
export ETL__STREAM__NAME=DEMO_PATIENTS ETL__STREAM__SUBJECT_PREFIX=demo_patients
export ETL__QMS__URL=http://$sim_addr/cgi-bin/qms_export_pat \
    ETL__QMS__STATE__OBJECT_BUCKET=demo_qms_state \
    ETL__QMS__REJECTS__STREAM=DEMO_QMS_REJECTS ETL__QMS__REJECTS__SUBJECT=demo_rejects.qms
export ETL__EXTRACTOR__CHECKPOINT_BUCKET=demo_infoclinica_checkpoints \
    ETL__EXTRACTOR__SNAPSHOT_BUCKET=demo_infoclinica_snapshots
mkdir -p .demo
rm -f .demo/*.log
# The example configuration ships no password: the demo's copy gets the
# local Firebird's test user's (deploy/local-services.sh).
sed 's|^# password = "<the Firebird user.s password>"$|password = "etl_test"|' deploy/config/infoclinica-extractor.toml \
    >.demo/infoclinica-extractor.toml
ic=(--config .demo/infoclinica-extractor.toml)

echo "== recreating database etl_demo and stream DEMO_PATIENTS"
psql -q -h 127.0.0.1 -U postgres -d postgres -c 'DROP DATABASE IF EXISTS etl_demo WITH (FORCE)' -c 'CREATE DATABASE etl_demo'
"$bin/etl" delete-stream --yes
# As the schema owner (here the local superuser): the services only check
# the schema (database.migrate = false).
"$bin/etl" migrate >/dev/null

pids=()
stop_all() {
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    pids=()
}
trap stop_all EXIT

echo "== schema, and the sources the loaders accept (qms and infoclinica: registered by the schema)"
"$bin/etl" migrate >/dev/null
"$bin/etl" sources list

echo "== starting two loaders and the matcher"
for n in 1 2; do
    "$bin/loader" 2>".demo/loader-$n.log" &
    pids+=("$!")
done
"$bin/matcher" --config deploy/config/matcher.toml 2>.demo/matcher.log &
pids+=("$!")

echo "== qMS: simulator with $qms patients; a full sync, then 500 edits and 100 deletions, then a second sync"
"$bin/qms-sim" --listen "$sim_addr" --count "$qms" --seed 1 2>.demo/qms-sim.log &
pids+=("$!")
for _ in $(seq 100); do curl -sf "http://$sim_addr/admin/stats" >/dev/null && break; sleep 0.1; done
# --reset-state: the demo recreated its stream and database, so the
# extractor must forget what it published last time.
"$bin/qms-extractor" --no-daemon --reset-state 2>.demo/qms-extractor-1.log
curl -sf -X POST "http://$sim_addr/admin/edit?from=0&to=500" >/dev/null
curl -sf -X POST "http://$sim_addr/admin/delete?from=1000&to=1100" >/dev/null
"$bin/qms-extractor" --no-daemon 2>.demo/qms-extractor-2.log
grep -h "sync complete" .demo/qms-extractor-*.log | sed 's/^/   qms: /' || true

echo "== Infoclinica: sample Firebird database with $infoclinica patients; initial load, user changes, one delta pass"
"$bin/infoclinica-extractor" "${ic[@]}" create-sample-db --count "$infoclinica" --seed 1 2>.demo/infoclinica.log
"$bin/infoclinica-extractor" "${ic[@]}" --initial-load --restart 2>>.demo/infoclinica.log
"$bin/infoclinica-extractor" "${ic[@]}" sample-changes --updates 200 --deletes 50 --inserts 100 2>>.demo/infoclinica.log
"$bin/infoclinica-extractor" "${ic[@]}" --delta-sync 2>>.demo/infoclinica.log
grep -h "initial load finished\|delta pass" .demo/infoclinica.log | sed 's/^/   infoclinica: /' || true

echo "== three poison messages (dead-lettered by the loader, the rest flows)"
"$bin/etl" sample --source qms --count 0 --poison 3

echo "== waiting for the loaders and the matcher"
"$bin/etl" wait --consumer loader --timeout 300
for _ in $(seq 600); do
    left=$(psql -h 127.0.0.1 -U postgres -d etl_demo -Atc 'SELECT count(*) FROM record_changes')
    [[ $left == 0 ]] && break
    sleep 0.5
done
stop_all
trap - EXIT

# A fresh installation's path: the shipped priors link only on shared
# identifiers until a model is trained on the loaded records; a full
# re-match (part of `etl model train`) then applies it to every record.
echo "== training the matching model on the loaded records, then one full re-match under it"
"$bin/etl" model train 2>.demo/model-train.log >.demo/model-train.out
tail -n 3 .demo/model-train.out | sed 's/^/   model: /'
for n in 1 2; do
    grep -h "loader stopped" ".demo/loader-$n.log" | sed "s/^/   loader $n: /" || true
done
echo
"$bin/etl" summary
