//! Where the export is downloaded and checked: one HTTP attempt, streamed
//! and parsed as it arrives, into compact per-record hashes plus a spill
//! file of the raw records, so memory stays flat in the export's size and
//! nothing is published before the whole export is known to be complete.
//!
//! The body is read on the async side and parsed on a blocking thread
//! (bounded channel between them: a slow parser slows the download, it
//! never buffers it).

use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use tokio::sync::mpsc;

use crate::parse::{
    self, Decoder, Line, LineSplitter, Profile, RawRecord, RejectReason, Rejected, Rejoiner,
};
use crate::settings::{Plausibility, QmsSettings};
use crate::state::{short, Entries};

/// Why one attempt did not give a usable export. Messages carry no record
/// content.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// Connection refused or reset, timeout, HTTP 5xx/408/429: retried.
    #[error("download failed: {0}")]
    Transient(String),
    /// A response that is not a complete export (HTML, empty, truncated,
    /// too few rows): retried, and never published.
    #[error("export is not complete or plausible: {0}")]
    Implausible(String),
    /// HTTP 429 or 503 with a `Retry-After` header: qMS asks to wait.
    #[error("download failed: HTTP status {status}; qMS asks to retry after {wait:?}")]
    RetryAfter { status: StatusCode, wait: Duration },
    /// Retrying cannot help (HTTP 4xx: wrong URL or credentials).
    #[error("download failed permanently: {0}")]
    Permanent(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl AttemptError {
    pub fn kind(&self) -> &'static str {
        match self {
            AttemptError::Transient(_) | AttemptError::RetryAfter { .. } => "transient",
            AttemptError::Implausible(_) => "implausible",
            AttemptError::Permanent(_) => "permanent",
            AttemptError::Unexpected(_) => "unexpected",
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AttemptError::Transient(_)
                | AttemptError::Implausible(_)
                | AttemptError::RetryAfter { .. }
        )
    }

    /// The wait the server asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::RetryAfter { wait, .. } => Some(*wait),
            _ => None,
        }
    }
}

