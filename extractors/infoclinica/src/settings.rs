//! The extractor's configuration: `[nats]`, `[stream]`, `[log]`,
//! `[extractor]` and one `[[databases]]` table per Infoclinica database.
//!
//! The doc comments below are the user documentation of every setting;
//! `deploy/config/infoclinica-extractor.toml` lists them with their defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use etl_runtime::backoff::Backoff;
use etl_runtime::nats::NatsSettings;
use proto::bus::StreamSettings;
use proto::DocumentTypeMap;
use secrecy::SecretString;
use serde::Deserialize;

etl_runtime::service_settings! {
    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(default)]
    pub struct Settings {
        pub nats: NatsSettings,
        pub stream: StreamSettings,
        pub extractor: ExtractorSettings,
        /// The Infoclinica databases to read (one per branch, often). Each has
        /// its own checkpoint, connection and mapping.
        pub databases: Vec<DatabaseSettings>,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ExtractorSettings {
    /// Source name on the bus: records go to `<stream.subject_prefix>.<source>`.
    pub source: String,
    /// NATS KV bucket holding one checkpoint per configured database (key:
    /// the database's `name`).
    pub checkpoint_bucket: String,
    /// NATS object-store bucket holding, per database, the keys and row
    /// versions the last reconciliation pass saw (reconciliation mode only).
    pub snapshot_bucket: String,
    /// Rows per keyset page of the initial load (and per reconciliation
    /// re-read). A page's checkpoint is saved once every publish of the page
    /// is acknowledged, so this is also what a restart may re-publish.
    pub page_size: usize,
    /// Publishes awaiting their ack at most (pipelining). The initial load
    /// keeps at most one page in flight (min of this and `page_size`), so its
    /// checkpoint trails the publishing by one page.
    pub publish_window: usize,
    /// Most records in one bus message of the initial load (a batch
    /// message, see `proto::batch`): several records per message is what
    /// lets the load keep up with the read (nats-server spends 12–16 µs of
    /// CPU per acknowledged message, whatever its size). 1 sends one
    /// message per record, the format loaders older than batch messages
    /// read. Delta passes always send one message per record.
    pub batch_records: usize,
    /// Most payload bytes in one batch message (a record larger than this
    /// goes alone). Keep it well under the server's `max_payload` (1 MiB by
    /// default) and under the loader's `batch_bytes`.
    pub batch_bytes: usize,
    /// Time between two delta (or reconciliation) passes of the daemon.
    #[serde(with = "humantime_serde")]
    pub delta_interval: Duration,
    /// Change-log rows read per delta batch; a pass repeats batches until
    /// the change log has no unprocessed row left.
    pub delta_batch: usize,
    /// Backoff between attempts while Firebird or NATS is down, slow or
    /// refusing the login.
    pub retry: Backoff,
    /// With several `[[databases]]`, whether their PCODEs are one key space
    /// (a central database, or disjoint PCODE ranges per branch). If not,
    /// each database needs its own `source_id_prefix`, or patients of two
    /// branches with the same PCODE would overwrite each other downstream.
    pub pcodes_unique_across_databases: bool,
    /// Longest wait for a TCP connection and login to Firebird.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for one query (a page, a batch of rows, the key scan of
    /// a reconciliation). On expiry the connection is abandoned and the step
    /// retried with backoff.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// The deletion brake of every database of this source: a
    /// reconciliation or change-log pass that would delete more than
    /// `max_share` (default 0.05: 5 %) of the database's records or more
    /// than `max_count` (default 10000) records sends none of its
    /// deletions (its other changes still go out) until an operator runs
    /// `etl brake release infoclinica <database>`; while it holds,
    /// `etl status` shows it, `etl_deletion_brake_held` is 1 and a one-shot
    /// run exits with status 3.
    pub deletion_brake: etl_runtime::brake::BrakeSettings,
}

impl ExtractorSettings {
    /// How the initial load cuts its pages into batch messages.
    pub fn batch_limits(&self) -> proto::batch::BatchLimits {
        proto::batch::BatchLimits {
            max_records: self.batch_records,
            max_bytes: self.batch_bytes,
        }
    }
}

impl Default for ExtractorSettings {
    fn default() -> Self {
        ExtractorSettings {
            source: "infoclinica".into(),
            checkpoint_bucket: "infoclinica_checkpoints".into(),
            snapshot_bucket: "infoclinica_snapshots".into(),
            page_size: 5000,
            publish_window: 4096,
            batch_records: 500,
            batch_bytes: 256 * 1024,
            delta_interval: Duration::from_secs(5),
            delta_batch: 5000,
            retry: Backoff::default(),
            pcodes_unique_across_databases: false,
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(300),
            deletion_brake: Default::default(),
        }
    }
}

/// The connection character set. It must be the charset the data is really
/// stored in (usually WIN1251); text is decoded strictly, and bytes invalid
/// in it are flagged in the record's `issues`, never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Charset {
    #[default]
    Win1251,
    Utf8,
    /// No transliteration by the server: the stored bytes arrive as they are
    /// and are decoded as `none_encoding` says.
    None,
}

