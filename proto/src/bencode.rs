//! Bencode (BEP 3): a strict decoder and a canonical encoder.
//!
//! Invariants this module keeps:
//! - Only canonical input is accepted: integers without leading zeros or
//!   `-0`, dictionary keys strictly increasing as raw byte strings (so no
//!   duplicates), and nothing after the top-level value. Canonical input is
//!   what makes "SHA-1 over the info dictionary" well defined.
//! - The decoder never allocates more than the input justifies: a string's
//!   length is checked against the bytes that remain before anything is
//!   copied, and lists grow one decoded element at a time.
//! - Nesting is limited to [`MAX_DEPTH`], so hostile input cannot exhaust
//!   the stack.
//! - [`encode`] emits canonical bencode, so `decode(encode(v)) == v` for
//!   every value.

use std::collections::BTreeMap;
use std::ops::Range;

/// Deepest nesting of lists and dictionaries the decoder accepts. Real
/// metainfo nests four deep; 64 leaves room for any honest extension.
pub const MAX_DEPTH: usize = 64;

/// A decoded bencode value. Dictionaries are ordered by raw key bytes,
/// which is exactly the order canonical bencode requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Value>),
    /// `d...e`
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Why a byte string is not canonical bencode. Every variant carries the
/// byte offset where decoding stopped, so errors can point at the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("unexpected end of input at byte {0}")]
    UnexpectedEof(usize),
    /// A byte that cannot start or continue a value here.
    #[error("unexpected byte {byte:#04x} at byte {at}")]
    UnexpectedByte {
        /// The offending byte.
        byte: u8,
        /// Its offset.
        at: usize,
    },
    /// An integer with a leading zero, `-0`, no digits, or out of range.
    #[error("invalid integer at byte {0}")]
    BadInteger(usize),
    /// A string length that is not canonical or runs past the input.
    #[error("invalid string length at byte {0}")]
    BadLength(usize),
    /// A dictionary key that is not strictly greater than the one before it.
    #[error("dictionary keys unsorted or duplicated at byte {0}")]
    UnsortedKeys(usize),
    /// Lists and dictionaries nested deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} at byte {0}")]
    TooDeep(usize),
    /// Bytes left over after the top-level value.
    #[error("trailing data after the value at byte {0}")]
    TrailingData(usize),
}

impl Value {
    /// The bytes of a `Bytes` value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The integer of an `Int` value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items of a `List` value.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The entries of a `Dict` value.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The bytes of a `Bytes` value as UTF-8, if they are valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Convenience constructor for a byte-string value.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }
}

/// Decodes one complete value; any trailing byte is an error.
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    decode_with_span(input, b"").map(|(v, _)| v)
}

/// Decodes one complete value and, when it is a dictionary holding `key`,
/// also returns the byte range of that key's value in `input`. This is how
/// the infohash is taken over the exact bytes the author wrote.
pub fn decode_with_span(
    input: &[u8],
    key: &[u8],
) -> Result<(Value, Option<Range<usize>>), DecodeError> {
    let mut d = Decoder {
        input,
        pos: 0,
        want_key: key,
        span: None,
    };
    let v = d.value(0)?;
    if d.pos != input.len() {
        return Err(DecodeError::TrailingData(d.pos));
    }
    Ok((v, d.span))
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    want_key: &'a [u8],
    span: Option<Range<usize>>,
}

impl<'a> Decoder<'a> {
    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::UnexpectedEof(self.pos))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let n = self.integer(b'e')?;
                Ok(Value::Int(n))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.string()?.to_vec())),
            b'l' => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep(self.pos));
                }
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep(self.pos));
                }
                self.pos += 1;
                let mut map = BTreeMap::new();
                let mut last: Option<&[u8]> = None;
                while self.peek()? != b'e' {
                    let key_at = self.pos;
                    if !self.peek()?.is_ascii_digit() {
                        return Err(DecodeError::UnexpectedByte {
                            byte: self.peek()?,
                            at: self.pos,
                        });
                    }
                    let key = self.string()?;
                    if last.is_some_and(|prev| prev >= key) {
                        return Err(DecodeError::UnsortedKeys(key_at));
                    }
                    last = Some(key);
                    let start = self.pos;
                    let v = self.value(depth + 1)?;
                    if depth == 0 && !self.want_key.is_empty() && key == self.want_key {
                        self.span = Some(start..self.pos);
                    }
                    map.insert(key.to_vec(), v);
                }
                self.pos += 1;
                Ok(Value::Dict(map))
            }
            byte => Err(DecodeError::UnexpectedByte { byte, at: self.pos }),
        }
    }

    /// Parses a canonical decimal integer up to `end`, consuming `end`.
    fn integer(&mut self, end: u8) -> Result<i64, DecodeError> {
        let start = self.pos;
        let rest = &self.input[start..];
        let len = rest
            .iter()
            .position(|&b| b == end)
            .ok_or(DecodeError::UnexpectedEof(self.input.len()))?;
        let digits = &rest[..len];
        let (neg, body) = match digits.split_first() {
            Some((b'-', body)) => (true, body),
            _ => (false, digits),
        };
        let canonical = !body.is_empty()
            && body.iter().all(u8::is_ascii_digit)
            && (body[0] != b'0' || body.len() == 1)
            && !(neg && body == b"0");
        if !canonical {
            return Err(DecodeError::BadInteger(start));
        }
        // Accumulate negatively so i64::MIN is representable.
        let mut n: i64 = 0;
        for &b in body {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_sub(i64::from(b - b'0')))
                .ok_or(DecodeError::BadInteger(start))?;
        }
        let n = if neg {
            n
        } else {
            n.checked_neg().ok_or(DecodeError::BadInteger(start))?
        };
        self.pos = start + len + 1;
        Ok(n)
    }

    fn string(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let len = match self.integer(b':') {
            Ok(n) if n >= 0 => n as u64,
            _ => return Err(DecodeError::BadLength(start)),
        };
        let remaining = (self.input.len() - self.pos) as u64;
        if len > remaining {
            return Err(DecodeError::BadLength(start));
        }
        let input: &'a [u8] = self.input;
        let s = &input[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(s)
    }
}

