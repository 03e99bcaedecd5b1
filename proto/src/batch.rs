//! Batch messages: one bus message carrying several envelopes.
//!
//! A message is either
//! * a **single envelope**: the MessagePack map [`Envelope::encode`] writes
//!   (what every publisher sent before batches existed, and what delta
//!   syncs still send: one change, one message, one message id), or
//! * a **batch**: a MessagePack array whose every element is exactly such a
//!   map, byte for byte.
//!
//! Readers tell them apart by the payload's first byte (a map marker or an
//! array marker, see [`shape`]), never by a header: headers can be lost on
//! the way through a replay or a dead letter's retry. Publishers also set
//! [`RECORDS_HEADER`] to the number of envelopes, for operators only.
//!
//! A batch's message id is `<source>:batch:<hex BLAKE3 over every element's
//! source id and content hash, in order>` ([`BatchBuilder`]): a page
//! re-read after a restart, cut into the same batches, gets the same ids and
//! is dropped by the stream's duplicate window; outside the window the
//! loader's version guard makes it a no-op. Every element must carry the
//! source of the message's subject (the loader checks each one).
//!
//! [`decode_message`] is the one way to read a message: it yields each
//! envelope with its index and its own bytes, decoded on its own, so that a
//! bad record in a batch can be set aside alone.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::envelope::{self, DecodeError, Envelope};
use crate::naming;
use crate::record::PatientRecord;

/// Header with the number of envelopes in a batch message (informational:
/// readers go by the payload's first byte).
pub const RECORDS_HEADER: &str = "Etl-Records";

/// What a message's payload is, by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A MessagePack map (fixmap 0x80–0x8f, map16 0xde, map32 0xdf): one envelope.
    Single,
    /// A MessagePack array (fixarray 0x90–0x9f, array16 0xdc, array32 0xdd):
    /// a batch of envelopes.
    Batch,
    /// Empty, or anything else: not a message of ours.
    Other,
}

/// The shape of `payload`, from its first byte.
pub fn shape(payload: &[u8]) -> Shape {
    match payload.first() {
        Some(0x80..=0x8f | 0xde | 0xdf) => Shape::Single,
        Some(0x90..=0x9f | 0xdc | 0xdd) => Shape::Batch,
        _ => Shape::Other,
    }
}

/// How many envelopes `payload` says it carries, from its header alone
/// (no decoding): the array length of a batch, 1 for anything else. Lets a
/// consumer plan its transactions before decoding; a malformed payload
/// still decodes (and is judged) as usual.
pub fn record_count(payload: &[u8]) -> usize {
    let len = |bytes: &[u8]| bytes.iter().fold(0usize, |n, &b| n << 8 | b as usize);
    match payload {
        [b @ 0x90..=0x9f, ..] => (b & 0x0f) as usize,
        [0xdc, rest @ ..] if rest.len() >= 2 => len(&rest[..2]),
        [0xdd, rest @ ..] if rest.len() >= 4 => len(&rest[..4]),
        _ => 1,
    }
}

/// One envelope of a message.
#[derive(Debug)]
pub struct Item<'a> {
    /// 0 in a single-envelope message; the position in a batch.
    pub index: u32,
    /// This envelope's own bytes: on their own, a single-envelope message
    /// (what a dead letter keeps, and what a retry republishes).
    pub bytes: &'a [u8],
    /// The envelope, decoded from `bytes` alone.
    pub envelope: Result<Envelope, DecodeError>,
}