/// How bytes read over a `NONE` connection are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum NoneEncoding {
    #[default]
    #[serde(rename = "windows-1251", alias = "WIN1251", alias = "cp1251")]
    Windows1251,
    #[serde(rename = "utf-8", alias = "UTF8", alias = "utf8")]
    Utf8,
}

/// How changes are found after the initial load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Read the change-log table filled by the triggers of
    /// `deploy/firebird/changelog.sql` (recommended).
    #[default]
    Changelog,
    /// No trigger may be installed: compare every key's row version with the
    /// previous pass (a full key scan per pass; see the README).
    Reconcile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Short name of this database: its checkpoint key and what logs and
    /// metrics call it (`[A-Za-z0-9_-]`).
    pub name: String,
    /// Prepended to the PCODE to make the record's source id (e.g.
    /// `north:` → `north:12345`). Empty: the source id is the PCODE.
    /// Required (distinct per database) when several databases are
    /// configured and `pcodes_unique_across_databases` is false. Never
    /// change it once records are published: they would appear as new
    /// records.
    pub source_id_prefix: String,
    pub host: String,
    pub port: u16,
    /// Database path or alias on the server.
    pub database: String,
    /// A Firebird user with Srp authentication (the pure-Rust client does
    /// not speak Legacy_Auth) and SELECT on the patients table (plus
    /// SELECT, UPDATE on the change log).
    pub user: String,
    /// Never printed.
    pub password: SecretString,
    /// Connection character set: WIN1251, UTF8 or NONE.
    pub charset: Charset,
    /// Decoding of text over a NONE connection.
    pub none_encoding: NoneEncoding,
    /// Changelog (triggers) or reconcile (no triggers).
    pub sync: SyncMode,
    /// FILIAL value → business unit, e.g. `{ "7" = "branch-7" }`.
    pub business_units: BTreeMap<String, String>,
    /// Business unit of a FILIAL missing from `business_units` (or NULL). If
    /// unset, such a record has no business unit and an issue says why.
    pub default_business_unit: Option<String>,
    /// This database's document-type dictionary: `PASPTYPE` code →
    /// canonical type (`passport`, `international_passport`,
    /// `birth_certificate`, `foreign_birth_certificate`,
    /// `merchant_navy_passport`, `seamans_passport`, `military_id`,
    /// `reserve_officer_id`, `diplomatic_passport`, `foreign_passport`,
    /// `refugee_application`, `residence_permit`, `refugee_id`,
    /// `forced_migrant_id`, `temporary_id`, `temporary_residence_permit`,
    /// `other`, `unknown`). `PASPTYPE` refers to a dictionary each
    /// installation keeps, so codes differ between databases (in some, 3 is
    /// the international passport and 5 the birth certificate). Default:
    /// 1–17 in the canonical numbering (1 passport, 2 international
    /// passport, 3 birth certificate, …, 17 other), 88 and 99 other. A table
    /// given here replaces the default whole: a code it leaves out is
    /// `unknown`, never a guess. Rows already published keep the types
    /// they were read with until they change or an initial load runs again
    /// (`--initial-load --restart`, see the README).
    pub document_types: DocumentTypeMap,
    pub table: TableSettings,
    pub changelog: ChangelogSettings,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            name: "main".into(),
            source_id_prefix: String::new(),
            host: "127.0.0.1".into(),
            port: 3050,
            database: String::new(),
            user: String::new(),
            password: SecretString::from(""),
            charset: Charset::default(),
            none_encoding: NoneEncoding::default(),
            sync: SyncMode::default(),
            business_units: BTreeMap::new(),
            default_business_unit: None,
            document_types: DocumentTypeMap::infoclinica_default(),
            table: TableSettings::default(),
            changelog: ChangelogSettings::default(),
        }
    }
}

/// The patients table and its columns. Defaults are Infoclinica's. The
/// portal password column (`CLPASSWORD`) is never selected: no setting names
/// it, and a column mapped to it is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TableSettings {
    pub name: String,
    /// Integer key, > 0: the record's source id.
    pub pcode: String,
    pub filial: String,
    pub last_name: String,
    pub first_name: String,
    pub middle_name: String,
    pub birth_date: String,
    pub document_type: String,
    pub document_series: String,
    pub document_number: String,
    /// Phone columns in order PHONE1, PHONE2, PHONE3. The last non-empty one
    /// is marked preferred (as the system we replace chose it).
    pub phones: Vec<String>,
    pub email: String,
    /// Portal login, published as a `login` e-mail.
    pub login: Option<String>,
    /// SNILS column, if this installation has one.
    pub snils: Option<String>,
    /// OMS policy (ENP) column, if this installation has one.
    pub oms_policy: Option<String>,
    /// Reconciliation mode: a column that changes on every update (a
    /// modification timestamp or counter). Unset: `RDB$RECORD_VERSION`.
    pub version_column: Option<String>,
}

