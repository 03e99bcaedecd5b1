//! A qMS export simulator: serves `GET /cgi-bin/qms_export_pat` in the real
//! format, with fault modes, for tests, demos and benchmarks.
//!
//! qMS has no public server. What is known of its export (described in
//! extractors/qms/README.md) is reproduced here: one record per
//! line, 11 `|`-separated fields (his number, last/first/middle name, birth
//! date `YYYYMMDD`, qMS document code, series, number, contact e-mail,
//! phone, login e-mail), records that wrap across physical lines, UTF-8 or
//! CP1251, the full patient list on every request, no trailer.
//!
//! The rows come from a data file served verbatim, or from [`synth`]'s seeded
//! generator of Russian patients: row `i` is patient `i` of the seed, so any
//! size up to millions is produced on the fly (memory does not grow with
//! it), and a test can regenerate any row. Between requests the data can be
//! changed ([`Simulator::edit`], [`Simulator::delete`], [`Simulator::set_count`]
//! or the `/admin/*` endpoints), and faults can be injected per request
//! (`?fault=…`), queued for the next requests ([`Simulator::push_fault`],
//! `POST /admin/fault`) or configured for every request.
//!
//! Endpoints:
//!
//! | request | effect |
//! |---|---|
//! | `GET /cgi-bin/qms_export_pat[?fault=F&encoding=E&wrap=N]` | the export |
//! | `POST /admin/edit?from=A&to=B` | rows A..B get a new phone (again: another) |
//! | `POST /admin/delete?from=A&to=B` | rows A..B disappear from the export |
//! | `POST /admin/restore?from=A&to=B` | deleted/edited rows A..B come back as generated |
//! | `POST /admin/count?count=N` | the export has N generated rows |
//! | `POST /admin/fault?mode=F[&times=N]` | the next N requests (default 1) fail so; `mode=none` clears |
//! | `GET /admin/stats` | requests served, as `requests=N` |

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use proto::{DocumentType, EmailKind};
use serde::Deserialize;

/// The path of the real endpoint.
pub const EXPORT_PATH: &str = "/cgi-bin/qms_export_pat";

/// How a request fails, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// A correct, complete export.
    #[default]
    None,
    /// Nothing at all (not even headers) for `slow_first_byte`, then the export.
    SlowFirstByte,
    /// The export in small pieces, `drip_delay` apart.
    SlowDrip,
    /// HTTP 500 with a short text body.
    Http500,
    /// HTTP 503 with a short text body.
    Http503,
    /// Half of the export, then the connection is reset (no final chunk).
    Reset,
    /// A clean, well-terminated response whose body stops in the middle of
    /// a line about halfway through.
    Truncate,
    /// A clean response that stops at a line boundary after 40% of the rows
    /// (what only a row-count check can catch).
    TruncateAtLine,
    /// An HTML error page with status 200 (as CGI front ends do).
    Html200,
    /// Status 200 and an empty body.
    Empty,
    /// HTTP 429 with `Retry-After` (seconds of [`Config::retry_after`]).
    Busy429,
    /// The export with one extra line of [`Config::long_line_bytes`] bytes
    /// after the first piece (a his number, then one field without end).
    LongLine,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" | "" => Fault::None,
            "slow-first-byte" => Fault::SlowFirstByte,
            "slow-drip" => Fault::SlowDrip,
            "500" | "http-500" => Fault::Http500,
            "503" | "http-503" => Fault::Http503,
            "reset" => Fault::Reset,
            "truncate" => Fault::Truncate,
            "truncate-at-line" => Fault::TruncateAtLine,
            "html" | "html-200" => Fault::Html200,
            "empty" => Fault::Empty,
            "busy-429" => Fault::Busy429,
            "long-line" => Fault::LongLine,
            other => return Err(format!("unknown fault mode {other:?}")),
        })
    }
}

