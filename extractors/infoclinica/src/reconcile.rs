//! Reconciliation: delta sync without triggers.
//!
//! Each pass reads every key with its row version — `RDB$RECORD_VERSION`
//! (the number of the transaction that wrote the row's current version) or
//! a configured modification column — and compares it with the previous
//! pass's snapshot, key by key:
//!
//! * a new key, or a key whose version differs: its row is re-read and
//!   published (an upsert, or a delete if it vanished meanwhile);
//! * a key whose version is at or above the previous pass's highest version
//!   (the overlap window): re-read as well, because a modification column
//!   with a coarse resolution can keep its value across two updates in the
//!   same tick, the second one after the previous scan;
//! * a key of the previous snapshot missing now: a delete.
//!
//! Comparing per key (not "version > last watermark") is what makes late
//! committers safe: a transaction that started before the previous scan and
//! committed after it has a *lower* version than the watermark, but its key's
//! version still differs from the one in the snapshot.
//!
//! The snapshot (16 bytes per key) is kept in memory and, after every
//! acknowledged pass, in a NATS object store, so that a restart still sees
//! the deletes that happened while the extractor was down. With no snapshot
//! (first pass) every row is published once.
//!
//! The deletion brake (see [`etl_runtime::brake`]) judges the vanished keys
//! against the previous snapshot's size. While it holds, they are not
//! published and stay in the snapshot, so every pass finds them again until
//! an operator releases the brake (or the rows come back).

use std::collections::HashMap;

use chrono::Utc;
use proto::bus::{DuplicateMode, Publisher};
use rsfbclient::RawValue;
use tokio::io::AsyncReadExt;

use crate::delta::{self, PassSummary, IN_LIST};
use crate::state::Snapshot;
use crate::sync::{DbSync, SyncError};
use etl_runtime::brake::Decision;

/// One reconciliation pass.
pub async fn pass(sync: &mut DbSync) -> Result<PassSummary, SyncError> {
    let started = std::time::Instant::now();
    if sync.snapshot.is_none() {
        sync.snapshot = crate::retry!(sync, "load snapshot", load_snapshot(sync))?;
    }
    let (scan, scanned_at) = crate::retry!(sync, "scan keys", scan(sync))?;
    let previous = sync.snapshot.clone().unwrap_or_default();
    let overlap_from = previous.max_version();
    let mut changed: Vec<i64> = scan
        .versions
        .iter()
        .filter(|(k, v)| {
            previous.versions.get(k) != Some(v) || overlap_from.is_some_and(|m| **v >= m)
        })
        .map(|(k, _)| *k)
        .collect();
    changed.sort_unstable();
    let mut vanished: Vec<i64> = previous
        .versions
        .keys()
        .filter(|k| !scan.versions.contains_key(k))
        .copied()
        .collect();
    vanished.sort_unstable();

    let (brake, decision) = crate::retry!(
        sync,
        "deletion brake",
        delta::brake(
            sync,
            "reconcile",
            vanished.len() as u64,
            previous.versions.len() as u64
        )
    )?;
    let send_deletes = decision.sends();
    let mut summary = PassSummary::default();
    let mut next = scan;
    for page in changed.chunks(sync.settings.page_size.max(IN_LIST)) {
        let (s, gone) = crate::retry!(
            sync,
            "publish changes",
            delta::publish_current(sync, page, send_deletes)
        )?;
        summary.add(s);
        // Vanished between the scan and the re-read: published as deletes,
        // or, while the brake holds, kept as the previous pass saw them.
        for pcode in gone {
            match previous.versions.get(&pcode) {
                Some(&v) if !send_deletes => next.versions.insert(pcode, v),
                _ => next.versions.remove(&pcode),
            };
        }
    }
    if !send_deletes {
        summary.withheld = vanished.len() as u64;
        for pcode in &vanished {
            next.versions.insert(*pcode, previous.versions[pcode]);
        }
    } else if !vanished.is_empty() {
        let s = crate::retry!(
            sync,
            "publish deletes",
            publish_deletes(sync, &vanished, scanned_at)
        )?;
        summary.add(s);
    }
    summary.changes = (changed.len() + vanished.len()) as u64;
    crate::retry!(sync, "save snapshot", save_snapshot(sync, &next))?;
    if decision == Decision::SendReleased {
        crate::retry!(sync, "deletion brake", async {
            brake.released_sent().await.map_err(SyncError::from)
        })?;
    }
    sync.snapshot = Some(next);
    sync.checkpoint.state.passes += 1;
    crate::retry!(sync, "checkpoint", sync.save())?;
    metrics::histogram!("infoclinica_reconcile_pass_seconds", "database" => sync.db.name.clone())
        .record(started.elapsed().as_secs_f64());
    tracing::info!(
        database = %sync.name(),
        keys = sync.snapshot.as_ref().map_or(0, |s| s.versions.len()),
        changed = changed.len(),
        vanished = vanished.len(),
        upserts = summary.upserts,
        deletes = summary.deletes,
        withheld_deletes = summary.withheld,
        ms = started.elapsed().as_millis() as u64,
        "reconciliation pass"
    );
    sync.record_status("reconcile", summary.upserts, summary.deletes)
        .await;
    Ok(summary)
}