impl Default for TableSettings {
    fn default() -> Self {
        TableSettings {
            name: "CLIENTS".into(),
            pcode: "PCODE".into(),
            filial: "FILIAL".into(),
            last_name: "LASTNAME".into(),
            first_name: "FIRSTNAME".into(),
            middle_name: "MIDNAME".into(),
            birth_date: "BDATE".into(),
            document_type: "PASPTYPE".into(),
            document_series: "PASPSER".into(),
            document_number: "PASPNUM".into(),
            phones: vec!["PHONE1".into(), "PHONE2".into(), "PHONE3".into()],
            email: "CLMAIL".into(),
            login: Some("CLLOGIN".into()),
            snils: None,
            oms_policy: None,
            version_column: None,
        }
    }
}

/// The change-log table installed by `deploy/firebird/changelog.sql`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ChangelogSettings {
    /// Table with columns ID (from a sequence), PCODE, FILIAL, OPERATION
    /// ('I', 'U', 'D'), CHANGED_AT and PROCESSED ('N', 'Y').
    pub table: String,
}

impl Default for ChangelogSettings {
    fn default() -> Self {
        ChangelogSettings {
            table: "ETL_CLIENTS_LOG".into(),
        }
    }
}

/// A setting that cannot work, named without its value when it is a secret.
#[derive(Debug, thiserror::Error)]
pub enum InvalidSettings {
    #[error("no [[databases]] configured")]
    NoDatabases,
    #[error("database name {0:?} is empty, repeated or not [A-Za-z0-9_-]")]
    DatabaseName(String),
    #[error("database {0}: `database` (path or alias) is empty")]
    DatabasePath(String),
    #[error("database {db}: {what} {name:?} is not a plain SQL identifier")]
    Identifier {
        db: String,
        what: &'static str,
        name: String,
    },
    #[error("database {0}: the password column is never read; do not map a field to it")]
    PasswordColumn(String),
    #[error("extractor.page_size, delta_batch, publish_window, batch_records and batch_bytes must be at least 1")]
    Sizes,
    #[error("extractor.source is not a valid source name")]
    Source,
    #[error(
        "several databases: give each a distinct source_id_prefix, or set \
         extractor.pcodes_unique_across_databases = true"
    )]
    SourceIdPrefix,
}

/// Infoclinica's portal password column.
pub const PASSWORD_COLUMN: &str = "CLPASSWORD";

impl Settings {
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        if self.databases.is_empty() {
            return Err(InvalidSettings::NoDatabases);
        }
        if !proto::bus::is_valid_source_name(&self.extractor.source) {
            return Err(InvalidSettings::Source);
        }
        let e = &self.extractor;
        if e.page_size == 0
            || e.delta_batch == 0
            || e.publish_window == 0
            || e.batch_records == 0
            || e.batch_bytes == 0
        {
            return Err(InvalidSettings::Sizes);
        }
        let mut names = std::collections::HashSet::new();
        for db in &self.databases {
            let valid_name = !db.name.is_empty()
                && db.name.len() <= 64
                && db
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name || !names.insert(db.name.clone()) {
                return Err(InvalidSettings::DatabaseName(db.name.clone()));
            }
            if db.database.trim().is_empty() {
                return Err(InvalidSettings::DatabasePath(db.name.clone()));
            }
            db.validate_identifiers()?;
            if db.source_id_prefix.trim() != db.source_id_prefix
                || db.source_id_prefix.contains('\0')
                || db.source_id_prefix.len() > 32
            {
                return Err(InvalidSettings::SourceIdPrefix);
            }
        }
        let prefixes: std::collections::HashSet<&str> = self
            .databases
            .iter()
            .map(|d| d.source_id_prefix.as_str())
            .collect();
        if self.databases.len() > 1
            && !self.extractor.pcodes_unique_across_databases
            && prefixes.len() != self.databases.len()
        {
            return Err(InvalidSettings::SourceIdPrefix);
        }
        Ok(())
    }
}