/// Encodes a value canonically.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(v, &mut out);
    out
}

/// Encodes a value canonically, appending to `out`.
pub fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => encode_bytes(b, out),
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                encode_into(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(map) => {
            out.push(b'd');
            for (k, v) in map {
                encode_bytes(k, out);
                encode_into(v, out);
            }
            out.push(b'e');
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_basic_values() {
        assert_eq!(decode(b"i42e"), Ok(Value::Int(42)));
        assert_eq!(decode(b"i-7e"), Ok(Value::Int(-7)));
        assert_eq!(decode(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(decode(b"4:spam"), Ok(Value::bytes(&b"spam"[..])));
        assert_eq!(decode(b"0:"), Ok(Value::bytes(Vec::new())));
        let l = decode(b"l4:spami1ee").unwrap();
        assert_eq!(
            l,
            Value::List(vec![Value::bytes(&b"spam"[..]), Value::Int(1)])
        );
        let d = decode(b"d3:cow3:moo4:spam4:eggse").unwrap();
        assert_eq!(d.as_dict().unwrap().len(), 2);
        assert_eq!(
            i64::MIN,
            decode(b"i-9223372036854775808e").unwrap().as_int().unwrap()
        );
        assert_eq!(
            i64::MAX,
            decode(b"i9223372036854775807e").unwrap().as_int().unwrap()
        );
    }

    #[test]
    fn refuses_non_canonical_and_hostile_input() {
        let cases: &[&[u8]] = &[
            b"i-0e",
            b"i03e",
            b"ie",
            b"i-e",
            b"i1",
            b"i9223372036854775808e",
            b"i1.5e",
            b"03:abc",
            b"-1:a",
            b"5:abc",
            b"99999999999999999999:a",
            b"d1:b0:1:a0:e",
            b"d1:a0:1:a0:e",
            b"di1e0:e",
            b"i1ei2e",
            b"l",
            b"d",
            b"x",
            b"",
            b"4:spamX",
        ];
        for c in cases {
            assert!(
                decode(c).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn depth_is_limited() {
        let mut deep = vec![b'l'; MAX_DEPTH];
        deep.extend(vec![b'e'; MAX_DEPTH]);
        assert!(decode(&deep).is_ok());
        let mut too_deep = vec![b'l'; MAX_DEPTH + 1];
        too_deep.extend(vec![b'e'; MAX_DEPTH + 1]);
        assert!(matches!(decode(&too_deep), Err(DecodeError::TooDeep(_))));
        // A million opening brackets must fail fast, not overflow the stack.
        assert!(decode(&vec![b'l'; 1_000_000]).is_err());
    }

    #[test]
    fn span_covers_exact_bytes_of_key() {
        let input = b"d4:infod1:xi1ee4:zzzzi2ee";
        let (_, span) = decode_with_span(input, b"info").unwrap();
        assert_eq!(&input[span.unwrap()], b"d1:xi1ee");
        // A nested "info" key is not the top-level one.
        let (_, span) = decode_with_span(b"d1:ad4:infoi1eee", b"info").unwrap();
        assert_eq!(span, None);
    }

    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(6, 96, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..12),
                    inner,
                    0..8
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(v in arb_value()) {
            let bytes = encode(&v);
            prop_assert_eq!(decode(&bytes), Ok(v));
        }

        #[test]
        fn truncation_at_every_offset_is_an_error(v in arb_value()) {
            let bytes = encode(&v);
            for cut in 0..bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_of_accepted_input_reencodes_identically(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Strictness means an accepted input has exactly one encoding.
            if let Ok(v) = decode(&bytes) {
                prop_assert_eq!(encode(&v), bytes);
            }
        }
    }
}