/// A complete export, parsed.
pub struct Export {
    /// His number → hash → spill offset of every parsed record, in export
    /// order (not yet sorted).
    pub entries: Entries,
    /// His numbers of rejected records (kept at their last published state).
    pub rejected_his: Vec<String>,
    pub spill: Spill,
    pub stats: ExportStats,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ExportStats {
    pub bytes: u64,
    pub lines: u64,
    pub records: u64,
    pub rejects: u64,
}

/// One attempt: download, parse, check. `last_export_records` is the size of
/// the last complete export (0 before the first).
pub async fn fetch(
    http: &reqwest::Client,
    settings: &QmsSettings,
    decoder: Decoder,
    last_export_records: u64,
) -> Result<Export, AttemptError> {
    let read_timeout = settings.read_timeout;
    let response = tokio::time::timeout(read_timeout, http.get(&settings.url).send())
        .await
        .map_err(|_| AttemptError::Transient(format!("no response within {read_timeout:?}")))?
        .map_err(|e| AttemptError::Transient(describe(&e)))?;
    let status = response.status();
    let busy = status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
    if let Some(wait) = retry_after(response.headers()).filter(|_| busy) {
        return Err(AttemptError::RetryAfter { status, wait });
    }
    if status != StatusCode::OK {
        let msg = format!("HTTP status {status}");
        return Err(
            if status.is_server_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
            {
                AttemptError::Transient(msg)
            } else {
                AttemptError::Permanent(msg)
            },
        );
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.contains("html") {
        return Err(AttemptError::Implausible(format!(
            "content type {content_type}"
        )));
    }

    let spill = Spill::create(settings.spill_dir.as_deref()).map_err(anyhow::Error::from)?;
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let profile = settings.profile();
    let max_line = settings.max_line_bytes;
    // Room for the last export's size plus some growth, so that the entries
    // are not reallocated to double their size near the end (peak memory).
    let expected = (last_export_records + last_export_records / 64).max(64 * 1024) as usize;
    let parser = tokio::task::spawn_blocking(move || {
        parse_stream(rx, decoder, &profile, spill, expected, max_line)
    });

    let mut response = response;
    let mut first = true;
    let progress = etl_runtime::progress::Progress::start(
        "qMS export download",
        etl_runtime::progress::Unit::Bytes,
        response.content_length(),
    )
    .every(settings.progress_interval);
    let download: Result<(), AttemptError> = async {
        loop {
            let chunk = tokio::time::timeout(read_timeout, response.chunk())
                .await
                .map_err(|_| {
                    AttemptError::Transient(format!("no data for {read_timeout:?} (read timeout)"))
                })?
                .map_err(|e| AttemptError::Transient(describe(&e)))?;
            let Some(chunk) = chunk else { return Ok(()) };
            progress.inc(chunk.len() as u64);
            if first {
                if let Some(&b) = chunk.iter().find(|b| !b.is_ascii_whitespace()) {
                    first = false;
                    if b == b'<' {
                        return Err(AttemptError::Implausible("the body is HTML".into()));
                    }
                }
            }
            if tx.send(chunk).await.is_err() {
                return Ok(()); // the parser failed; its error is reported below
            }
        }
    }
    .await;
    drop(tx);
    let parsed = parser
        .await
        .map_err(|e| anyhow::anyhow!("parser thread: {e}"))?;
    download?;
    let parsed = parsed?;
    check(&parsed, &settings.plausibility, last_export_records)?;
    Ok(parsed.export)
}

/// `--check-config`: asks for the export and reads the answer's status and
/// headers only (the body is left unread). Names the server, not the URL
/// (it may carry credentials).
pub async fn check_url(http: &reqwest::Client, settings: &QmsSettings) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(&settings.url)
        .map_err(|e| anyhow::anyhow!("qms.url is not a URL: {e}"))?;
    let server = format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or("?"),
        url.port_or_known_default().unwrap_or(0)
    );
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{server}: {}", describe(&e)))?;
    let status = response.status();
    anyhow::ensure!(status == StatusCode::OK, "{server}: HTTP status {status}");
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_string();
    anyhow::ensure!(
        !content_type.to_ascii_lowercase().contains("html"),
        "{server}: answers with {content_type}, not an export"
    );
    let length = match response.content_length() {
        Some(n) => format!("{n} bytes"),
        None => "length not given".into(),
    };
    Ok(format!("{server}: HTTP 200, {content_type}, {length}"))
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 §10.2.3); a date
/// in the past means now.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ahead = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(ahead.to_std().unwrap_or(Duration::ZERO))
}

/// reqwest's error text without the URL (it may carry credentials).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_body() || e.is_decode() {
        "the body was cut off"
    } else if e.is_request() {
        "request failed"
    } else {
        "transfer failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

struct Parsed {
    export: Export,
    /// The body did not end with a line break.
    unterminated: bool,
}

/// The parser thread: lines → records → hashes, records spilled.
fn parse_stream(
    mut rx: mpsc::Receiver<Bytes>,
    decoder: Decoder,
    profile: &Profile,
    mut spill: Spill,
    expected_records: usize,
    max_line: usize,
) -> anyhow::Result<Parsed> {
    let mut splitter = LineSplitter::new(max_line);
    let mut joiner = Rejoiner::default();
    let mut sink = Sink {
        entries: Entries::with_capacity(expected_records),
        rejected_his: Vec::new(),
        stats: ExportStats::default(),
        profile,
        error: None,
    };
    // Decoded lines that are not valid UTF-8 as they are (CP1251) go here.
    let mut decoded = String::new();
    let mut on_line =
        |line: Line<'_>, joiner: &mut Rejoiner, sink: &mut Sink, spill: &mut Spill| {
            let (text, bad) = decoder.decode_with(line.bytes, &mut decoded);
            if line.cut > 0 {
                joiner.push_too_long(text, line.len(), max_line, |raw| sink.record(raw, spill));
            } else {
                joiner.push(text, bad, |raw| sink.record(raw, spill));
            }
        };
    while let Some(chunk) = rx.blocking_recv() {
        splitter.push(&chunk, |line| {
            on_line(line, &mut joiner, &mut sink, &mut spill)
        });
    }
    let unterminated = splitter.finish(|line| on_line(line, &mut joiner, &mut sink, &mut spill));
    joiner.finish(|raw| sink.record(raw, &mut spill));
    if let Some(e) = sink.error {
        return Err(e.into());
    }
    spill.finish()?;
    sink.stats.bytes = splitter.bytes;
    sink.stats.lines = joiner.lines();
    Ok(Parsed {
        export: Export {
            entries: sink.entries,
            rejected_his: sink.rejected_his,
            spill,
            stats: sink.stats,
        },
        unterminated,
    })
}