impl DatabaseSettings {
    /// The columns of `table.name` this database's mapping reads, in the
    /// order of the settings (`version_column` included when set).
    pub fn mapped_columns(&self) -> Vec<&str> {
        let t = &self.table;
        let mut all: Vec<&str> = vec![
            &t.pcode,
            &t.filial,
            &t.last_name,
            &t.first_name,
            &t.middle_name,
            &t.birth_date,
            &t.document_type,
            &t.document_series,
            &t.document_number,
            &t.email,
        ];
        all.extend(t.phones.iter().map(String::as_str));
        all.extend(
            [&t.login, &t.snils, &t.oms_policy, &t.version_column]
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
        all
    }

    fn validate_identifiers(&self) -> Result<(), InvalidSettings> {
        let t = &self.table;
        let mut all: Vec<(&'static str, &str)> =
            vec![("table", &t.name), ("table", &self.changelog.table)];
        all.extend(self.mapped_columns().into_iter().map(|c| ("column", c)));
        for (what, name) in all {
            if !is_identifier(name) {
                return Err(InvalidSettings::Identifier {
                    db: self.name.clone(),
                    what,
                    name: name.to_string(),
                });
            }
            if what == "column" && name.eq_ignore_ascii_case(PASSWORD_COLUMN) {
                return Err(InvalidSettings::PasswordColumn(self.name.clone()));
            }
        }
        Ok(())
    }
}

/// A plain (unquoted) Firebird identifier, or `RDB$…`: letters, digits, `_`
/// and `$`, starting with a letter. Names are put into SQL text, so nothing
/// else is allowed.
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_db() -> Settings {
        Settings {
            databases: vec![DatabaseSettings {
                database: "/data/clinic.fdb".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid() {
        one_db().validate().unwrap();
    }

    #[test]
    fn refuses_the_password_column_and_odd_identifiers() {
        let mut s = one_db();
        s.databases[0].table.login = Some("clpassword".into());
        assert!(matches!(
            s.validate(),
            Err(InvalidSettings::PasswordColumn(_))
        ));
        let mut s = one_db();
        s.databases[0].table.name = "CLIENTS; DROP TABLE X".into();
        assert!(matches!(
            s.validate(),
            Err(InvalidSettings::Identifier { .. })
        ));
        let mut s = one_db();
        s.databases.push(s.databases[0].clone());
        assert!(matches!(
            s.validate(),
            Err(InvalidSettings::DatabaseName(_))
        ));
    }

    #[test]
    fn the_example_configuration_loads() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/config/infoclinica-extractor.toml"
        );
        let s: Settings = etl_runtime::settings::load(Some(std::path::Path::new(path))).unwrap();
        s.validate().unwrap();
        let db = &s.databases[0];
        assert_eq!(db.charset, Charset::Win1251);
        assert_eq!(db.none_encoding, NoneEncoding::Windows1251);
        assert_eq!(
            db.business_units.get("7").map(String::as_str),
            Some("branch-7")
        );
        let defaults = ExtractorSettings::default();
        assert_eq!(s.extractor.page_size, defaults.page_size);
        assert_eq!(s.extractor.query_timeout, defaults.query_timeout);
        assert_eq!(s.extractor.retry.max, defaults.retry.max);
    }

    #[test]
    fn document_types_are_per_database() {
        let toml = r#"
            [[databases]]
            name = "north"
            database = "/data/north.fdb"
            source_id_prefix = "north:"

            [[databases]]
            name = "south"
            database = "/data/south.fdb"
            source_id_prefix = "south:"
            [databases.document_types]
            1 = "passport"
            3 = "international_passport"
            5 = "birth_certificate"
            99 = "other"
        "#;
        let load = |name: &str, text: &str| {
            let path = std::env::temp_dir().join(format!(
                "infoclinica-doctypes-{}-{name}.toml",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap();
            let loaded = etl_runtime::settings::load::<Settings>(Some(&path));
            std::fs::remove_file(&path).ok();
            loaded
        };
        let s = load("good", toml).unwrap();
        s.validate().unwrap();
        let (north, south) = (
            &s.databases[0].document_types,
            &s.databases[1].document_types,
        );
        assert_eq!(north, &DocumentTypeMap::infoclinica_default());
        assert_eq!(north.map(Some(3)), proto::DocumentType::BIRTH_CERTIFICATE);
        assert_eq!(
            south.map(Some(3)),
            proto::DocumentType::INTERNATIONAL_PASSPORT
        );
        assert_eq!(south.map(Some(5)), proto::DocumentType::BIRTH_CERTIFICATE);
        assert_eq!(south.map(Some(2)), proto::DocumentType::UNKNOWN);

        let bad = toml.replace("\"birth_certificate\"", "\"birth certificate\"");
        let refused = load("bad", &bad).unwrap_err();
        assert!(
            refused.to_string().contains("birth certificate"),
            "{refused}"
        );
    }

    #[test]
    fn password_is_not_printed() {
        let mut s = one_db();
        s.databases[0].password = SecretString::from("masterkey-secret");
        assert!(!format!("{s:?}").contains("masterkey-secret"));
    }
}
