//! Where a sync is decided and published: attempts with retries, the
//! comparison with the last published state, the deletion brake, publishing
//! the changes, and saving the new state once every publish is acknowledged.

use std::collections::BTreeSet;

use async_nats::jetstream::{self, context::PublishAckFuture};
use chrono::Utc;
use proto::bus::{DuplicateMode, Publisher};
use proto::Envelope;

use crate::export::{self, AttemptError, Export, Spilled};
use crate::parse::{self, Decoder};
use crate::settings::Settings;
use crate::state::{Entries, Loaded, SaveError, StateInfo, StateStore, UNKNOWN};
use etl_runtime::brake::{Brake, Decision};
use etl_runtime::retry::Attempts;
use etl_runtime::shutdown::Shutdown;

/// What one sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Download attempts (1 + retries used).
    pub attempts: u32,
    pub bytes: u64,
    pub lines: u64,
    /// Records parsed from the export.
    pub records: u64,
    /// Records rejected (published to the rejects stream).
    pub rejects: u64,
    /// His numbers listed more than once (the last one counts).
    pub duplicates: u64,
    /// Upserts published (new or changed records).
    pub upserts: u64,
    /// Deletes published.
    pub deletes: u64,
    /// Records unchanged since the last sync.
    pub unchanged: u64,
    /// Deletions held back by the deletion brake.
    pub withheld_deletes: u64,
    /// Messages the stream stored (less than published when some were
    /// already there after an interrupted sync).
    pub stored: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Every attempt failed; nothing was published.
    #[error("{attempts} attempt(s) failed, nothing changed; last: {last}")]
    Download { attempts: u32, last: AttemptError },
    #[error("shut down during the sync")]
    Cancelled,
    #[error(transparent)]
    State(#[from] SaveError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// One extractor: settings, connections and the state store.
pub struct Extractor {
    settings: Settings,
    js: jetstream::Context,
    http: reqwest::Client,
    decoder: Decoder,
    store: StateStore,
}

/// Options of one run given on the command line, not in the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// An operator confirmed that deletions beyond the brake are real.
    pub confirm_deletions: bool,
    /// Forget the last published state before the first sync, so that it
    /// publishes every record again.
    pub reset_state: bool,
}

impl Extractor {
    /// Checks the settings that no retry can fix.
    pub fn check(settings: &Settings) -> anyhow::Result<Decoder> {
        anyhow::ensure!(
            proto::bus::is_valid_source_name(&settings.qms.source),
            "qms.source is not a valid source name"
        );
        Decoder::for_label(&settings.qms.encoding)
            .ok_or_else(|| anyhow::anyhow!("unknown qms.encoding {:?}", settings.qms.encoding))
    }

