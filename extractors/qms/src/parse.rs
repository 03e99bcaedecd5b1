//! Where a qMS export is parsed: bytes → physical lines → records (wrapped
//! lines rejoined) → 11 fields → a normalized [`PatientRecord`].
//!
//! The format (extractors/qms/README.md): one record per
//! line, fields separated by `|`: his number, last name, first name,
//! patronymic, birth date `YYYYMMDD`, qMS document code, series, number,
//! contact e-mail, phone (free text), login e-mail (optional trailing
//! field). A field may contain a line break, so a record can span physical
//! lines: a line whose first field is a his number (`digits/suffix`, e.g.
//! `41449/A22`) starts a record, and every other line continues the record
//! before it, unless that would give the record more than 11 fields (then
//! the line stands alone and is rejected) (joined with the line break it replaced, which normalization
//! then treats as whitespace or, in the phone field, as a separator).

use chrono::NaiveDate;
use encoding_rs::Encoding;
use memchr::memchr;
use proto::normalize;
use proto::record::FieldIssue;
use proto::{DocumentTypeMap, Email, EmailKind, PatientRecord, Phone, Problem};

/// Longest record accepted (a garbage tail must not grow one without end).
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Most physical lines one record may span.
pub const MAX_RECORD_LINES: u32 = 16;

/// Longest physical line kept by default (`qms.max_line_bytes`).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Splits a byte stream into physical lines (without `\n` or a trailing
/// `\r`). UTF-8 and CP1251 are both ASCII-compatible, so splitting on the
/// byte `\n` before decoding is safe.
///
/// A line longer than the cap is not buffered whole: its first `max_line`
/// bytes are kept and the rest only counted, so memory stays flat whatever
/// the body holds (one line of gigabytes, or no line break at all).
pub struct LineSplitter {
    partial: Vec<u8>,
    /// Bytes of the current line beyond `max_line`, dropped.
    cut: u64,
    max_line: usize,
    /// Bytes seen.
    pub bytes: u64,
}

/// One physical line as [`LineSplitter`] gives it.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// The line, or its first `max_line` bytes when it was longer.
    pub bytes: &'a [u8],
    /// Bytes dropped beyond the cap (0 for a line that fits).
    pub cut: u64,
}