/// The envelopes of a message payload, one or many, each decoded on its
/// own. `Err` only when the payload as a whole is not a message: not a map
/// nor an array, a batch whose structure is cut short or followed by extra
/// bytes, or an empty batch. An element that is not a map, or a map that is
/// not a valid envelope, is an `Item` with an `Err` of its own.
pub fn decode_message(payload: &[u8]) -> Result<Vec<Item<'_>>, DecodeError> {
    match shape(payload) {
        Shape::Single => Ok(vec![Item {
            index: 0,
            bytes: payload,
            envelope: Envelope::decode(payload),
        }]),
        Shape::Other => Err(DecodeError::new(
            "the message is neither an envelope map nor a batch array",
        )),
        Shape::Batch => {
            let (count, mut pos) = array_header(payload)
                .ok_or_else(|| DecodeError::new("batch header is cut short"))?;
            if count == 0 {
                return Err(DecodeError::new("batch holds no envelope"));
            }
            // Each element takes at least one byte: a count beyond what is
            // left is broken, and no allocation trusts it.
            if count > (payload.len() - pos) as u64 {
                return Err(DecodeError::new("batch is cut short"));
            }
            let mut items = Vec::with_capacity(count as usize);
            for index in 0..count as u32 {
                let end = skip_value(payload, pos)
                    .ok_or_else(|| DecodeError::new("batch is cut short"))?;
                let bytes = &payload[pos..end];
                let envelope = match shape(bytes) {
                    Shape::Single => Envelope::decode(bytes),
                    _ => Err(DecodeError::new("batch element is not an envelope map")),
                };
                items.push(Item {
                    index,
                    bytes,
                    envelope,
                });
                pos = end;
            }
            if pos != payload.len() {
                return Err(DecodeError::new("bytes after the batch's last element"));
            }
            Ok(items)
        }
    }
}

/// A batch's element count and where its first element starts.
fn array_header(buf: &[u8]) -> Option<(u64, usize)> {
    match *buf.first()? {
        m @ 0x90..=0x9f => Some(((m & 0x0f) as u64, 1)),
        0xdc => Some((be(buf, 1, 2)?, 3)),
        0xdd => Some((be(buf, 1, 4)?, 5)),
        _ => None,
    }
}

/// The unsigned big-endian integer of `n` bytes at `pos`.
fn be(buf: &[u8], pos: usize, n: usize) -> Option<u64> {
    let bytes = buf.get(pos..pos.checked_add(n)?)?;
    Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
}

/// Where the MessagePack value starting at `pos` ends, or `None` if it is
/// cut short or uses the never-used marker 0xc1. Iterative (a counter of
/// values still to skip), so deep nesting cannot overflow the stack.
fn skip_value(buf: &[u8], mut pos: usize) -> Option<usize> {
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let marker = *buf.get(pos)?;
        pos += 1;
        // (bytes of payload to skip, values nested inside)
        let (skip, nested): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (marker & 0x0f) as u64),
            0x90..=0x9f => (0, (marker & 0x0f) as u64),
            0xa0..=0xbf => ((marker & 0x1f) as u64, 0),
            0xc1 => return None,
            // bin 8/16/32, str 8/16/32: a length, then the bytes.
            0xc4 | 0xd9 => (1 + be(buf, pos, 1)?, 0),
            0xc5 | 0xda => (2 + be(buf, pos, 2)?, 0),
            0xc6 | 0xdb => (4 + be(buf, pos, 4)?, 0),
            // ext 8/16/32: a length, a type byte, the bytes.
            0xc7 => (2 + be(buf, pos, 1)?, 0),
            0xc8 => (3 + be(buf, pos, 2)?, 0),
            0xc9 => (5 + be(buf, pos, 4)?, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            // fixext 1/2/4/8/16: a type byte and the bytes.
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, be(buf, pos, 2)?),
            0xdd => (4, be(buf, pos, 4)?),
            0xde => (2, 2 * be(buf, pos, 2)?),
            0xdf => (4, 2 * be(buf, pos, 4)?),
        };
        pos = pos.checked_add(usize::try_from(skip).ok()?)?;
        if pos > buf.len() {
            return None;
        }
        pending = pending.checked_add(nested)?;
        if pending > (buf.len() - pos) as u64 {
            return None;
        }
    }
    Some(pos)
}

/// A message ready to publish: its payload, its message id, and how many
/// envelopes it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub payload: Bytes,
    pub message_id: String,
    pub records: usize,
}

impl Encoded {
    /// One envelope as a single-envelope message, with its usual id.
    pub fn single(envelope: &Envelope) -> Self {
        Encoded {
            payload: envelope.encode().into(),
            message_id: envelope.message_id(),
            records: 1,
        }
    }
}

