//! The bench payload: a fixed header, then padding up to `--size`.
//!
//! ```text
//! 0..4    b"AQB1"                magic and layout version
//! 4..8    publisher index        u32, big endian
//! 8..16   sequence number        u64, big endian, 0, 1, 2... per publisher and level
//! 16..24  send time              u64, Unix ns, just before the client is handed it
//! 24..32  scheduled send time    u64, Unix ns (= send time without --rate)
//! 32..    b'.' padding
//! ```

pub const MAGIC: [u8; 4] = *b"AQB1";
pub const HEADER_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
    pub intended_ns: u64,
}

/// The payload for `h`, padded to `size` bytes (never shorter than the header).
pub fn encode(h: &Header, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(HEADER_LEN));
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&h.publisher.to_be_bytes());
    v.extend_from_slice(&h.seq.to_be_bytes());
    v.extend_from_slice(&h.sent_ns.to_be_bytes());
    v.extend_from_slice(&h.intended_ns.to_be_bytes());
    v.resize(size.max(HEADER_LEN), b'.');
    v
}

/// The header of a bench payload; `None` for anything else.
pub fn decode(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER_LEN || b[..4] != MAGIC {
        return None;
    }
    let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Some(Header {
        publisher: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
        seq: u64_at(8),
        sent_ns: u64_at(16),
        intended_ns: u64_at(24),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let h = Header {
            publisher: 7,
            seq: 123_456_789_012,
            sent_ns: 1_795_850_102_125_000_001,
            intended_ns: 1_795_850_102_124_000_000,
        };
        let b = encode(&h, 100);
        assert_eq!(b.len(), 100);
        assert_eq!(decode(&b), Some(h));
        assert_eq!(encode(&h, 0).len(), HEADER_LEN);
        assert_eq!(decode(b"{\"temp\": 21.4, \"hum\": 40, \"x\": 1}"), None);
        assert_eq!(decode(&b[..31]), None);
    }
}
