//! The extractor's configuration. Doc comments here are the user
//! documentation; `deploy/config/qms-extractor.toml` shows every setting with
//! its default.

use std::path::PathBuf;
use std::time::Duration;

use etl_runtime::backoff::Backoff;
use etl_runtime::nats::NatsSettings;
use proto::bus::StreamSettings;
use proto::DocumentTypeMap;
use serde::Deserialize;

etl_runtime::service_settings! {
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default)]
    pub struct Settings {
        pub nats: NatsSettings,
        pub stream: StreamSettings,
        pub qms: QmsSettings,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct QmsSettings {
    /// The export endpoint, `http://` or `https://`. Over HTTPS the
    /// server's certificate must chain to `ca_file` (or the system's store)
    /// and name the URL's host.
    pub url: String,
    /// PEM file of the CA that signed qMS's HTTPS certificate (a private
    /// CA). Unset: the system's store.
    pub ca_file: Option<PathBuf>,
    /// Source name: subject `<stream.subject_prefix>.<source>` and the
    /// `source` of every record.
    pub source: String,
    /// Text encoding of the export: `utf-8` or `windows-1251` (any label
    /// the WHATWG Encoding Standard knows, e.g. `cp1251`). Bytes invalid in
    /// it are replaced and the record carries a `bad_characters` issue.
    pub encoding: String,
    /// Business unit written into every record (qMS does not export one).
    pub business_unit: Option<String>,
    /// qMS document-type code → canonical type (`passport`,
    /// `international_passport`, `birth_certificate`,
    /// `foreign_birth_certificate`, `merchant_navy_passport`,
    /// `seamans_passport`, `military_id`, `reserve_officer_id`,
    /// `diplomatic_passport`, `foreign_passport`, `refugee_application`,
    /// `residence_permit`, `refugee_id`, `forced_migrant_id`,
    /// `temporary_id`, `temporary_residence_permit`, `other`, `unknown`).
    /// Default: qMS's codes as the README lists them (16 passport, 17
    /// international passport, 3 and 732 birth certificate, …; 47 "no
    /// documents" is unknown). A table given here replaces the default
    /// whole: a code it leaves out is `unknown`, never a guess. Changing it
    /// republishes every record at the next sync.
    pub document_types: DocumentTypeMap,
    /// Longest wait for the TCP connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for the response to start and, after that, between two
    /// pieces of the body (qMS takes minutes to produce the export).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Further attempts after a failed download or an implausible export,
    /// within one sync.
    pub retries: u32,
    /// Delays between those attempts (doubling from `initial` to `max`).
    /// When qMS answers 429 or 503 with a `Retry-After` header, the next
    /// attempt waits at least that long (at most `max_retry_after`).
    pub retry_backoff: Backoff,
    /// Longest `Retry-After` honoured; a longer one (or a date far ahead)
    /// is cut to this, so a wrong header cannot stop syncs for days.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// While an export downloads, a progress line (bytes so far, rate, and
    /// the time left when qMS sends the length) is logged at most this
    /// often; on a terminal a progress bar shows instead.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Longest physical line kept, in bytes. A longer line is not buffered:
    /// it becomes one `too_long` reject that carries only its his number
    /// and its length, and the sync goes on. Memory stays flat for any
    /// body. Real records are far shorter (a record is rejected as
    /// `too_long` above 16 KiB anyway).
    pub max_line_bytes: usize,
    /// Daemon mode: time from the start of one sync to the start of the next.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Daemon mode: wait after a failed sync (every attempt failed) before
    /// trying again; at most `interval`.
    #[serde(with = "humantime_serde")]
    pub failed_sync_delay: Duration,
    /// Publish acks in flight at once.
    pub publish_window: usize,
    /// Directory of the temporary spill file that holds the changed records
    /// of a sync until the export is known to be complete (system temp dir
    /// when unset; the file is unlinked, so a crash leaves nothing behind).
    pub spill_dir: Option<PathBuf>,
    pub plausibility: Plausibility,
    /// The deletion brake: a sync that would delete more than `max_share`
    /// (default 0.05: 5 %) of the records last published or more than
    /// `max_count` (default 10000) records sends none of its deletions
    /// (changed records still go out) until an operator runs `etl brake
    /// release qms` (or this extractor once with `--confirm-deletions`);
    /// while it holds, `etl status` shows it, `etl_deletion_brake_held` and
    /// `qms_deletion_brake_engaged` are 1 and `--no-daemon` exits with
    /// status 3.
    pub deletion_brake: etl_runtime::brake::BrakeSettings,
    pub state: StateSettings,
    pub rejects: RejectSettings,
}

impl Default for QmsSettings {
    fn default() -> Self {
        QmsSettings {
            url: "http://127.0.0.1:8480/cgi-bin/qms_export_pat".into(),
            ca_file: None,
            source: "qms".into(),
            encoding: "utf-8".into(),
            business_unit: None,
            document_types: DocumentTypeMap::qms_default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(300),
            retries: 2,
            retry_backoff: Backoff {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(120),
            },
            max_retry_after: Duration::from_secs(900),
            progress_interval: Duration::from_secs(30),
            max_line_bytes: crate::parse::DEFAULT_MAX_LINE_BYTES,
            interval: Duration::from_secs(3600),
            failed_sync_delay: Duration::from_secs(300),
            publish_window: 4096,
            spill_dir: None,
            plausibility: Plausibility::default(),
            deletion_brake: Default::default(),
            state: StateSettings::default(),
            rejects: RejectSettings::default(),
        }
    }
}

impl QmsSettings {
    /// What each record's content depends on besides its text.
    pub fn profile(&self) -> crate::parse::Profile {
        crate::parse::Profile::new(self.business_unit.clone(), self.document_types.clone())
    }
}

/// When an export counts as complete. qMS sends no trailer or row count, so
/// completeness is inferred; an export that fails any rule changes nothing
/// downstream and the attempt is retried. Always checked, not configurable:
/// status 200, a content type that is not HTML, a body that does not start
/// with `<`, and a transfer that ended without error or timeout.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Plausibility {
    /// The body must end with a line break (a body cut inside a line is
    /// truncated).
    pub require_final_newline: bool,
    /// Fewest records an export must hold (an empty export is never
    /// complete).
    pub min_records: u64,
    /// Fewest records relative to the last complete export (0.5: at least
    /// half). 0 turns the rule off. Between this and 1 − `deletion_brake.
    /// max_share` the export is taken, but its deletions wait for an operator.
    pub min_share_of_last: f64,
    /// Largest share of rejected (unparseable) records: more means the format
    /// changed or the body is not an export.
    pub max_reject_share: f64,
}