/// How large a batch may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most envelopes in one message; 1 sends single-envelope messages.
    pub max_records: usize,
    /// Most payload bytes in one message (an envelope larger than this on
    /// its own still goes, alone). Keep well under the server's
    /// `max_payload` (1 MiB by default).
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_records: 500,
            max_bytes: 256 * 1024,
        }
    }
}

/// Room left before the elements for the array header (array32: 5 bytes).
const HEADER_ROOM: usize = 5;

/// Cuts a run of upserts into batch messages under [`BatchLimits`],
/// serializing each record once ([`envelope::append_upsert`]) straight into
/// the message. The cut depends only on the envelopes' bytes and the
/// limits, so the same records give the same messages and message ids.
///
/// A batch of one envelope is sent as a single-envelope message with the
/// usual id (so `max_records = 1` is exactly the one-message-per-record
/// form).
pub struct BatchBuilder {
    source: String,
    limits: BatchLimits,
    /// `HEADER_ROOM` bytes, then the elements.
    buf: Vec<u8>,
    /// Each element's source id and content hash, for the message id.
    keys: Vec<u8>,
    /// Where each element starts in `buf` and its key in `keys`.
    elements: Vec<(usize, usize)>,
    /// The record's MessagePack, reused from one record to the next.
    scratch: Vec<u8>,
}

impl BatchBuilder {
    pub fn new(source: impl Into<String>, limits: BatchLimits) -> Self {
        let limits = BatchLimits {
            max_records: limits.max_records.max(1),
            max_bytes: limits.max_bytes,
        };
        BatchBuilder {
            source: source.into(),
            limits,
            buf: Self::fresh_buffer(),
            keys: Vec::new(),
            elements: Vec::new(),
            scratch: Vec::with_capacity(1024),
        }
    }

    /// A new message buffer: small at first (it grows as envelopes come),
    /// so that short batches and single-envelope messages do not each pin a
    /// `max_bytes` allocation while they are in flight.
    fn fresh_buffer() -> Vec<u8> {
        let mut buf = Vec::with_capacity(4096);
        buf.resize(HEADER_ROOM, 0);
        buf
    }

    /// Envelopes in the batch being built.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Adds an upsert; returns a finished message when this envelope filled
    /// the batch (by count) or would have overflowed it (by bytes: then the
    /// message holds the envelopes before it, and this one starts the next).
    pub fn push_upsert(
        &mut self,
        source_id: &str,
        version: i64,
        observed_at: DateTime<Utc>,
        record: &PatientRecord,
    ) -> Option<Encoded> {
        let start = self.buf.len();
        let key_start = self.keys.len();
        let hash = envelope::append_upsert(
            &self.source,
            source_id,
            version,
            observed_at,
            record,
            &mut self.scratch,
            &mut self.buf,
        );
        self.keys.extend_from_slice(source_id.as_bytes());
        self.keys.extend_from_slice(&hash);
        self.elements.push((start, key_start));
        let bytes = self.buf.len() - HEADER_ROOM;
        if bytes > self.limits.max_bytes && self.elements.len() > 1 {
            return Some(self.finish_all_but_last());
        }
        if self.elements.len() >= self.limits.max_records || bytes >= self.limits.max_bytes {
            return self.finish();
        }
        None
    }

    /// The batch being built as a message (`None` if empty); starts a new one.
    pub fn finish(&mut self) -> Option<Encoded> {
        if self.elements.is_empty() {
            return None;
        }
        let buf = std::mem::replace(&mut self.buf, Self::fresh_buffer());
        let keys = std::mem::take(&mut self.keys);
        let elements = std::mem::take(&mut self.elements);
        Some(self.seal(buf, &keys, &elements))
    }

    /// Seals every element but the last, which moves to a new batch.
    fn finish_all_but_last(&mut self) -> Encoded {
        let (start, key_start) = self.elements.pop().expect("at least two elements");
        let mut next = Self::fresh_buffer();
        next.extend_from_slice(&self.buf[start..]);
        self.buf.truncate(start);
        let buf = std::mem::replace(&mut self.buf, next);
        let last_key = self.keys.split_off(key_start);
        let keys = std::mem::replace(&mut self.keys, last_key);
        let elements = std::mem::replace(&mut self.elements, vec![(HEADER_ROOM, 0)]);
        self.seal(buf, &keys, &elements)
    }