impl Fault {
    /// Every mode that is a failure, for tests that go through them all.
    pub const FAILURES: &'static [Fault] = &[
        Fault::SlowFirstByte,
        Fault::SlowDrip,
        Fault::Http500,
        Fault::Http503,
        Fault::Reset,
        Fault::Truncate,
        Fault::TruncateAtLine,
        Fault::Html200,
        Fault::Empty,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::SlowFirstByte => "slow-first-byte",
            Fault::SlowDrip => "slow-drip",
            Fault::Http500 => "http-500",
            Fault::Http503 => "http-503",
            Fault::Reset => "reset",
            Fault::Truncate => "truncate",
            Fault::TruncateAtLine => "truncate-at-line",
            Fault::Html200 => "html-200",
            Fault::Empty => "empty",
            Fault::Busy429 => "busy-429",
            Fault::LongLine => "long-line",
        }
    }
}

/// Text encoding of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Utf8,
    Cp1251,
}

impl FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "cp1251" | "windows-1251" | "win1251" => Ok(Encoding::Cp1251),
            other => Err(format!("unknown encoding {other:?}")),
        }
    }
}

/// What the simulator serves and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed of the generated patients (ignored with `data_file`).
    pub seed: u64,
    /// Generated rows.
    pub count: u64,
    /// Serve this file verbatim instead of generated rows.
    pub data_file: Option<PathBuf>,
    pub encoding: Encoding,
    /// Rows per thousand that wrap onto a second physical line.
    pub wrap_per_mille: u32,
    /// Fault of every request that names none and has none queued.
    pub fault: Fault,
    /// Delay of [`Fault::SlowFirstByte`].
    pub slow_first_byte: Duration,
    /// Pause between pieces of [`Fault::SlowDrip`].
    pub drip_delay: Duration,
    /// Rows per piece of the body (the unit of streaming).
    pub rows_per_chunk: usize,
    /// `Retry-After` of [`Fault::Busy429`].
    pub retry_after: Duration,
    /// Length of the extra line of [`Fault::LongLine`].
    pub long_line_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            count: 1000,
            data_file: None,
            encoding: Encoding::Utf8,
            wrap_per_mille: 0,
            fault: Fault::None,
            slow_first_byte: Duration::from_secs(600),
            drip_delay: Duration::from_secs(1),
            rows_per_chunk: 512,
            retry_after: Duration::from_secs(2),
            long_line_bytes: 3 << 20,
        }
    }
}

/// The data and the fault plan, shared by requests and the admin API.
#[derive(Debug)]
struct Data {
    config: Config,
    count: u64,
    /// Row → how many times it was edited.
    edits: BTreeMap<u64, u32>,
    deleted: BTreeSet<u64>,
    queued_faults: VecDeque<Fault>,
    requests: u64,
}

/// What one request serves: a frozen copy of the data, so that changes
/// during a long download do not tear it.
#[derive(Clone)]
struct Snapshot {
    generator: synth::Generator,
    count: u64,
    edits: Arc<BTreeMap<u64, u32>>,
    deleted: Arc<BTreeSet<u64>>,
    encoding: Encoding,
    wrap_per_mille: u32,
}

/// A handle on the simulator's data; cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    data: Arc<Mutex<Data>>,
}

impl Simulator {
    pub fn new(config: Config) -> Simulator {
        Simulator {
            data: Arc::new(Mutex::new(Data {
                count: config.count,
                config,
                edits: BTreeMap::new(),
                deleted: BTreeSet::new(),
                queued_faults: VecDeque::new(),
                requests: 0,
            })),
        }
    }

