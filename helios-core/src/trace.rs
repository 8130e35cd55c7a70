//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` and
//! `tracestate` a request carries, checked and bounded, as [`TraceContext`]. The queue
//! stores one with a job (so a trace that started upstream of the gateway continues at
//! the service a worker calls), and the servers read and write it in HTTP headers. Pure
//! parsing: no randomness, no clock.

use serde::{Deserialize, Serialize};

/// Length of a version-00 `traceparent`: `00-{32 hex}-{16 hex}-{2 hex}`.
pub const TRACEPARENT_LEN: usize = 55;
/// Longest `tracestate` kept. The W3C asks every participant to pass on at least 512
/// characters; longer ones are dropped whole (a cut list could be misread).
pub const TRACESTATE_SIZE_MAX: usize = 512;
/// Most list members of a `tracestate` (the W3C's limit).
pub const TRACESTATE_MEMBERS_MAX: usize = 32;

/// Why a trace context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The `traceparent` is not `{version}-{trace-id}-{parent-id}-{flags}` in lowercase
    /// hex, or an id is all zeros, or the version is `ff`.
    #[error("traceparent {0:?} is not a W3C traceparent")]
    Traceparent(String),
    /// The `tracestate` is too long, has too many members or bytes outside printable
    /// ASCII.
    #[error(
        "tracestate must be at most {TRACESTATE_SIZE_MAX} bytes of printable ASCII in at most {TRACESTATE_MEMBERS_MAX} members"
    )]
    Tracestate,
}

/// A checked W3C trace context: the `traceparent` in its version-00 form (always
/// [`TRACEPARENT_LEN`] bytes) and an optional `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceContext {
    /// `00-{trace-id}-{parent-id}-{flags}`.
    pub traceparent: String,
    /// The vendors' list, passed on as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

fn lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The canonical version-00 form of `raw`, or why not. A higher version is read by its
/// first four fields, as the W3C asks, and written back as version 00.
fn canonical_traceparent(raw: &str) -> Result<String, TraceError> {
    let bad = || TraceError::Traceparent(raw.chars().take(64).collect());
    let raw = raw.trim_matches(|c| c == ' ' || c == '\t');
    if raw.len() < TRACEPARENT_LEN || !raw.is_ascii() {
        return Err(bad());
    }
    let (version, trace, parent, flags) = (&raw[0..2], &raw[3..35], &raw[36..52], &raw[53..55]);
    let dashes = [2, 35, 52].iter().all(|&i| raw.as_bytes()[i] == b'-');
    let ok = dashes
        && lower_hex(version)
        && version != "ff"
        && lower_hex(trace)
        && lower_hex(parent)
        && lower_hex(flags)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        // Version 00 has exactly four fields; a later one may add fields after a '-'.
        && (raw.len() == TRACEPARENT_LEN
            || (version != "00" && raw.as_bytes()[TRACEPARENT_LEN] == b'-'));
    if !ok {
        return Err(bad());
    }
    Ok(format!("00-{trace}-{parent}-{flags}"))
}

fn check_tracestate(s: &str) -> Result<(), TraceError> {
    let ok = s.len() <= TRACESTATE_SIZE_MAX
        && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && s.split(',').count() <= TRACESTATE_MEMBERS_MAX;
    if ok {
        Ok(())
    } else {
        Err(TraceError::Tracestate)
    }
}

