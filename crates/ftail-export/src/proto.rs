//! A minimal protobuf encoder: just what [`crate::perfetto`] writes
//! (varints, length-delimited fields, nested messages). Field numbers are
//! the caller's, from the schema; nothing here knows a message.

/// Wire type of varint fields.
const VARINT: u8 = 0;
/// Wire type of length-delimited fields (strings, bytes, messages).
const LEN: u8 = 2;

/// Appends `v` as a base-128 varint.
#[inline]
pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

/// A varint field (uint32, uint64, int32/int64 that are not negative,
/// bool, enum).
#[inline]
pub fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    key(buf, field, VARINT);
    varint(buf, v);
}

/// A string or bytes field.
#[inline]
pub fn bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    key(buf, field, LEN);
    varint(buf, v.len() as u64);
    buf.extend_from_slice(v);
}

/// A string field.
#[inline]
pub fn string(buf: &mut Vec<u8>, field: u32, v: &str) {
    bytes(buf, field, v.as_bytes());
}

/// A nested message field, its body written by `body` into `scratch`
/// (cleared first) and then copied after its length.
#[inline]
pub fn message(
    buf: &mut Vec<u8>,
    field: u32,
    scratch: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>),
) {
    scratch.clear();
    body(scratch);
    bytes(buf, field, scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_protobuf_documentation_shows() {
        // "150" in field 1: 08 96 01; "testing" in field 2.
        let mut b = Vec::new();
        uint(&mut b, 1, 150);
        assert_eq!(b, [0x08, 0x96, 0x01]);
        b.clear();
        string(&mut b, 2, "testing");
        assert_eq!(b, b"\x12\x07testing");
        let mut scratch = Vec::new();
        b.clear();
        message(&mut b, 3, &mut scratch, |m| uint(m, 1, 150));
        assert_eq!(b, [0x1a, 0x03, 0x08, 0x96, 0x01]);
    }
}