    /// Binds `addr` (port 0: any free port) and serves until `shutdown`
    /// resolves; returns the bound address at once.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Ok((bound, task))
    }

    /// The HTTP routes (export and admin).
    pub fn router(&self) -> Router {
        Router::new()
            .route(EXPORT_PATH, get(export))
            .route("/admin/edit", post(admin_edit))
            .route("/admin/delete", post(admin_delete))
            .route("/admin/restore", post(admin_restore))
            .route("/admin/count", post(admin_count))
            .route("/admin/fault", post(admin_fault))
            .route("/admin/stats", get(admin_stats))
            .with_state(self.clone())
    }

    /// Rows in `range` get a changed phone; each call changes them again.
    pub fn edit(&self, range: std::ops::Range<u64>) {
        let mut d = self.data.lock().unwrap();
        for i in range {
            *d.edits.entry(i).or_default() += 1;
        }
    }

    /// Rows in `range` disappear from the export.
    pub fn delete(&self, range: std::ops::Range<u64>) {
        let mut d = self.data.lock().unwrap();
        d.deleted.extend(range);
    }

    /// Rows in `range` come back exactly as generated (the A → B → A case).
    pub fn restore(&self, range: std::ops::Range<u64>) {
        let mut d = self.data.lock().unwrap();
        for i in range {
            d.deleted.remove(&i);
            d.edits.remove(&i);
        }
    }

    /// The export holds generated rows `0..count` (less the deleted ones).
    pub fn set_count(&self, count: u64) {
        self.data.lock().unwrap().count = count;
    }

    /// The next `times` requests fail with `fault` (after those already queued).
    pub fn push_fault(&self, fault: Fault, times: usize) {
        let mut d = self.data.lock().unwrap();
        d.queued_faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Clears queued faults and the configured one.
    pub fn clear_faults(&self) {
        let mut d = self.data.lock().unwrap();
        d.queued_faults.clear();
        d.config.fault = Fault::None;
    }

    /// The fault of every request that names none and has none queued.
    pub fn set_default_fault(&self, fault: Fault) {
        self.data.lock().unwrap().config.fault = fault;
    }

    pub fn set_encoding(&self, encoding: Encoding) {
        self.data.lock().unwrap().config.encoding = encoding;
    }

    pub fn set_wrap_per_mille(&self, wrap: u32) {
        self.data.lock().unwrap().config.wrap_per_mille = wrap;
    }

    /// Export requests served so far (every attempt counts).
    pub fn requests(&self) -> u64 {
        self.data.lock().unwrap().requests
    }

    /// The his numbers the export currently holds (generated data only).
    pub fn his_numbers(&self) -> Vec<String> {
        let s = self.snapshot();
        (0..s.count)
            .filter(|i| !s.deleted.contains(i))
            .map(|i| s.generator.source_id(i))
            .collect()
    }

    /// The whole current export as UTF-8 text without wraps (what a parser
    /// of the other encodings and wraps must agree with).
    pub fn clean_export(&self) -> String {
        let mut s = self.snapshot();
        s.encoding = Encoding::Utf8;
        s.wrap_per_mille = 0;
        let mut out = String::new();
        for i in 0..s.count {
            if let Some(line) = s.row(i) {
                out.push_str(&line);
            }
        }
        out
    }

    fn snapshot(&self) -> Snapshot {
        let d = self.data.lock().unwrap();
        Snapshot {
            generator: synth::Generator::new(d.config.seed),
            count: d.count,
            edits: Arc::new(d.edits.clone()),
            deleted: Arc::new(d.deleted.clone()),
            encoding: d.config.encoding,
            wrap_per_mille: d.config.wrap_per_mille,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
struct ExportQuery {
    fault: Option<String>,
    encoding: Option<String>,
    wrap: Option<u32>,
}

async fn export(State(sim): State<Simulator>, Query(q): Query<ExportQuery>) -> Response {
    let (fault, config) = {
        let mut d = sim.data.lock().unwrap();
        d.requests += 1;
        let queued = d.queued_faults.pop_front();
        let fault = match q.fault.as_deref().map(Fault::from_str) {
            Some(Ok(f)) => f,
            Some(Err(e)) => return (StatusCode::BAD_REQUEST, e).into_response(),
            None => queued.unwrap_or(d.config.fault),
        };
        (fault, d.config.clone())
    };
    let mut snapshot = sim.snapshot();
    if let Some(e) = q.encoding.as_deref() {
        match Encoding::from_str(e) {
            Ok(e) => snapshot.encoding = e,
            Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
        }
    }
    if let Some(w) = q.wrap {
        snapshot.wrap_per_mille = w;
    }
    tracing::info!(fault = fault.name(), "export request");

    match fault {
        Fault::Http500 => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n").into_response()
        }
        Fault::Http503 => {
            return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
        }
        Fault::Html200 => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!DOCTYPE html>\n<html><head><title>Error</title></head>\
                 <body><h1>MUMPS error</h1><p>%YDB-E-GVUNDEF</p></body></html>\n",
            )
                .into_response()
        }
        Fault::Empty => return text_response(Body::empty(), snapshot.encoding),
        Fault::Busy429 => {
            let seconds = config.retry_after.as_secs().to_string();
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds)],
                "Too Many Requests\n",
            )
                .into_response();
        }
        Fault::SlowFirstByte => tokio::time::sleep(config.slow_first_byte).await,
        _ => {}
    }

    let chunks = body_chunks(
        config.data_file.clone(),
        snapshot.clone(),
        config.rows_per_chunk,
    );
    let body = match fault {
        Fault::SlowDrip => {
            let delay = config.drip_delay;
            Body::from_stream(chunks.then(move |c| async move {
                tokio::time::sleep(delay).await;
                c
            }))
        }
        Fault::Reset | Fault::Truncate | Fault::TruncateAtLine => {
            let total = export_len(&config, &snapshot).await;
            let cut = match fault {
                Fault::TruncateAtLine => total * 2 / 5,
                _ => total / 2,
            };
            let at_line = fault == Fault::TruncateAtLine;
            let reset = fault == Fault::Reset;
            Body::from_stream(cut_stream(chunks, cut, at_line, reset))
        }
        Fault::LongLine => {
            let mut line = b"999999/LONG|".to_vec();
            line.resize(config.long_line_bytes.max(13), b'x');
            line.push(b'\n');
            let mut chunks = chunks;
            let first = chunks.next().await;
            let long = futures::stream::iter([Ok(Bytes::from(line))]);
            Body::from_stream(futures::stream::iter(first).chain(long).chain(chunks))
        }
        _ => Body::from_stream(chunks),
    };
    text_response(body, snapshot.encoding)
}

