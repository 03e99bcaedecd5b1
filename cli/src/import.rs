//! `etl import`: publishes another system's extract, one JSON object per
//! line (NDJSON), to the bus, as an extractor would; and `etl generate-truth`,
//! which writes such files from the truth generator, or from the public
//! FEBRL1–3 sets, with their truth.
//!
//! The NDJSON form of a record (documented in matcher/EVALUATION.md):
//!
//! ```json
//! {"source_id": "41449/A22", "op": "upsert", "version": 1,
//!  "record": {"last_name": "Иванов", "first_name": "Пётр", "middle_name": "Сергеевич",
//!             "birth_date": "1990-05-03", "sex": "M",
//!             "documents": [{"type": 1, "series": "4506", "number": "012345"}],
//!             "snils": {"value": "11223344595"}, "oms_policy": null,
//!             "phones": [{"number": {"value": "79123456789"}, "preferred": true}],
//!             "emails": [{"address": {"value": "p@mail.ru"}, "kind": "contact"}]}}
//! ```
//!
//! `record` is `proto::PatientRecord` in JSON (fields by name, all optional);
//! `op` defaults to `upsert` (`delete` needs no record); `version` defaults
//! to the import time in microseconds. Names and dates are taken as
//! normalized: an importer that has raw values runs them through
//! `proto::normalize` first (the truth generator's files already are). The
//! validity of identifiers is never taken from the file: the loader
//! computes it again from their values (`loader::validity`).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use async_nats::jetstream;
use chrono::Utc;
use etl_runtime::progress::{Progress, Unit};
use proto::bus::{self, DuplicateMode};
use proto::{Envelope, PatientRecord};
use serde::{Deserialize, Serialize};

use crate::Settings;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Source name (subject `<prefix>.<source>`), registered with `etl
    /// sources register`.
    #[arg(long)]
    source: String,
    /// NDJSON file, one record per line.
    file: PathBuf,
}

#[derive(Serialize, Deserialize)]
pub struct Line {
    pub source_id: String,
    #[serde(default = "upsert")]
    pub op: String,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub record: Option<PatientRecord>,
}

fn upsert() -> String {
    "upsert".into()
}

pub async fn import(settings: &Settings, args: ImportArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        bus::is_valid_source_name(&args.source),
        "invalid source name"
    );
    // Checked before anything is published: the loader would set every
    // record of an unregistered source aside (`unknown_source`).
    anyhow::ensure!(
        crate::sources::is_registered(settings, &args.source).await?,
        "source {} is not registered, so the loader would set its records aside \
         as unknown_source; register it first: etl sources register {}",
        args.source,
        args.source
    );
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let client = settings.nats.connect("etl-import").await?;
    let js = jetstream::new(client.clone());
    bus::ensure_stream(&js, &settings.stream)
        .await
        .context("creating the stream")?;
    let mut publisher =
        bus::Publisher::with_mode(&js, &settings.stream, 2048, DuplicateMode::Republish);
    let now = Utc::now();
    let (mut sent, mut rejected) = (0u64, 0u64);
    let size = file.metadata().map(|m| m.len()).ok();
    let progress = Progress::start("import", Unit::Bytes, size);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        progress.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        // A bad line is reported by number and reason, never by content.
        let parsed: Line = match serde_json::from_str(&line) {
            Ok(l) => l,
            Err(e) => {
                progress.suspend(|| {
                    eprintln!(
                        "line {}: not a record ({} at column {})",
                        n + 1,
                        e.classify_str(),
                        e.column()
                    )
                });
                rejected += 1;
                continue;
            }
        };
        let version = parsed.version.unwrap_or_else(|| now.timestamp_micros());
        let envelope = match (parsed.op.as_str(), parsed.record) {
            ("delete", _) => Envelope::delete(&args.source, parsed.source_id, version, now),
            ("upsert", Some(record)) => {
                Envelope::upsert(&args.source, parsed.source_id, version, now, record)
            }
            _ => {
                progress.suspend(|| {
                    eprintln!(
                        "line {}: op must be upsert (with a record) or delete",
                        n + 1
                    )
                });
                rejected += 1;
                continue;
            }
        };
        publisher.send(&envelope).await?;
        sent += 1;
    }
    let published = publisher.settle().await?;
    client.flush().await?;
    progress.finish();
    println!(
        "imported {sent} records from {} as source {} ({} stored, {} duplicates dropped, {rejected} lines rejected)",
        args.file.display(),
        args.source,
        published.stored,
        published.duplicates
    );
    Ok(())
}

trait Classify {
    fn classify_str(&self) -> &'static str;
}
impl Classify for serde_json::Error {
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong field type or value",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// `generated` (the truth generator, with --persons and --seed),
    /// `generated-clerks` (the same with the failure classes of clinics'
    /// real data) or one of the public sets `febrl1`, `febrl2`, `febrl3`.
    #[arg(long, default_value = "generated")]
    set: String,
    /// Real persons to describe (records: about 1.5 per person).
    #[arg(long, default_value_t = 10_000)]
    persons: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for `<source>.ndjson` and `truth.csv`.
    #[arg(long)]
    out: PathBuf,
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let records = match args.set.as_str() {
        "generated" => synth::truth::TruthGenerator::new(args.seed).records(args.persons),
        "generated-clerks" => synth::truth::TruthGenerator::new(args.seed)
            .with_clerks()
            .records(args.persons),
        name => synth::febrl::records(name).with_context(|| {
            format!(
                "unknown set {name:?}: use generated, generated-clerks, febrl1, febrl2 or febrl3"
            )
        })?,
    };
    std::fs::create_dir_all(&args.out)?;
    let mut files = std::collections::BTreeMap::new();
    for s in synth::truth::SOURCES {
        files.insert(
            s,
            std::io::BufWriter::new(std::fs::File::create(args.out.join(format!("{s}.ndjson")))?),
        );
    }
    let mut truth = std::io::BufWriter::new(std::fs::File::create(args.out.join("truth.csv"))?);
    writeln!(truth, "source,source_id,person,group")?;
    for t in &records {
        let line = Line {
            source_id: t.source_id.clone(),
            op: "upsert".into(),
            version: Some(1),
            record: Some(t.record.clone()),
        };
        let w = files.get_mut(t.source).expect("known source");
        serde_json::to_writer(&mut *w, &line)?;
        w.write_all(b"\n")?;
        writeln!(
            truth,
            "{},{},{},{}",
            t.source,
            t.source_id,
            t.person,
            t.group.as_deref().unwrap_or("")
        )?;
    }
    for (_, mut w) in files {
        w.flush()?;
    }
    truth.flush()?;
    let persons: std::collections::HashSet<&str> =
        records.iter().map(|t| t.person.as_str()).collect();
    println!(
        "{} records of {} persons written to {}",
        records.len(),
        persons.len(),
        args.out.display()
    );
    Ok(())
}