impl Line<'_> {
    /// The line's length as it was in the export.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64 + self.cut
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::new(DEFAULT_MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            cut: 0,
            max_line,
            bytes: 0,
        }
    }

    /// Feeds one piece of the body; `line` gets every line it completes.
    pub fn push(&mut self, mut chunk: &[u8], mut line: impl FnMut(Line<'_>)) {
        self.bytes += chunk.len() as u64;
        while let Some(pos) = memchr(b'\n', chunk) {
            let (head, rest) = chunk.split_at(pos);
            chunk = &rest[1..];
            if self.partial.is_empty() && self.cut == 0 && head.len() <= self.max_line {
                line(Line {
                    bytes: strip_cr(head),
                    cut: 0,
                });
            } else {
                self.keep(head);
                self.emit(&mut line);
            }
        }
        self.keep(chunk);
    }

    /// The end of the body: gives the unterminated last line, if any, and
    /// says whether there was one (a complete export ends with a line
    /// break).
    pub fn finish(&mut self, mut line: impl FnMut(Line<'_>)) -> bool {
        let unterminated = !self.partial.is_empty() || self.cut > 0;
        if unterminated {
            self.emit(&mut line);
        }
        unterminated
    }

    /// Keeps what fits under the cap, counts the rest.
    fn keep(&mut self, bytes: &[u8]) {
        let room = self.max_line.saturating_sub(self.partial.len());
        let kept = room.min(bytes.len());
        self.partial.extend_from_slice(&bytes[..kept]);
        self.cut += (bytes.len() - kept) as u64;
    }

    /// Gives the buffered line and empties the buffer (its allocation is
    /// reused).
    fn emit(&mut self, line: &mut impl FnMut(Line<'_>)) {
        let whole = std::mem::take(&mut self.partial);
        let cut = std::mem::take(&mut self.cut);
        let bytes = if cut == 0 { strip_cr(&whole) } else { &whole };
        line(Line { bytes, cut });
        self.partial = whole;
        self.partial.clear();
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Decodes physical lines from the configured encoding.
#[derive(Clone, Copy)]
pub struct Decoder {
    encoding: &'static Encoding,
}

impl Decoder {
    /// `label`: `utf-8`, `windows-1251`, `cp1251`…
    pub fn for_label(label: &str) -> Option<Decoder> {
        let label = match label.trim().to_ascii_lowercase().as_str() {
            "cp1251" | "win1251" => "windows-1251".to_string(),
            other => other.to_string(),
        };
        Encoding::for_label(label.as_bytes()).map(|encoding| Decoder { encoding })
    }

    /// Like [`Decoder::decode`], but a line that needs converting is
    /// decoded into `buf` (reused from line to line: no allocation per line).
    pub fn decode_with<'a>(&self, bytes: &'a [u8], buf: &'a mut String) -> (&'a str, bool) {
        if self.encoding == encoding_rs::UTF_8 {
            if let Ok(s) = std::str::from_utf8(bytes) {
                return (s, false);
            }
        }
        let mut decoder = self.encoding.new_decoder_without_bom_handling();
        buf.clear();
        buf.reserve(
            decoder
                .max_utf8_buffer_length(bytes.len())
                .unwrap_or(bytes.len() * 3),
        );
        let (_, _, had_errors) = decoder.decode_to_string(bytes, buf, true);
        (buf.as_str(), had_errors)
    }

    /// The text and whether some bytes were invalid (replaced by U+FFFD).
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> (std::borrow::Cow<'a, str>, bool) {
        if self.encoding == encoding_rs::UTF_8 {
            match std::str::from_utf8(bytes) {
                Ok(s) => (s.into(), false),
                Err(_) => (String::from_utf8_lossy(bytes), true),
            }
        } else {
            let (text, had_errors) = self.encoding.decode_without_bom_handling(bytes);
            (text, had_errors)
        }
    }
}

/// One logical record: its physical lines rejoined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRecord {
    pub text: String,
    /// Number (1-based) of its first physical line in the export.
    pub line: u64,
    /// Some bytes were invalid in the declared encoding.
    pub bad_encoding: bool,
    /// A physical line over `qms.max_line_bytes`: `text` is only a
    /// description (his number, length), never the line's content.
    pub too_long: bool,
}

/// Rejoins physical lines into records.
#[derive(Default)]
pub struct Rejoiner {
    /// The record being rejoined; its text buffer is reused from record to
    /// record (no allocation per record).
    pending: RawRecord,
    /// Physical lines in `pending`; 0 when none is pending.
    pending_lines: u32,
    line: u64,
}

impl Rejoiner {
    /// Feeds one decoded physical line; `out` gets every record it completes.
    pub fn push(&mut self, text: &str, bad_encoding: bool, mut out: impl FnMut(&RawRecord)) {
        self.line += 1;
        if starts_record(text) {
            self.flush(&mut out);
            self.pending.text.clear();
            self.pending.text.push_str(text);
            self.pending.line = self.line;
            self.pending.bad_encoding = bad_encoding;
            self.pending_lines = 1;
            return;
        }
        let record = &mut self.pending;
        if self.pending_lines > 0
            && self.pending_lines < MAX_RECORD_LINES
            && record.text.len() + 1 + text.len() <= MAX_RECORD_BYTES
            && separators(&record.text) + separators(text) <= 10
        {
            record.text.push('\n');
            record.text.push_str(text);
            record.bad_encoding |= bad_encoding;
            self.pending_lines += 1;
        } else {
            // Not part of a record we can hold: ends the pending one and
            // stands alone (and will be rejected, unless it is blank).
            self.flush(&mut out);
            if !text.trim().is_empty() {
                out(&RawRecord {
                    text: text.to_string(),
                    line: self.line,
                    bad_encoding,
                    too_long: false,
                });
            }
        }
    }

    /// Feeds a physical line that was over the line cap: it ends the
    /// pending record and becomes a record of its own that is rejected as
    /// `too_long`, described by its his number (when it starts with one)
    /// and its length. Its content is neither kept nor published.
    pub fn push_too_long(
        &mut self,
        head: &str,
        len: u64,
        max_line: usize,
        mut out: impl FnMut(&RawRecord),
    ) {
        self.line += 1;
        self.flush(&mut out);
        let his = first_field(head);
        let his = if is_his_number(his) { his } else { "" };
        out(&RawRecord {
            text: format!("{his}|<a line of {len} bytes, over the {max_line}-byte limit>"),
            line: self.line,
            bad_encoding: false,
            too_long: true,
        });
    }

    fn flush(&mut self, out: &mut impl FnMut(&RawRecord)) {
        if self.pending_lines > 0 {
            self.pending_lines = 0;
            out(&self.pending);
        }
    }

    /// The end of the export.
    pub fn finish(&mut self, mut out: impl FnMut(&RawRecord)) {
        self.flush(&mut out);
    }

    /// Physical lines seen.
    pub fn lines(&self) -> u64 {
        self.line
    }
}

fn separators(s: &str) -> usize {
    memchr::memchr_iter(b'|', s.as_bytes()).count()
}

/// The first field (before the first `|`), trimmed.
fn first_field(line: &str) -> &str {
    let end = memchr(b'|', line.as_bytes()).unwrap_or(line.len());
    line[..end].trim()
}

/// Whether a physical line starts a record: its first field is a his number.
pub fn starts_record(line: &str) -> bool {
    is_his_number(first_field(line))
}

/// `digits/suffix` with a non-empty suffix and no whitespace (`41449/A22`).
pub fn is_his_number(s: &str) -> bool {
    let Some((digits, suffix)) = s.split_once('/') else {
        return false;
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !suffix.is_empty()
        && !suffix.chars().any(char::is_whitespace)
        && s.len() <= proto::envelope::MAX_SOURCE_ID_LEN
}

/// Why a record was rejected. Codes are stable: they are counted and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The line does not start with a his number and continues no record.
    NoRecordStart,
    /// Fewer than 10 fields.
    TooFewFields,
    /// More than 11 fields.
    TooManyFields,
    /// A NUL character (PostgreSQL text cannot hold it).
    NulCharacter,
    /// The record spans more lines or bytes than any real one.
    TooLong,
    /// The body ended inside this record (no final line break).
    Unterminated,
}

impl RejectReason {
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::NoRecordStart => "no_record_start",
            RejectReason::TooFewFields => "too_few_fields",
            RejectReason::TooManyFields => "too_many_fields",
            RejectReason::NulCharacter => "nul_character",
            RejectReason::TooLong => "too_long",
            RejectReason::Unterminated => "unterminated",
        }
    }
}