fn text_response(body: Body, encoding: Encoding) -> Response {
    let charset = match encoding {
        Encoding::Utf8 => "utf-8",
        Encoding::Cp1251 => "windows-1251",
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            format!("text/plain; charset={charset}"),
        )
        .body(body)
        .expect("valid response")
}

type Chunk = Result<Bytes, std::io::Error>;

/// The export as a stream of pieces, generated (or read) as it is sent.
fn body_chunks(
    file: Option<PathBuf>,
    snapshot: Snapshot,
    rows_per_chunk: usize,
) -> futures::stream::BoxStream<'static, Chunk> {
    match file {
        Some(path) => {
            let open = async move { tokio::fs::File::open(path).await };
            futures::stream::once(open)
                .map(|f| match f {
                    Ok(f) => file_chunks(f).boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                })
                .flatten()
                .boxed()
        }
        None => {
            let rows = rows_per_chunk.max(1) as u64;
            futures::stream::unfold(0u64, move |next| {
                let s = snapshot.clone();
                async move {
                    if next >= s.count {
                        return None;
                    }
                    let end = (next + rows).min(s.count);
                    let chunk = tokio::task::spawn_blocking(move || s.rows(next..end))
                        .await
                        .expect("row rendering does not panic");
                    Some((Ok(chunk), end))
                }
            })
            .boxed()
        }
    }
}