    fn seal(&self, mut buf: Vec<u8>, keys: &[u8], elements: &[(usize, usize)]) -> Encoded {
        if let [(_, _)] = elements {
            // One envelope: the single-envelope form and its usual id.
            let (source_id, hash) = keys.split_at(keys.len() - 32);
            let hash: &[u8; 32] = hash.try_into().expect("32 bytes");
            let source_id = std::str::from_utf8(source_id).expect("was a str");
            return Encoded {
                payload: payload(buf, HEADER_ROOM),
                message_id: naming::message_id(&self.source, source_id, hash),
                records: 1,
            };
        }
        let mut id = blake3::Hasher::new();
        for (i, &(_, key_start)) in elements.iter().enumerate() {
            let key_end = elements.get(i + 1).map_or(keys.len(), |&(_, k)| k);
            let key = &keys[key_start..key_end];
            // Length-prefixed source id, then the hash: unambiguous.
            id.update(&((key.len() - 32) as u32).to_be_bytes());
            id.update(key);
        }
        let n = elements.len();
        let start = if n <= 15 {
            buf[4] = 0x90 | n as u8;
            4
        } else if n <= u16::MAX as usize {
            buf[2] = 0xdc;
            buf[3..5].copy_from_slice(&(n as u16).to_be_bytes());
            2
        } else {
            buf[0] = 0xdd;
            buf[1..5].copy_from_slice(&(n as u32).to_be_bytes());
            0
        };
        Encoded {
            payload: payload(buf, start),
            message_id: batch_message_id(&self.source, id.finalize().as_bytes()),
            records: n,
        }
    }
}

/// The message's bytes from `start`: the buffer itself, or a copy when
/// most of its capacity is unused (a Vec grown by doubling), so that a
/// message in flight holds about its own size.
fn payload(buf: Vec<u8>, start: usize) -> Bytes {
    if buf.len() * 4 < buf.capacity() * 3 {
        Bytes::copy_from_slice(&buf[start..])
    } else {
        Bytes::from(buf).slice(start..)
    }
}