/// A record that could not be parsed: kept with its reason and, when its
/// first field is a his number, that number (so that the record is not
/// taken for deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub his_number: Option<String>,
    pub reason: RejectReason,
}

/// Checks a record's structure (his number, 10 or 11 fields, no NUL, not
/// too long) without normalizing it; returns the his number. Every reason a
/// record can be rejected is found here, so a sync can decide "changed or
/// not" from the raw text and normalize only what changed.
pub fn check_record(raw: &RawRecord) -> Result<&str, Rejected> {
    let his = first_field(&raw.text);
    let valid = is_his_number(his);
    // Allocates only for a reject.
    let reject = |reason| Rejected {
        his_number: valid.then(|| his.to_string()),
        reason,
    };
    if raw.too_long {
        return Err(reject(RejectReason::TooLong));
    }
    if !valid {
        return Err(reject(RejectReason::NoRecordStart));
    }
    let n = separators(&raw.text) + 1;
    if n < 10 {
        return Err(reject(RejectReason::TooFewFields));
    }
    if n > 11 {
        return Err(reject(RejectReason::TooManyFields));
    }
    if memchr(0, raw.text.as_bytes()).is_some() {
        return Err(reject(RejectReason::NulCharacter));
    }
    if raw.text.len() > MAX_RECORD_BYTES {
        return Err(reject(RejectReason::TooLong));
    }
    Ok(his)
}

/// Bump when parsing or normalization changes what a raw record becomes:
/// it is part of [`raw_hash`], so the next sync republishes every record.
pub const NORMALIZATION_VERSION: u32 = 2;