fn file_chunks(file: tokio::fs::File) -> impl futures::Stream<Item = Chunk> {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// The full length of the export in bytes (to cut it at a share).
async fn export_len(config: &Config, snapshot: &Snapshot) -> usize {
    let mut chunks = body_chunks(config.data_file.clone(), snapshot.clone(), 4096);
    let mut total = 0;
    while let Some(Ok(c)) = chunks.next().await {
        total += c.len();
    }
    total
}

/// The first `cut` bytes of `chunks` (to the end of the line before it when
/// `at_line`), then either a clean end or an error that makes the server
/// abort the connection (`reset`).
fn cut_stream(
    chunks: futures::stream::BoxStream<'static, Chunk>,
    cut: usize,
    at_line: bool,
    reset: bool,
) -> impl futures::Stream<Item = Chunk> {
    let mut sent = 0usize;
    let body = chunks
        .scan((), move |_, chunk| {
            let out = match chunk {
                Err(e) => Some(Err(e)),
                Ok(_) if sent >= cut => None,
                Ok(c) => {
                    let take = (cut - sent).min(c.len());
                    sent += take;
                    let mut piece = c.slice(..take);
                    if at_line && sent >= cut {
                        let end = piece.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                        piece = piece.slice(..end);
                    }
                    Some(Ok(piece))
                }
            };
            futures::future::ready(out)
        })
        .boxed();
    let tail = futures::stream::once(async move {
        if reset {
            // Give the client time to read what was sent before the abort.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated connection reset",
            )))
        } else {
            None
        }
    })
    .filter_map(futures::future::ready);
    body.chain(tail)
}

impl Snapshot {
    /// Rows `range`, encoded, as one piece of the body.
    fn rows(&self, range: std::ops::Range<u64>) -> Bytes {
        let mut text = String::with_capacity((range.end - range.start) as usize * 160);
        for i in range {
            if let Some(row) = self.row(i) {
                text.push_str(&row);
            }
        }
        match self.encoding {
            Encoding::Utf8 => Bytes::from(text),
            Encoding::Cp1251 => {
                let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(&text);
                Bytes::from(bytes.into_owned())
            }
        }
    }

    /// Row `i` with its line end(s), or `None` when deleted.
    fn row(&self, i: u64) -> Option<String> {
        if self.deleted.contains(&i) {
            return None;
        }
        let edit = self.edits.get(&i).copied().unwrap_or(0);
        let fields = row_fields(&self.generator, i, edit);
        let wrap = self.wrap_per_mille > 0 && (mix(i ^ 0x57A9) % 1000) < self.wrap_per_mille as u64;
        Some(render(&fields, wrap.then_some(mix(i ^ 0x1111))))
    }
}

/// The 11 fields of generated row `i`, edited `edit` times.
pub fn row_fields(generator: &synth::Generator, i: u64, edit: u32) -> [String; 11] {
    let p = generator.patient(i);
    let r = &p.record;
    let (code, series, number) = match r.documents.first() {
        None => ("47".to_string(), String::new(), String::new()),
        Some(d) => {
            let code = match d.doc_type {
                DocumentType::PASSPORT => "16",
                DocumentType::INTERNATIONAL_PASSPORT => "17",
                DocumentType::BIRTH_CERTIFICATE => "3",
                DocumentType::FOREIGN_PASSPORT => "10",
                _ => "90",
            };
            let series = d.series.clone().unwrap_or_default();
            // qMS keeps passport series as typed: "45 06".
            let series = if d.doc_type == DocumentType::PASSPORT && series.len() == 4 {
                format!("{} {}", &series[..2], &series[2..])
            } else {
                series
            };
            (code.to_string(), series, d.number.clone())
        }
    };
    let contact = r
        .emails
        .iter()
        .find(|e| e.kind == EmailKind::Contact)
        .map(|e| e.address.value.clone())
        .unwrap_or_default();
    let login = if !contact.is_empty() && mix(i ^ 0x10C1).is_multiple_of(3) {
        contact.clone()
    } else {
        String::new()
    };
    let phones: Vec<String> = if edit > 0 {
        let n = mix(i.wrapping_mul(31).wrapping_add(u64::from(edit))) % 10_000_000;
        vec![format!(
            "8-999-{:03}-{:02}-{:02}",
            n / 10_000,
            n / 100 % 100,
            n % 100
        )]
    } else {
        r.phones
            .iter()
            .map(|p| {
                let d = &p.number.value;
                if d.len() == 11 {
                    format!("+7 ({}) {}-{}-{}", &d[1..4], &d[4..7], &d[7..9], &d[9..11])
                } else {
                    d.clone()
                }
            })
            .collect()
    };
    [
        p.source_id.clone(),
        r.last_name.clone().unwrap_or_default(),
        r.first_name.clone().unwrap_or_default(),
        r.middle_name.clone().unwrap_or_default(),
        r.birth_date
            .map(|d| d.format("%Y%m%d").to_string())
            .unwrap_or_default(),
        code,
        series,
        number,
        contact,
        phones.join(", "),
        login,
    ]
}

