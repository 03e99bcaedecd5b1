//! Checkpoints in a NATS KV bucket: where an extractor stopped, kept outside
//! the process (so it can run in a container) and written only after the
//! effect it stands for is acknowledged by the stream.
//!
//! Writes are compare-and-set on the entry's revision: two instances that
//! were started by mistake for the same source cannot silently overwrite each
//! other's progress; the second one gets [`CheckpointError::Conflict`].
//!
//! A write whose reply was lost (NATS restarted or timed out after applying
//! it) is retried by the caller with the same expected revision and finds
//! the key moved on. If the key now holds exactly the value being written,
//! that move was this write: [`Checkpoints::save`] returns the current
//! revision instead of a conflict.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

/// One stored checkpoint: its value and the revision to pass to
/// [`Checkpoints::save`] for the next write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub value: Bytes,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Someone else wrote the key since we read it.
    #[error("checkpoint {key} was changed by another writer")]
    Conflict { key: String },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A bucket of checkpoints (one key per source database, branch…).
#[derive(Clone)]
pub struct Checkpoints {
    store: kv::Store,
}

impl Checkpoints {
    /// Opens `bucket`, creating it (file storage, a short history for
    /// operators to look back, `replicas` copies in a NATS cluster) if it
    /// does not exist.
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> anyhow::Result<Checkpoints> {
        // A short history for operators to look back.
        let store = open_bucket(js, bucket, 5, replicas).await?;
        Ok(Checkpoints { store })
    }

    /// The checkpoint under `key`, if one was saved (a deleted or purged key
    /// reads as none).
    pub async fn load(&self, key: &str) -> anyhow::Result<Option<Checkpoint>> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| anyhow::anyhow!("reading checkpoint {key}: {e}"))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| Checkpoint {
                value: e.value,
                revision: e.revision,
            }))
    }

    /// Saves `value` under `key` if the key is still at `expected` (the
    /// revision [`load`](Self::load) or the previous save returned; `None`
    /// when there was no checkpoint). Returns the new revision.
    ///
    /// A key that moved on but holds `value` counts as saved (the retry of a
    /// write whose reply was lost): its current revision is returned.
    pub async fn save(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expected: Option<u64>,
    ) -> Result<u64, CheckpointError> {
        let value = value.into();
        match self.write(key, value.clone(), expected).await {
            Err(CheckpointError::Conflict { key }) => self.written_already(key, &value).await,
            result => result,
        }
    }

    /// The compare-and-set itself.
    async fn write(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, CheckpointError> {
        let conflict = || CheckpointError::Conflict {
            key: key.to_string(),
        };
        match expected {
            Some(revision) => {
                self.store
                    .update(key, value, revision)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => conflict(),
                        _ => anyhow::anyhow!("writing checkpoint {key}: {e}").into(),
                    })
            }
            None => self
                .store
                .create(key, value)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => conflict(),
                    _ => anyhow::anyhow!("writing checkpoint {key}: {e}").into(),
                }),
        }
    }

    /// After a conflict: the current revision if the key holds `value` (this
    /// write was applied before), else the conflict. A failed read is
    /// unexpected (transient), not a conflict: the caller retries the save.
    async fn written_already(&self, key: String, value: &Bytes) -> Result<u64, CheckpointError> {
        match self.load(&key).await? {
            Some(current) if current.value == value => {
                tracing::info!(
                    key,
                    revision = current.revision,
                    "checkpoint was already written"
                );
                Ok(current.revision)
            }
            _ => Err(CheckpointError::Conflict { key }),
        }
    }

    /// Removes the checkpoint under `key` (an operator's "start over").
    pub async fn reset(&self, key: &str) -> anyhow::Result<()> {
        self.store
            .delete(key)
            .await
            .map_err(|e| anyhow::anyhow!("deleting checkpoint {key}: {e}"))
    }
}

/// Opens the KV bucket `bucket`, creating it (file storage, `history`
/// values kept per key, `replicas` copies in a NATS cluster: 3 on a
/// three-node cluster, so that a checkpoint survives the loss of a node) if
/// it does not exist. An existing bucket is used as it is.
///
/// Not `create_key_value`: async-nats 0.51 first asks for the account info
/// and fails to parse nats-server 2.9's answer (no `reserved_memory`). The
/// bucket is created as a stream of the shape `create_key_value` would make.
pub async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    history: i64,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating bucket {bucket}: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| anyhow::anyhow!("opening bucket {bucket}: {e}"))
}