/// `<source>:batch:<hex digest>`.
fn batch_message_id(source: &str, digest: &[u8; 32]) -> String {
    format!("{source}:batch:{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    #[test]
    fn record_count_reads_the_array_header() {
        use super::record_count;
        assert_eq!(record_count(&[0x93, 0x80, 0x80, 0x80]), 3);
        assert_eq!(record_count(&[0xdc, 0x01, 0xf4]), 500);
        assert_eq!(record_count(&[0xdd, 0x00, 0x01, 0x00, 0x00]), 65_536);
        assert_eq!(
            record_count(&[0x81, 0xa1, 0x61, 0x01]),
            1,
            "a single envelope"
        );
        assert_eq!(record_count(b"garbage"), 1);
        assert_eq!(record_count(&[0xdc, 0x01]), 1, "cut short");
        assert_eq!(record_count(&[]), 1);
    }

    use super::*;

    fn record(i: usize) -> PatientRecord {
        PatientRecord {
            last_name: Some(format!("Иванов{i}")),
            ..Default::default()
        }
    }

    fn build(limits: BatchLimits, n: usize) -> Vec<Encoded> {
        let at = DateTime::from_timestamp_micros(1_764_633_600_123_456).unwrap();
        let mut b = BatchBuilder::new("infoclinica", limits);
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(b.push_upsert(&i.to_string(), 1_000 + i as i64, at, &record(i)));
        }
        out.extend(b.finish());
        out
    }

    #[test]
    fn skip_value_finds_the_end_of_every_form() {
        let values = [
            rmpv::Value::Nil,
            rmpv::Value::from(-1),
            rmpv::Value::from(u64::MAX),
            rmpv::Value::from(1.5f64),
            rmpv::Value::from("x".repeat(300)),
            rmpv::Value::Binary(vec![7; 70_000]),
            rmpv::Value::Array(vec![rmpv::Value::from(1); 20]),
            rmpv::Value::Map(vec![(rmpv::Value::from("k"), rmpv::Value::from(true)); 17]),
            rmpv::Value::Ext(5, vec![1, 2, 3, 4]),
        ];
        for v in values {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &v).unwrap();
            assert_eq!(skip_value(&bytes, 0), Some(bytes.len()), "{v:?}");
            assert_eq!(skip_value(&bytes[..bytes.len() - 1], 0), None, "{v:?} cut");
        }
        assert_eq!(skip_value(&[0xc1], 0), None);
        // A count far beyond the bytes present is refused at once.
        assert_eq!(skip_value(&[0xdd, 0xff, 0xff, 0xff, 0xff], 0), None);
    }

    #[test]
    fn cuts_by_count_and_by_bytes_deterministically() {
        let by_count = build(
            BatchLimits {
                max_records: 4,
                max_bytes: 1 << 20,
            },
            10,
        );
        let sizes: Vec<usize> = by_count.iter().map(|m| m.records).collect();
        assert_eq!(sizes, vec![4, 4, 2]);

        let small = BatchLimits {
            max_records: 500,
            max_bytes: 600,
        };
        let by_bytes = build(small, 40);
        assert!(by_bytes.len() > 1);
        assert_eq!(by_bytes.iter().map(|m| m.records).sum::<usize>(), 40);
        for m in &by_bytes {
            assert!(m.payload.len() <= 600 + 1, "{} bytes", m.payload.len());
        }
        assert_eq!(build(small, 40), by_bytes, "same input, same messages");
    }

    #[test]
    fn batches_decode_to_the_envelopes_one_by_one() {
        let at = DateTime::from_timestamp_micros(1_764_633_600_123_456).unwrap();
        for n in [2usize, 15, 16, 300] {
            let messages = build(
                BatchLimits {
                    max_records: n,
                    max_bytes: 1 << 20,
                },
                n,
            );
            let [m] = &messages[..] else {
                panic!("one message")
            };
            assert_eq!(shape(&m.payload), Shape::Batch);
            assert!(m.message_id.starts_with("infoclinica:batch:"));
            let items = decode_message(&m.payload).unwrap();
            assert_eq!(items.len(), n);
            for (i, item) in items.iter().enumerate() {
                let expected = Envelope::upsert(
                    "infoclinica",
                    i.to_string(),
                    1_000 + i as i64,
                    at,
                    record(i),
                );
                assert_eq!(item.index as usize, i);
                assert_eq!(item.bytes, expected.encode().as_slice());
                assert_eq!(item.envelope.as_ref().unwrap(), &expected);
            }
        }
    }

    #[test]
    fn a_batch_of_one_is_a_single_envelope_message() {
        let [m] = &build(
            BatchLimits {
                max_records: 1,
                max_bytes: 1 << 20,
            },
            1,
        )[..] else {
            panic!("one message")
        };
        let at = DateTime::from_timestamp_micros(1_764_633_600_123_456).unwrap();
        let expected = Envelope::upsert("infoclinica", "0", 1_000, at, record(0));
        assert_eq!(shape(&m.payload), Shape::Single);
        assert_eq!(m.payload.as_ref(), expected.encode().as_slice());
        assert_eq!(m.message_id, expected.message_id());
    }

    #[test]
    fn broken_batches_are_refused_whole_and_bad_elements_alone() {
        let good = Envelope::upsert("qms", "1", 1, Utc::now(), record(1)).encode();
        // [good, "str", good]: the middle one is not an envelope.
        let mut payload = vec![0x93];
        payload.extend_from_slice(&good);
        payload.extend_from_slice(&[0xa3, b'a', b'b', b'c']);
        payload.extend_from_slice(&good);
        let items = decode_message(&payload).unwrap();
        assert!(items[0].envelope.is_ok() && items[2].envelope.is_ok());
        assert!(items[1].envelope.is_err());
        assert_eq!(items[1].bytes, b"\xa3abc");

        assert!(decode_message(&payload[..payload.len() - 1]).is_err());
        let mut extra = payload.clone();
        extra.push(0xc0);
        assert!(decode_message(&extra).is_err());
        assert!(decode_message(&[0x90]).is_err());
        assert!(decode_message(b"").is_err());
        assert!(decode_message(b"\x92\xa6secret").is_err());
    }
}
