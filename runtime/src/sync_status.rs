//! The last successful sync of each source, for `etl status`: a NATS KV
//! bucket, one key per stream and source (or source and database), a JSON
//! value with counts and times only (no personal data).
//!
//! Extractors write with [`record_in`], under the KV key
//! `<source>[.<database>].<stream>` ([`crate::brake::key`]); `etl status`
//! reads its own pipeline's with [`of_stream`], so that two pipelines on one
//! NATS server (a test and a production stream, two sites) never show each
//! other's syncs.
//!
//! Written at the very end of a successful sync or pass; a failure to write
//! it is logged and ignored, because it is information for operators, not
//! state the pipeline depends on.

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The bucket holding the last successful sync per source.
pub const BUCKET: &str = "etl_sync_status";

/// One successful sync or pass. Counts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub finished_at: DateTime<Utc>,
    /// What kind of pass: `sync`, `initial`, `delta`, `reconcile`.
    pub kind: String,
    /// Records published (stored by the stream).
    pub published: u64,
    /// Deletions published.
    pub deleted: u64,
}

async fn open(js: &jetstream::Context, replicas: usize) -> anyhow::Result<kv::Store> {
    crate::checkpoint::open_bucket(js, BUCKET, 1, replicas).await
}

/// Records a successful pass under `key`; never fails the caller. The
/// bucket is created with `replicas` copies (the service's
/// `stream.replicas`) if it does not exist.
pub async fn record(
    js: &jetstream::Context,
    replicas: usize,
    key: &str,
    kind: &str,
    published: u64,
    deleted: u64,
) {
    let status = SyncStatus {
        finished_at: Utc::now(),
        kind: kind.into(),
        published,
        deleted,
    };
    let result = async {
        let store = open(js, replicas).await?;
        store
            .put(key.replace('/', "."), serde_json::to_vec(&status)?.into())
            .await
            .map_err(|e| anyhow::anyhow!("writing sync status {key}: {e}"))?;
        anyhow::Ok(())
    };
    if let Err(error) = result.await {
        tracing::warn!(%error, key, "could not record the sync status");
    }
}

/// Records a successful pass of `source` (and `database`) publishing to
/// `stream`; never fails the caller.
pub async fn record_in(
    js: &jetstream::Context,
    replicas: usize,
    stream: &str,
    source: &str,
    database: Option<&str>,
    sync: Sync<'_>,
) {
    // When this process last finished a successful pass (`database` empty
    // for a source without databases).
    metrics::gauge!("etl_last_sync_timestamp_seconds",
        "source" => source.to_string(), "database" => database.unwrap_or("").to_string())
    .set(Utc::now().timestamp_millis() as f64 / 1000.0);
    let key = crate::brake::key(stream, source, database);
    record(js, replicas, &key, sync.kind, sync.published, sync.deleted).await
}

/// What a pass did, for [`record_in`].
#[derive(Debug, Clone, Copy)]
pub struct Sync<'a> {
    /// `sync`, `initial`, `delta`, `reconcile`.
    pub kind: &'a str,
    pub published: u64,
    pub deleted: u64,
}

/// The last successful syncs of `stream`'s pipeline (recorded by
/// [`record_in`]), keyed `source` or `source/database`, sorted by key.
pub async fn of_stream(
    js: &jetstream::Context,
    stream: &str,
) -> anyhow::Result<Vec<(String, SyncStatus)>> {
    let suffix = format!("/{stream}");
    Ok(all(js)
        .await?
        .into_iter()
        .filter_map(|(key, status)| Some((key.strip_suffix(&suffix)?.to_string(), status)))
        .collect())
}

/// Every recorded source's last successful sync, sorted by key. Empty when
/// nothing was recorded yet.
pub async fn all(js: &jetstream::Context) -> anyhow::Result<Vec<(String, SyncStatus)>> {
    use futures::StreamExt;
    let Ok(store) = js.get_key_value(BUCKET).await else {
        return Ok(Vec::new());
    };
    let mut keys = match store.keys().await {
        Ok(keys) => keys.boxed(),
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| anyhow::anyhow!("listing sync status: {e}"))?;
        if let Some(value) = store
            .get(&key)
            .await
            .map_err(|e| anyhow::anyhow!("reading sync status {key}: {e}"))?
        {
            if let Ok(status) = serde_json::from_slice(&value) {
                out.push((key.replace('.', "/"), status));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