/// What a record's content depends on besides its text: the configured
/// business unit and document-type map. A change of either changes every
/// [`raw_hash`], so the next sync republishes every record with it.
#[derive(Debug, Clone)]
pub struct Profile {
    business_unit: Option<String>,
    document_types: DocumentTypeMap,
    /// [`NORMALIZATION_VERSION`], business unit and map, hashed once.
    fingerprint: [u8; 32],
}

impl Profile {
    pub fn new(business_unit: Option<String>, document_types: DocumentTypeMap) -> Profile {
        let mut h = blake3::Hasher::new();
        h.update(&NORMALIZATION_VERSION.to_le_bytes());
        h.update(&[u8::from(business_unit.is_some())]);
        h.update(business_unit.as_deref().unwrap_or("").as_bytes());
        h.update(&[0]);
        for (code, doc_type) in document_types.entries() {
            h.update(&code.to_le_bytes());
            h.update(&doc_type.0.to_le_bytes());
        }
        Profile {
            business_unit,
            document_types,
            fingerprint: *h.finalize().as_bytes(),
        }
    }

    pub fn business_unit(&self) -> Option<&str> {
        self.business_unit.as_deref()
    }
}

impl Default for Profile {
    /// No business unit, qMS's default document-type codes.
    fn default() -> Profile {
        Profile::new(None, DocumentTypeMap::qms_default())
    }
}

/// What a sync compares with the last published state: a hash of the raw
/// record as it will be parsed (text, encoding flag, and the [`Profile`]).
/// Equal input parses to equal content, so an unchanged record needs no
/// normalization at all.
pub fn raw_hash(raw: &RawRecord, profile: &Profile) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&profile.fingerprint);
    h.update(&[u8::from(raw.bad_encoding)]);
    h.update(raw.text.as_bytes());
    *h.finalize().as_bytes()
}