struct Sink<'a> {
    entries: Entries,
    rejected_his: Vec<String>,
    stats: ExportStats,
    profile: &'a Profile,
    error: Option<std::io::Error>,
}

impl Sink<'_> {
    fn record(&mut self, raw: &RawRecord, spill: &mut Spill) {
        if self.error.is_some() {
            return;
        }
        let result = match parse::check_record(raw) {
            Ok(his) => {
                self.stats.records += 1;
                let hash = parse::raw_hash(raw, self.profile);
                spill.write_record(raw).map(|at| {
                    self.entries.push(his, short(&hash), at);
                })
            }
            Err(Rejected { his_number, reason }) => {
                self.stats.rejects += 1;
                metrics::counter!("qms_rejected_records_total", "reason" => reason.code())
                    .increment(1);
                tracing::warn!(
                    line = raw.line,
                    his_number = his_number.as_deref().unwrap_or(""),
                    reason = reason.code(),
                    "record rejected"
                );
                if let Some(his) = his_number.clone() {
                    self.rejected_his.push(his);
                }
                spill.write_reject(raw, reason, his_number.as_deref())
            }
        };
        if let Err(e) = result {
            self.error = Some(e);
        }
    }
}

/// The completeness rules (see [`Plausibility`]).
fn check(
    parsed: &Parsed,
    rules: &Plausibility,
    last_export_records: u64,
) -> Result<(), AttemptError> {
    let s = parsed.export.stats;
    if parsed.unterminated && rules.require_final_newline {
        return Err(AttemptError::Implausible(
            "the body does not end with a line break (truncated)".into(),
        ));
    }
    if s.records < rules.min_records.max(1) {
        return Err(AttemptError::Implausible(format!(
            "{} records (at least {} required)",
            s.records,
            rules.min_records.max(1)
        )));
    }
    let floor = (last_export_records as f64 * rules.min_share_of_last).ceil() as u64;
    if rules.min_share_of_last > 0.0 && s.records < floor {
        return Err(AttemptError::Implausible(format!(
            "{} records, fewer than {:.0}% of the last complete export ({last_export_records})",
            s.records,
            rules.min_share_of_last * 100.0
        )));
    }
    let total = s.records + s.rejects;
    if total > 0 && s.rejects as f64 > rules.max_reject_share * total as f64 {
        return Err(AttemptError::Implausible(format!(
            "{} of {total} records rejected (more than {:.0}%)",
            s.rejects,
            rules.max_reject_share * 100.0
        )));
    }
    Ok(())
}

/// A temporary file of the raw records of one export, read back to publish
/// the changed ones once the export is known to be complete. Unlinked at
/// creation: nothing is left behind, even after kill -9.
pub struct Spill {
    writer: Option<BufWriter<std::fs::File>>,
    reader: Option<BufReader<std::fs::File>>,
    written: u64,
    read_at: u64,
}

const TAG_RECORD: u8 = 0;
const TAG_REJECT: u8 = 1;

/// One item read back from the spill file.
pub enum Spilled {
    Record(RawRecord),
    Reject {
        raw: RawRecord,
        reason: &'static str,
        his_number: Option<String>,
    },
}