impl Default for Plausibility {
    fn default() -> Self {
        Plausibility {
            require_final_newline: true,
            min_records: 1,
            min_share_of_last: 0.5,
            max_reject_share: 0.2,
        }
    }
}

/// Where the state (his number → content hash of what was last published)
/// lives: one snapshot object in a NATS object store, so the extractor keeps
/// nothing on local disk. Run one extractor per `key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StateSettings {
    /// Object-store bucket of the snapshots.
    pub object_bucket: String,
    /// Name of this qMS installation's snapshot in the bucket.
    pub key: String,
    /// Replicas of the bucket in a NATS cluster.
    pub replicas: usize,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            object_bucket: "qms_extractor_state".into(),
            key: "qms".into(),
            replicas: 1,
        }
    }
}

/// Records that could not be parsed are published, with their reason, to a
/// stream of their own (not the patients stream: they are not envelopes).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RejectSettings {
    pub stream: String,
    pub subject: String,
    /// How long rejects are kept.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for RejectSettings {
    fn default() -> Self {
        RejectSettings {
            stream: "QMS_REJECTS".into(),
            subject: "rejects.qms".into(),
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::DocumentType;

    fn load(name: &str, text: &str) -> Result<Settings, String> {
        let path =
            std::env::temp_dir().join(format!("qms-doctypes-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let loaded = etl_runtime::settings::load::<Settings>(Some(&path));
        std::fs::remove_file(&path).ok();
        loaded.map_err(|e| e.to_string())
    }

    #[test]
    fn document_types_default_to_qms_codes_or_come_from_the_file() {
        let s = load("default", "[qms]\nsource = \"qms\"\n").unwrap();
        assert_eq!(s.qms.document_types, DocumentTypeMap::qms_default());
        let s = load(
            "own",
            "[qms.document_types]\n16 = \"passport\"\n3 = \"international_passport\"\n",
        )
        .unwrap();
        let map = &s.qms.document_types;
        assert_eq!(map.map(Some(3)), DocumentType::INTERNATIONAL_PASSPORT);
        assert_eq!(map.map(Some(732)), DocumentType::UNKNOWN, "replaced whole");
        let refused = load("bad", "[qms.document_types]\n16 = \"pasport\"\n").unwrap_err();
        assert!(refused.contains("pasport"), "{refused}");
    }
}