/// Parses one rejoined record into its his number and normalized content.
///
/// `today` bounds birth dates (a sync passes its start date, so that one
/// record parses the same way throughout the sync).
pub fn parse_record(
    raw: &RawRecord,
    profile: &Profile,
    today: NaiveDate,
) -> Result<(String, PatientRecord), Rejected> {
    let his = check_record(raw)?;
    let mut fields: [&str; 11] = [""; 11];
    for (n, f) in raw.text.split('|').enumerate().take(11) {
        fields[n] = f;
    }

    let mut record = PatientRecord {
        business_unit: profile.business_unit.clone(),
        last_name: normalize::name(fields[1]),
        first_name: normalize::name(fields[2]),
        middle_name: normalize::name(fields[3]),
        ..Default::default()
    };
    record.birth_date = normalize::birth_date_yyyymmdd(fields[4].trim(), today, &mut record.issues);

    let code = fields[5].trim();
    let (series, number) = (fields[6], fields[7]);
    let doc_type = profile.document_types.map_text(Some(code));
    if let Some(doc) = normalize::document(doc_type, Some(code), Some(series), Some(number)) {
        record.documents.push(doc);
    }

    if let Some(address) = normalize::email(fields[8]) {
        record.emails.push(Email {
            address,
            kind: EmailKind::Contact,
        });
    }
    for (i, piece) in normalize::split_phones(fields[9]).into_iter().enumerate() {
        if let Some(number) = normalize::phone(piece) {
            record.phones.push(Phone {
                number,
                preferred: i == 0,
            });
        }
    }
    if let Some(address) = normalize::email(fields[10]) {
        record.emails.push(Email {
            address,
            kind: EmailKind::Login,
        });
    }
    if raw.bad_encoding {
        record.issues.push(FieldIssue {
            field: "record".into(),
            problem: Problem::BadCharacters,
            raw: None,
        });
    }
    Ok((his.to_string(), record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::DocumentType;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
    }

    fn raw(text: &str) -> RawRecord {
        RawRecord {
            too_long: false,
            text: text.into(),
            line: 1,
            bad_encoding: false,
        }
    }

    #[test]
    fn parses_the_eleven_fields() {
        let (his, r) = parse_record(
            &raw("41449/A22|Иванов|Иван|Иванович|19800115|16|45 06|012345|Ivan@Mail.ru|+7 (912) 345-67-89, 8-913-000-00-00|login@mail.ru"),
            &Profile::new(Some("main".into()), DocumentTypeMap::qms_default()),
            today(),
        )
        .unwrap();
        assert_eq!(his, "41449/A22");
        assert_eq!(r.business_unit.as_deref(), Some("main"));
        assert_eq!(r.last_name.as_deref(), Some("Иванов"));
        assert_eq!(r.middle_name.as_deref(), Some("Иванович"));
        assert_eq!(r.birth_date, NaiveDate::from_ymd_opt(1980, 1, 15));
        let d = &r.documents[0];
        assert_eq!(d.doc_type, DocumentType::PASSPORT);
        assert_eq!(d.series.as_deref(), Some("4506"));
        assert_eq!(d.number, "012345", "leading zero kept");
        assert_eq!(d.source_type_code.as_deref(), Some("16"));
        assert_eq!(r.phones.len(), 2);
        assert_eq!(r.phones[0].number.value, "79123456789");
        assert!(r.phones[0].preferred && !r.phones[1].preferred);
        assert_eq!(r.emails[0].address.value, "ivan@mail.ru");
        assert_eq!(r.emails[1].kind, EmailKind::Login);
        assert!(r.issues.is_empty());
    }

    #[test]
    fn ten_fields_unknown_code_and_bad_date() {
        let (_, r) = parse_record(
            &raw("1/B|Петров|Пётр||19801399|555|AB|123||"),
            &Profile::default(),
            today(),
        )
        .unwrap();
        assert_eq!(r.middle_name, None);
        assert_eq!(r.birth_date, None);
        assert_eq!(r.issues[0].field, "birth_date");
        assert_eq!(r.issues[0].problem, Problem::BadFormat);
        assert_eq!(
            r.documents[0].doc_type,
            DocumentType::UNKNOWN,
            "never passport"
        );
        let (_, r) = parse_record(
            &raw("1/B|Петров|Пётр||19800101|||||"),
            &Profile::default(),
            today(),
        )
        .unwrap();
        assert!(r.documents.is_empty());
        let (_, r) = parse_record(
            &raw("1/B|Петров|Пётр||19800101|47||||"),
            &Profile::default(),
            today(),
        )
        .unwrap();
        assert!(r.documents.is_empty(), "47 = no documents");
    }

    #[test]
    fn document_codes_follow_the_configured_map() {
        let record = "5/A|Петров|Пётр||19800101|3|75|№ 0123456||";
        let (_, r) = parse_record(&raw(record), &Profile::default(), today()).unwrap();
        assert_eq!(r.documents[0].doc_type, DocumentType::BIRTH_CERTIFICATE);
        assert!(
            r.documents[0].problem.is_some(),
            "75 is no birth certificate"
        );

        let map = DocumentTypeMap::try_from(std::collections::BTreeMap::from([(
            "3".to_string(),
            "international_passport".to_string(),
        )]))
        .unwrap();
        let own = Profile::new(None, map);
        let (_, r) = parse_record(&raw(record), &own, today()).unwrap();
        let d = &r.documents[0];
        assert_eq!(d.doc_type, DocumentType::INTERNATIONAL_PASSPORT);
        assert_eq!(
            (d.series.as_deref(), d.number.as_str()),
            (Some("75"), "0123456")
        );
        assert_eq!(d.source_type_code.as_deref(), Some("3"));
        // Codes the map leaves out are unknown.
        let (_, r) =
            parse_record(&raw("5/A|П|П||19800101|16|4506|123456||"), &own, today()).unwrap();
        assert_eq!(r.documents[0].doc_type, DocumentType::UNKNOWN);

        // Another map, another content: every record is republished.
        assert_ne!(
            raw_hash(&raw(record), &own),
            raw_hash(&raw(record), &Profile::default())
        );
        let unit = Profile::new(Some("main".into()), DocumentTypeMap::qms_default());
        assert_ne!(
            raw_hash(&raw(record), &unit),
            raw_hash(&raw(record), &Profile::default())
        );
        assert_eq!(
            raw_hash(&raw(record), &Profile::default()),
            raw_hash(&raw(record), &Profile::default())
        );
    }

    #[test]
    fn rejects_keep_the_his_number() {
        let e = parse_record(&raw("1/B|Петров|Пётр"), &Profile::default(), today()).unwrap_err();
        assert_eq!(e.reason, RejectReason::TooFewFields);
        assert_eq!(e.his_number.as_deref(), Some("1/B"));
        let e = parse_record(
            &raw("1/B|a|b|c|d|e|f|g|h|i|j|k"),
            &Profile::default(),
            today(),
        )
        .unwrap_err();
        assert_eq!(e.reason, RejectReason::TooManyFields);
        let e = parse_record(&raw("garbage line"), &Profile::default(), today()).unwrap_err();
        assert_eq!(e.reason, RejectReason::NoRecordStart);
        assert_eq!(e.his_number, None);
    }

    #[test]
    fn lines_split_across_chunks_and_records_rejoin() {
        let body = "41449/A22|Иванов|Иван|\r\nИванович|19800115|16|45 06|012345||+7 912 345 67 89|\n2/C|Б|В|Г|19900101|3|IV-АИ|123456|||\n";
        let mut splitter = LineSplitter::default();
        let mut joiner = Rejoiner::default();
        let mut out = Vec::new();
        for chunk in body.as_bytes().chunks(7) {
            splitter.push(chunk, |l| {
                joiner.push(std::str::from_utf8(l.bytes).unwrap(), false, |r| {
                    out.push(r.clone())
                })
            });
        }
        assert!(!splitter.finish(|_| panic!("no unterminated line")));
        joiner.finish(|r| out.push(r.clone()));
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].text,
            "41449/A22|Иванов|Иван|\nИванович|19800115|16|45 06|012345||+7 912 345 67 89|"
        );
        assert_eq!(out[1].line, 3);
        let (_, r) = parse_record(&out[0], &Profile::default(), today()).unwrap();
        assert_eq!(r.middle_name.as_deref(), Some("Иванович"));
        assert_eq!(r.birth_date, NaiveDate::from_ymd_opt(1980, 1, 15));
    }

    #[test]
    fn a_line_over_the_cap_is_cut_and_described_without_its_content() {
        let long = format!("7/A|{}|x\n", "Я".repeat(100));
        let body = format!("1/A|a\n{long}2/B|b\n");
        let mut splitter = LineSplitter::new(16);
        let mut lines = Vec::new();
        for chunk in body.as_bytes().chunks(5) {
            splitter.push(chunk, |l| lines.push((l.bytes.to_vec(), l.cut)));
        }
        assert!(!splitter.finish(|_| panic!("no unterminated line")));
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], (b"1/A|a".to_vec(), 0));
        assert_eq!(lines[1].0.len(), 16, "only the cap is kept");
        assert_eq!(lines[1].0.len() as u64 + lines[1].1, long.len() as u64 - 1);
        assert_eq!(lines[2], (b"2/B|b".to_vec(), 0));

        let mut joiner = Rejoiner::default();
        let mut out = Vec::new();
        let head = String::from_utf8_lossy(&lines[1].0);
        joiner.push_too_long(&head, 207, 16, |r| out.push(r.clone()));
        let e = check_record(&out[0]).unwrap_err();
        assert_eq!(e.reason, RejectReason::TooLong);
        assert_eq!(e.his_number.as_deref(), Some("7/A"));
        assert!(!out[0].text.contains('Я'), "{}", out[0].text);

        // No line break at all: memory stays at the cap.
        let mut splitter = LineSplitter::new(1024);
        for _ in 0..1000 {
            splitter.push(&[b'x'; 4096], |_| panic!("no line"));
        }
        assert!(splitter.partial.capacity() <= 8192);
        let mut cut = 0;
        assert!(splitter.finish(|l| cut = l.cut));
        assert_eq!(cut, 4096 * 1000 - 1024);
    }

    #[test]
    fn cp1251_decodes() {
        let d = Decoder::for_label("cp1251").unwrap();
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode("Ёлкин|Пётр");
        let (text, bad) = d.decode(&bytes);
        assert_eq!(text, "Ёлкин|Пётр");
        assert!(!bad);
        let mut buf = String::from("left over from the line before");
        assert_eq!(d.decode_with(&bytes, &mut buf), ("Ёлкин|Пётр", false));
        let u = Decoder::for_label("utf-8").unwrap();
        assert!(u.decode(b"\xff|x").1, "invalid UTF-8 is flagged");
    }
}