impl Spill {
    fn create(dir: Option<&std::path::Path>) -> std::io::Result<Spill> {
        let file = match dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        };
        Ok(Spill {
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            reader: None,
            written: 0,
            read_at: 0,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer
            .as_mut()
            .expect("spill is open for writing")
            .write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn write_record(&mut self, raw: &RawRecord) -> std::io::Result<u64> {
        let at = self.written;
        self.put(&[TAG_RECORD, u8::from(raw.bad_encoding)])?;
        self.put(&raw.line.to_le_bytes())?;
        self.put(&(raw.text.len() as u32).to_le_bytes())?;
        self.put(raw.text.as_bytes())?;
        Ok(at)
    }

    fn write_reject(
        &mut self,
        raw: &RawRecord,
        reason: RejectReason,
        his: Option<&str>,
    ) -> std::io::Result<()> {
        self.put(&[TAG_REJECT, u8::from(raw.bad_encoding), reason as u8])?;
        self.put(&raw.line.to_le_bytes())?;
        let his = his.unwrap_or("").as_bytes();
        self.put(&(his.len() as u32).to_le_bytes())?;
        self.put(his)?;
        self.put(&(raw.text.len() as u32).to_le_bytes())?;
        self.put(raw.text.as_bytes())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let writer = self.writer.take().expect("spill is open for writing");
        let mut file = writer.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        self.reader = Some(BufReader::with_capacity(1 << 20, file));
        Ok(())
    }

    /// Reads the items in order from the start; [`Spill::next_item`] gives them.
    pub fn rewind(&mut self) -> std::io::Result<()> {
        self.reader
            .as_mut()
            .expect("spill is finished")
            .seek(SeekFrom::Start(0))?;
        self.read_at = 0;
        Ok(())
    }

    /// The next item and its offset, `None` at the end.
    pub fn next_item(&mut self) -> std::io::Result<Option<(u64, Spilled)>> {
        let reader = self.reader.as_mut().expect("spill is finished");
        let mut tag = [0u8; 2];
        match reader.read_exact(&mut tag) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let start = self.read_at;
        let bad_encoding = tag[1] != 0;
        let mut buf = Vec::new();
        let item = if tag[0] == TAG_RECORD {
            let line = read_u64(reader)?;
            let text = read_text(reader, &mut buf)?;
            self.read_at += 2 + 8 + 4 + text.len() as u64;
            Spilled::Record(RawRecord {
                text,
                line,
                bad_encoding,
                too_long: false,
            })
        } else {
            let mut reason = [0u8; 1];
            reader.read_exact(&mut reason)?;
            let line = read_u64(reader)?;
            let his = read_text(reader, &mut buf)?;
            let text = read_text(reader, &mut buf)?;
            self.read_at += 3 + 8 + 4 + his.len() as u64 + 4 + text.len() as u64;
            Spilled::Reject {
                raw: RawRecord {
                    text,
                    line,
                    bad_encoding,
                    too_long: false,
                },
                reason: reason_code(reason[0]),
                his_number: (!his.is_empty()).then_some(his),
            }
        };
        Ok(Some((start, item)))
    }
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_text(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<String> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    buf.resize(u32::from_le_bytes(b) as usize, 0);
    r.read_exact(buf)?;
    String::from_utf8(std::mem::take(buf))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "spill file corrupted"))
}

fn reason_code(n: u8) -> &'static str {
    [
        RejectReason::NoRecordStart,
        RejectReason::TooFewFields,
        RejectReason::TooManyFields,
        RejectReason::NulCharacter,
        RejectReason::TooLong,
        RejectReason::Unterminated,
    ]
    .into_iter()
    .find(|r| *r as u8 == n)
    .map_or("unknown", RejectReason::code)
}

/// The shortest wait before a sync's next attempt: the server's
/// `Retry-After`, when it sent one, cut to `max_retry_after` (the backoff
/// applies as well: the longer of the two is waited).
pub fn retry_after_floor(settings: &QmsSettings, error: &AttemptError) -> Duration {
    error
        .retry_after()
        .map_or(Duration::ZERO, |wait| wait.min(settings.max_retry_after))
}
