//! W3C trace context (`traceparent`) carried in a NATS message header, so
//! that one record can be followed from the extractor's publish through the
//! loader's batch to the matcher. It names only a trace: no personal data.
//!
//! Format (<https://www.w3.org/TR/trace-context/#traceparent-header>):
//! `00-<trace id, 32 hex>-<parent id, 16 hex>-<flags, 2 hex>`.

use std::fmt;

/// The header name (W3C spells it in lower case).
pub const HEADER: &str = "traceparent";

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// A new trace with a random id, sampled. Used when no OpenTelemetry
    /// context is active: one trace per publish still lets the loader and
    /// the matcher be joined to that publish.
    pub fn fresh() -> Self {
        TraceParent {
            // Zero is invalid in W3C; the chance is negligible, but be exact.
            trace_id: rand::random::<u128>().max(1),
            parent_id: rand::random::<u64>().max(1),
            flags: 1,
        }
    }

    /// Parses version-00 (and, as the spec asks, later-version) headers;
    /// `None` for anything malformed (a bad header never rejects a record).
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut parts = header.split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let parent_id = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || !is_hex(version) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if trace_id.len() != 32 || parent_id.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !is_hex(trace_id) || !is_hex(parent_id) || !is_hex(flags) {
            return None;
        }
        let parsed = TraceParent {
            trace_id: u128::from_str_radix(trace_id, 16).ok()?,
            parent_id: u64::from_str_radix(parent_id, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (parsed.trace_id != 0 && parsed.parent_id != 0).then_some(parsed)
    }

    /// The trace id as 32 lower-case hex digits (what trace back ends show).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// Lower-case hex only, as the spec requires.
fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The trace id of a stored `traceparent`, if it is well formed.
pub fn trace_id_of(header: &str) -> Option<String> {
    TraceParent::parse(header).map(|t| t.trace_id_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let t = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(t.flags, 1);
        assert_eq!(t.to_string(), EXAMPLE);
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fresh_ones_round_trip_and_differ() {
        let (a, b) = (TraceParent::fresh(), TraceParent::fresh());
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(TraceParent::parse(&a.to_string()), Some(a));
    }
}