    /// The HTTP client of the downloads (qMS's CA, connect timeout).
    pub fn http_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
        etl_runtime::tls::http_client(settings.qms.ca_file.as_deref())?
            .connect_timeout(settings.qms.connect_timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))
    }

    /// Connects to the bus, ensures the streams and state buckets exist.
    pub async fn connect(settings: Settings) -> anyhow::Result<Extractor> {
        let decoder = Self::check(&settings)?;
        let client = settings.nats.connect("qms-extractor").await?;
        etl_runtime::observe::watch_nats(&client);
        let js = jetstream::new(client);
        proto::bus::ensure_stream(&js, &settings.stream)
            .await
            .map_err(|e| anyhow::anyhow!("creating stream {}: {e}", settings.stream.name))?;
        etl_runtime::observe::watch_stream(&js, &settings.stream.name);
        let r = &settings.qms.rejects;
        js.get_or_create_stream(jetstream::stream::Config {
            name: r.stream.clone(),
            subjects: vec![r.subject.clone()],
            retention: jetstream::stream::RetentionPolicy::Limits,
            storage: jetstream::stream::StorageType::File,
            max_age: r.max_age,
            duplicate_window: settings.stream.duplicate_window,
            num_replicas: settings.stream.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating rejects stream {}: {e}", r.stream))?;
        let store = StateStore::open(&js, &settings.qms.state).await?;
        let http = Self::http_client(&settings)?;
        Ok(Extractor {
            settings,
            js,
            http,
            decoder,
            store,
        })
    }

    /// Removes the saved state (see [`RunOptions::reset_state`]).
    pub async fn reset_state(&self) -> anyhow::Result<()> {
        tracing::warn!("state reset: the next sync publishes every record");
        self.store.reset().await
    }

    /// One full sync. Publishes nothing unless a complete, plausible export
    /// arrived; then publishes only what changed and the deletions, and
    /// saves the new state after every publish was acknowledged.
    pub async fn sync(
        &self,
        options: RunOptions,
        shutdown: &Shutdown,
    ) -> Result<SyncReport, SyncError> {
        let q = &self.settings.qms;
        let mut previous = self.store.load().await?;
        if previous.info.interrupted {
            tracing::warn!(
                "the last sync did not complete; every record it may have published \
                 is published again and every key it knew is checked for deletion"
            );
        }
        let now = Utc::now();
        let version = now.timestamp_micros().max(previous.info.version + 1);

        let mut report = SyncReport::default();
        let mut attempts = Attempts::new(q.retry_backoff, shutdown.clone());
        let mut export = loop {
            let fetched = tokio::select! {
                r = export::fetch(&self.http, q, self.decoder, previous.info.export_records) => r,
                _ = shutdown.cancelled() => return Err(SyncError::Cancelled),
            };
            match fetched {
                Ok(export) => break export,
                Err(e) => {
                    metrics::counter!("qms_download_failures_total", "kind" => e.kind())
                        .increment(1);
                    let attempt = attempts.failed() + 1;
                    if !e.is_retryable() || attempt > q.retries {
                        return Err(SyncError::Download {
                            attempts: attempt,
                            last: e,
                        });
                    }
                    let floor = export::retry_after_floor(q, &e);
                    if attempts
                        .wait_at_least("export attempt", &e, floor)
                        .await
                        .is_err()
                    {
                        return Err(SyncError::Cancelled);
                    }
                }
            }
        };
        report.attempts = attempts.failed() + 1;
        report.bytes = export.stats.bytes;
        report.lines = export.stats.lines;
        report.records = export.stats.records;
        report.rejects = export.stats.rejects;
        report.duplicates = export.entries.sort_dedup();
        if report.duplicates > 0 {
            tracing::warn!(
                duplicates = report.duplicates,
                "his numbers listed more than once; the last occurrence counts"
            );
        }

        // The export's entries become the next state (no third set in
        // memory); the old state is freed before publishing and encoding
        // the new snapshot (peak memory).
        let exported = std::mem::take(&mut export.entries);
        let diff = diff(&previous, exported, &export.rejected_his, &mut report);
        let (brake, decision) = self
            .brake(&diff, previous.entries.len() as u64, options)
            .await?;
        let plan = diff.into_plan(&previous, decision.sends(), &mut report);
        previous.entries = Entries::default();
        let marked = self.mark_interrupted(&previous, &plan, version).await?;
        let published = tokio::select! {
            r = self.publish(&mut export, &plan, version, now) => r?,
            _ = shutdown.cancelled() => return Err(SyncError::Cancelled),
        };
        report.stored = published;
        let info = StateInfo {
            generation: marked.generation + 1,
            export_records: export.stats.records,
            version,
            interrupted: false,
        };
        self.store
            .save(marked.nuid.as_deref(), &info, &plan.next_state)
            .await?;
        // After the state: a sync failing before it finds the deletions
        // again, still released.
        if decision == Decision::SendReleased {
            brake.released_sent().await?;
        }
        metrics::gauge!("qms_state_records").set(plan.next_state.len() as f64);
        tracing::debug!(generation = info.generation, "state saved");
        let sync = etl_runtime::sync_status::Sync {
            kind: "sync",
            published: report.upserts,
            deleted: report.deletes,
        };
        etl_runtime::sync_status::record_in(
            &self.js,
            self.settings.stream.replicas,
            &self.settings.stream.name,
            &q.source,
            None,
            sync,
        )
        .await;
        Ok(report)
    }

    /// The deletion brake's decision on `diff`'s deletions of `previous`
    /// records. `--confirm-deletions` releases a hold for this sync.
    async fn brake(
        &self,
        diff: &Diff,
        previous: u64,
        options: RunOptions,
    ) -> Result<(Brake, Decision), SyncError> {
        let q = &self.settings.qms;
        let brake = Brake::open(
            &self.js,
            self.settings.stream.replicas,
            &self.settings.stream.name,
            &q.source,
            None,
            q.deletion_brake,
        )
        .await?;
        let deletions = diff.deleted.len() as u64;
        let mut decision = brake.check("sync", deletions, previous).await?;
        if decision == Decision::Hold && options.confirm_deletions {
            tracing::warn!(
                deletions,
                "deletions beyond the brake confirmed by the operator (--confirm-deletions)"
            );
            decision = Decision::SendReleased;
        }
        metrics::gauge!("qms_deletion_brake_engaged").set(if decision == Decision::Hold {
            1.0
        } else {
            0.0
        });
        Ok((brake, decision))
    }

    /// Saves the marked snapshot (see [`crate::state`]) before the first
    /// publish, so that a sync ending early leaves the state ahead of the
    /// stream, never behind it. Nothing to publish: nothing to mark.
    async fn mark_interrupted(
        &self,
        previous: &Loaded,
        plan: &Plan,
        version: i64,
    ) -> Result<Marked, SyncError> {
        if plan.upserts.is_empty() && plan.deletes.is_empty() {
            return Ok(Marked {
                generation: previous.info.generation,
                nuid: previous.nuid.clone(),
            });
        }
        let info = StateInfo {
            generation: previous.info.generation + 1,
            // The export is not published yet: the plausibility baseline
            // stays that of the last complete sync.
            export_records: previous.info.export_records,
            version,
            interrupted: true,
        };
        let nuid = self
            .store
            .save(previous.nuid.as_deref(), &info, &plan.marked_state())
            .await?;
        Ok(Marked {
            generation: info.generation,
            nuid: Some(nuid),
        })
    }

    async fn publish(
        &self,
        export: &mut Export,
        plan: &Plan,
        version: i64,
        now: chrono::DateTime<Utc>,
    ) -> Result<u64, SyncError> {
        let q = &self.settings.qms;
        // The trace every message of this sync carries (exported traces
        // only; counts, never record content).
        let span = tracing::info_span!(
            "qms.publish",
            source = %q.source,
            upserts = plan.upserts.len(),
            deletes = plan.deletes.len()
        );
        let mut publisher = Publisher::with_mode(
            &self.js,
            &self.settings.stream,
            q.publish_window,
            DuplicateMode::Republish,
        )
        .with_traceparent(etl_runtime::telemetry::traceparent_of(&span));
        // Upserts, in export order from the spill file. Reading is
        // synchronous (a local, buffered file); publishing awaits acks.
        let today = now.date_naive();
        let profile = q.profile();
        let mut wanted = plan.upserts.iter().copied().peekable();
        let mut rejects = Vec::new();
        export.spill.rewind().map_err(anyhow::Error::from)?;
        while let Some((at, item)) = export.spill.next_item().map_err(anyhow::Error::from)? {
            match item {
                Spilled::Record(raw) => {
                    if wanted.peek() != Some(&at) {
                        continue;
                    }
                    wanted.next();
                    // Parsed before; it parses the same way again.
                    if let Ok((his, record)) = parse::parse_record(&raw, &profile, today) {
                        let envelope = Envelope::upsert(&q.source, his, version, now, record);
                        publisher
                            .send(&envelope)
                            .await
                            .map_err(anyhow::Error::from)?;
                    }
                }
                Spilled::Reject {
                    raw,
                    reason,
                    his_number,
                } => rejects.push((raw, reason, his_number)),
            }
        }
        for his in &plan.deletes {
            publisher
                .send(&Envelope::delete(&q.source, his.as_str(), version, now))
                .await
                .map_err(anyhow::Error::from)?;
        }
        let published = publisher.settle().await.map_err(anyhow::Error::from)?;
        self.publish_rejects(rejects).await?;
        metrics::counter!("qms_published_total", "op" => "upsert")
            .increment(plan.upserts.len() as u64);
        metrics::counter!("qms_published_total", "op" => "delete")
            .increment(plan.deletes.len() as u64);
        Ok(published.stored)
    }

    /// Rejected records go to the rejects stream with their reason, line
    /// number and (when known) his number in headers, the record's text as
    /// the payload. The message id is the hash of reason and text, so the
    /// same bad record seen by every sync is stored once per duplicate
    /// window, not once per sync.
    async fn publish_rejects(
        &self,
        rejects: Vec<(parse::RawRecord, &'static str, Option<String>)>,
    ) -> anyhow::Result<()> {
        let subject = self.settings.qms.rejects.subject.clone();
        let mut in_flight: std::collections::VecDeque<PublishAckFuture> = Default::default();
        for (raw, reason, his) in rejects {
            let mut hasher = blake3::Hasher::new();
            hasher.update(reason.as_bytes());
            hasher.update(b"|");
            hasher.update(raw.text.as_bytes());
            let id = format!(
                "{}-reject:{}",
                self.settings.qms.source,
                hasher.finalize().to_hex()
            );
            let mut message = jetstream::message::PublishMessage::build()
                .payload(raw.text.into_bytes().into())
                .message_id(id)
                .header("Qms-Reject-Reason", reason)
                .header("Qms-Line", raw.line.to_string().as_str());
            if let Some(his) = his {
                message = message.header("Qms-His-Number", his.as_str());
            }
            in_flight.push_back(
                self.js
                    .send_publish(subject.clone(), message)
                    .await
                    .map_err(|e| anyhow::anyhow!("publishing a reject: {e}"))?,
            );
            if in_flight.len() >= 1024 {
                let ack = in_flight.pop_front().expect("non-empty");
                ack.await.map_err(|e| anyhow::anyhow!("reject ack: {e}"))?;
            }
        }
        for ack in in_flight {
            ack.await.map_err(|e| anyhow::anyhow!("reject ack: {e}"))?;
        }
        Ok(())
    }
}

/// The snapshot in force once the sync has marked itself.
struct Marked {
    generation: u64,
    nuid: Option<String>,
}

/// What a sync will publish, and the state once it has.
struct Plan {
    /// Spill offsets of records to upsert, ascending.
    upserts: Vec<u64>,
    deletes: Vec<String>,
    next_state: Entries,
}

impl Plan {
    /// The state while this plan is being published: every key of the next
    /// state and every key about to be deleted, the hashes of those the
    /// plan touches [`UNKNOWN`].
    fn marked_state(&self) -> Entries {
        let next = &self.next_state;
        let mut marked = Entries::with_capacity(next.len() + self.deletes.len());
        for e in next.items() {
            let touched = e.spill_at != u64::MAX && self.upserts.binary_search(&e.spill_at).is_ok();
            let hash = if touched { UNKNOWN } else { e.hash };
            marked.push(next.key(e), hash, u64::MAX);
        }
        for his in &self.deletes {
            marked.push(his, UNKNOWN, u64::MAX);
        }
        // Deleted keys are absent from the next state: no duplicates, only
        // the order to restore.
        marked.sort_dedup();
        marked
    }
}

/// How the export differs from the last published state.
struct Diff {
    /// Spill offsets of records to upsert, ascending.
    upserts: Vec<u64>,
    /// Indices (in the old state) of records gone from the export.
    deleted: Vec<usize>,
    /// Indices (in the old state) of records kept although absent (rejected).
    carried: Vec<usize>,
    /// The export's entries: the next state.
    new: Entries,
}

/// Compares the export's entries (sorted) with the last published state.
fn diff(previous: &Loaded, new: Entries, rejected_his: &[String], report: &mut SyncReport) -> Diff {
    let old = &previous.entries;
    let rejected: BTreeSet<&str> = rejected_his.iter().map(String::as_str).collect();
    let mut upserts = Vec::new();
    let mut deleted: Vec<usize> = Vec::new();
    let mut carried: Vec<usize> = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (olds, news) = (old.items(), new.items());
    while i < olds.len() || j < news.len() {
        let order = match (olds.get(i), news.get(j)) {
            (Some(a), Some(b)) => old.cmp_keys(a, &new, b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                // Gone from the export: deleted, unless it was rejected.
                if rejected.contains(old.key(&olds[i])) {
                    carried.push(i);
                } else {
                    deleted.push(i);
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                upserts.push(news[j].spill_at);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                if olds[i].hash == news[j].hash {
                    report.unchanged += 1;
                } else {
                    upserts.push(news[j].spill_at);
                }
                i += 1;
                j += 1;
            }
        }
    }
    upserts.sort_unstable();
    Diff {
        upserts,
        deleted,
        carried,
        new,
    }
}

impl Diff {
    /// What the sync publishes: the deletions only if `send_deletes` (the
    /// brake let them through); held ones stay in the next state.
    fn into_plan(self, previous: &Loaded, send_deletes: bool, report: &mut SyncReport) -> Plan {
        let Diff {
            upserts,
            mut deleted,
            mut carried,
            new,
        } = self;
        let (old, olds) = (&previous.entries, previous.entries.items());
        if !send_deletes {
            report.withheld_deletes = deleted.len() as u64;
            carried.append(&mut deleted);
        }
        report.upserts = upserts.len() as u64;
        report.deletes = deleted.len() as u64;
        // Records carried over are absent from the export, so the merged
        // state has no duplicate; only their order needs restoring.
        let mut next_state = new;
        for &i in &carried {
            next_state.push(old.key(&olds[i]), olds[i].hash, u64::MAX);
        }
        if !carried.is_empty() {
            next_state.sort_dedup();
        }
        let deletes = deleted
            .iter()
            .map(|&i| old.key(&olds[i]).to_string())
            .collect();
        Plan {
            upserts,
            deletes,
            next_state,
        }
    }
}