impl TraceContext {
    /// Checks both parts; a bad `tracestate` is an error too (for stored and API input).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, TraceError> {
        let traceparent = canonical_traceparent(traceparent)?;
        let tracestate = match tracestate.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => {
                check_tracestate(s)?;
                Some(s.to_owned())
            }
            None => None,
        };
        Ok(TraceContext {
            traceparent,
            tracestate,
        })
    }

    /// As HTTP headers give it: `None` without a valid `traceparent`; a bad `tracestate`
    /// is dropped and the `traceparent` kept (the W3C's rule for receivers).
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Self> {
        let traceparent = canonical_traceparent(traceparent?).ok()?;
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && check_tracestate(s).is_ok())
            .map(str::to_owned);
        Some(TraceContext {
            traceparent,
            tracestate,
        })
    }

    /// A context from its parts (a span's ids); `None` if an id is all zeros.
    pub fn from_parts(
        trace_id: u128,
        parent_id: u64,
        flags: u8,
        tracestate: Option<&str>,
    ) -> Option<Self> {
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        let tracestate = tracestate
            .filter(|s| !s.is_empty() && check_tracestate(s).is_ok())
            .map(str::to_owned);
        Some(TraceContext {
            traceparent: format!("00-{trace_id:032x}-{parent_id:016x}-{flags:02x}"),
            tracestate,
        })
    }

    /// Whether the stored form is valid (records and requests are checked with it).
    pub fn validate(&self) -> Result<(), TraceError> {
        if self.traceparent.len() != TRACEPARENT_LEN
            || canonical_traceparent(&self.traceparent)? != self.traceparent
        {
            return Err(TraceError::Traceparent(
                self.traceparent.chars().take(64).collect(),
            ));
        }
        match &self.tracestate {
            Some(s) => check_tracestate(s),
            None => Ok(()),
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }

    /// The parent (span) id, 16 lowercase hex digits.
    pub fn parent_id_hex(&self) -> &str {
        self.traceparent.get(36..52).unwrap_or_default()
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.traceparent
            .get(53..55)
            .and_then(|f| u8::from_str_radix(f, 16).ok())
            .unwrap_or(0)
    }

    /// The trace id as a number.
    pub fn trace_id(&self) -> u128 {
        u128::from_str_radix(self.trace_id_hex(), 16).unwrap_or(0)
    }

    /// The parent id as a number.
    pub fn parent_id(&self) -> u64 {
        u64::from_str_radix(self.parent_id_hex(), 16).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_w3c_example_and_refuses_bad_ones() {
        let t = TraceContext::parse(TP, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(t.traceparent, TP);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id_hex(), "00f067aa0ba902b7");
        assert_eq!(t.flags(), 1);
        assert_eq!(t.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent_id(), 0x00f067aa0ba902b7);
        t.validate().unwrap();
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad, None).is_err(), "{bad:?}");
            assert!(
                TraceContext::from_headers(Some(bad), None).is_none(),
                "{bad:?}"
            );
        }
        // A later version is read by its four fields and written as version 00.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert_eq!(TraceContext::parse(later, None).unwrap().traceparent, TP);
    }

    #[test]
    fn tracestate_is_bounded() {
        let long = "a=".to_owned() + &"b".repeat(TRACESTATE_SIZE_MAX);
        assert_eq!(
            TraceContext::parse(TP, Some(&long)),
            Err(TraceError::Tracestate)
        );
        let many = vec!["k=v"; TRACESTATE_MEMBERS_MAX + 1].join(",");
        assert!(TraceContext::parse(TP, Some(&many)).is_err());
        assert!(TraceContext::parse(TP, Some("a=\u{1}")).is_err());
        // From headers, a bad tracestate is dropped and the traceparent kept.
        let t = TraceContext::from_headers(Some(TP), Some(&long)).unwrap();
        assert_eq!(t.tracestate, None);
        assert_eq!(t.traceparent, TP);
        // A stored one with a bad tracestate does not validate.
        let stored = TraceContext {
            traceparent: TP.to_owned(),
            tracestate: Some(long),
        };
        assert!(stored.validate().is_err());
        let stored = TraceContext {
            traceparent: "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            tracestate: None,
        };
        assert!(
            stored.validate().is_err(),
            "only the canonical form is stored"
        );
    }

    #[test]
    fn from_parts_formats_and_refuses_zero_ids() {
        let t = TraceContext::from_parts(
            0x4bf92f3577b34da6a3ce929d0e0e4736,
            0xf067aa0ba902b7,
            1,
            None,
        )
        .unwrap();
        assert_eq!(t.traceparent, TP);
        assert!(TraceContext::from_parts(0, 1, 1, None).is_none());
        assert!(TraceContext::from_parts(1, 0, 1, None).is_none());
    }
}