/// Every key and its version, in one read-only statement.
async fn scan(sync: &mut DbSync) -> Result<(Snapshot, chrono::DateTime<Utc>), SyncError> {
    let t = &sync.db.table;
    let version = t.version_column.as_deref().unwrap_or("RDB$RECORD_VERSION");
    let sql = format!("SELECT {}, {} FROM {}", t.pcode, version, t.name);
    let result = sync
        .source
        .call(move |conn| {
            let mut versions = HashMap::new();
            conn.stream_raw(&sql, |row: &[RawValue]| {
                if let Some(RawValue::Integer(pcode)) = row.first() {
                    let v = match row.get(1) {
                        Some(RawValue::Integer(v)) => *v,
                        Some(RawValue::Int128(v)) => *v as i64,
                        Some(RawValue::Timestamp(t)) => t.and_utc().timestamp_micros(),
                        Some(RawValue::Floating(f)) => f.to_bits() as i64,
                        _ => 0,
                    };
                    versions.insert(*pcode, v);
                }
                Ok(())
            })?;
            Ok((Snapshot { versions }, Utc::now()))
        })
        .await?;
    Ok(result)
}

async fn publish_deletes(
    sync: &mut DbSync,
    pcodes: &[i64],
    read_at: chrono::DateTime<Utc>,
) -> Result<PassSummary, SyncError> {
    let bus = sync.bus.clone();
    let span = tracing::info_span!(
        "infoclinica.publish_deletes",
        database = %sync.db.name,
        records = pcodes.len()
    );
    let mut publisher = Publisher::with_mode(
        &bus.js,
        &bus.stream,
        sync.settings.publish_window,
        DuplicateMode::Republish,
    )
    .with_traceparent(etl_runtime::telemetry::traceparent_of(&span));
    for &pcode in pcodes {
        let envelope = sync.delete(pcode, read_at);
        publisher.send(&envelope).await?;
    }
    publisher.settle().await?;
    metrics::counter!("infoclinica_deletes_published_total",
        "database" => sync.db.name.clone(), "mode" => "reconcile")
    .increment(pcodes.len() as u64);
    Ok(PassSummary {
        deletes: pcodes.len() as u64,
        ..Default::default()
    })
}

async fn object_store(
    sync: &DbSync,
) -> Result<async_nats::jetstream::object_store::ObjectStore, SyncError> {
    let bucket = &sync.settings.snapshot_bucket;
    match sync.bus.js.get_object_store(bucket).await {
        Ok(store) => Ok(store),
        Err(_) => sync
            .bus
            .js
            .create_object_store(async_nats::jetstream::object_store::Config {
                bucket: bucket.clone(),
                num_replicas: sync.bus.stream.replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating snapshot bucket {bucket}: {e}").into()),
    }
}

async fn load_snapshot(sync: &mut DbSync) -> Result<Option<Snapshot>, SyncError> {
    let store = object_store(sync).await?;
    let mut object = match store.get(&sync.db.name).await {
        Ok(object) => object,
        Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(anyhow::anyhow!("reading snapshot: {e}").into()),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| anyhow::anyhow!("reading snapshot: {e}"))?;
    Ok(Some(Snapshot::decode(&bytes)))
}

async fn save_snapshot(sync: &mut DbSync, snapshot: &Snapshot) -> Result<(), SyncError> {
    let store = object_store(sync).await?;
    let bytes = snapshot.encode();
    store
        .put(sync.db.name.as_str(), &mut bytes.as_slice())
        .await
        .map_err(|e| anyhow::anyhow!("writing snapshot: {e}"))?;
    Ok(())
}