/// One record as qMS writes it. With `wrap`, the record spans two physical
/// lines: the break falls after a field separator, or between two phones of
/// the phone field (qMS lets a newline into free-text fields).
fn render(fields: &[String; 11], wrap: Option<u64>) -> String {
    let mut line = String::with_capacity(192);
    let wrap_after = wrap.map(|h| 1 + (h % 9) as usize); // after field 1..=9
    for (n, f) in fields.iter().enumerate() {
        let mut inside = false;
        if n > 0 {
            line.push('|');
            if wrap_after == Some(n - 1) {
                if n == 9 && f.contains(", ") {
                    inside = true;
                } else {
                    line.push('\n');
                }
            }
        }
        if inside {
            line.push_str(&f.replacen(", ", "\n", 1));
        } else {
            line.push_str(f);
        }
    }
    line.push('\n');
    line
}

/// SplitMix64 finaliser: a cheap, stable hash of a row index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Deserialize)]
struct RangeQuery {
    from: u64,
    to: u64,
}

async fn admin_edit(State(sim): State<Simulator>, Query(q): Query<RangeQuery>) -> &'static str {
    sim.edit(q.from..q.to);
    "ok\n"
}

async fn admin_delete(State(sim): State<Simulator>, Query(q): Query<RangeQuery>) -> &'static str {
    sim.delete(q.from..q.to);
    "ok\n"
}

async fn admin_restore(State(sim): State<Simulator>, Query(q): Query<RangeQuery>) -> &'static str {
    sim.restore(q.from..q.to);
    "ok\n"
}

#[derive(Debug, Deserialize)]
struct CountQuery {
    count: u64,
}

async fn admin_count(State(sim): State<Simulator>, Query(q): Query<CountQuery>) -> &'static str {
    sim.set_count(q.count);
    "ok\n"
}

#[derive(Debug, Deserialize)]
struct FaultQuery {
    mode: String,
    times: Option<usize>,
}

async fn admin_fault(
    State(sim): State<Simulator>,
    Query(q): Query<FaultQuery>,
) -> Result<&'static str, (StatusCode, String)> {
    let fault = Fault::from_str(&q.mode).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    if fault == Fault::None {
        sim.clear_faults();
    } else {
        sim.push_fault(fault, q.times.unwrap_or(1));
    }
    Ok("ok\n")
}

async fn admin_stats(State(sim): State<Simulator>) -> Result<String, Infallible> {
    Ok(format!("requests={}\n", sim.requests()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_eleven_fields_and_wraps_only_split_lines() {
        let g = synth::Generator::new(7);
        for i in 0..2000 {
            let f = row_fields(&g, i, 0);
            let clean = render(&f, None);
            assert_eq!(clean.matches('|').count(), 10);
            assert_eq!(clean.matches('\n').count(), 1);
            let wrapped = render(&f, Some(mix(i)));
            assert_eq!(wrapped.matches('\n').count(), 2, "{wrapped}");
            assert_eq!(wrapped.matches('|').count(), 10);
            // The continuation never looks like the start of a record.
            let second = wrapped.split('\n').nth(1).unwrap();
            let first_field = second.split('|').next().unwrap();
            assert!(!first_field.contains('/'));
        }
    }

    #[test]
    fn edits_change_the_phone_only() {
        let g = synth::Generator::new(7);
        let a = row_fields(&g, 3, 0);
        let b = row_fields(&g, 3, 1);
        let c = row_fields(&g, 3, 2);
        assert_ne!(a[9], b[9]);
        assert_ne!(b[9], c[9]);
        assert_eq!(a[..9], b[..9]);
    }
}
