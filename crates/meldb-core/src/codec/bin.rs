//! The primitives every positional layout in this module is written in:
//! the byte rules of format version 1, which began as bincode 2's
//! `standard()` configuration and are now written out here so that no
//! derive decides them.
//!
//! - `u8`: the byte itself. `bool` and option tags: one byte, 0 or 1.
//! - unsigned integers wider than a byte (lengths, counts, variant
//!   indices, sequence numbers): below 251, one byte; otherwise the marker
//!   251, 252 or 253 followed by the value as a little-endian `u16`, `u32`
//!   or `u64`, the smallest that holds it.
//! - `i64`: zigzag (`(n << 1) ^ (n >> 63)`), then as above.
//! - `f64`: its 8 IEEE-754 bytes, little-endian.
//! - strings and byte strings: the length, then the bytes (strings are
//!   UTF-8, checked on read).
//! - a site id: the length 16, then its 16 bytes.
//!
//! The reader checks every read against the bytes left and every count
//! against them before allocating: every element of every layout takes at
//! least one byte, so a count larger than what is left is refused at once.
//! A count that passes still reserves at most [`MAX_PREALLOC`] bytes up
//! front ([`capped`]): an element in memory can be a hundred times larger
//! than its smallest encoding, so memory grows with the elements that
//! actually arrive, never with what a hostile count claims.

use super::DecodeError;
use crate::clock::SiteId;
use crate::value::Value;

/// OR-set entries with site-index tags, as the positional layouts hold them.
pub type Tagged = Vec<(String, Vec<(u32, u64)>)>;

pub use crate::crdt::{capped, MAX_PREALLOC};

const U16_MARK: u8 = 251;
const U32_MARK: u8 = 252;
const U64_MARK: u8 = 253;

/// Appends primitives to a byte vector. Writing cannot fail.
#[derive(Default)]
pub struct Enc {
    pub bytes: Vec<u8>,
}

impl Enc {
    pub fn new() -> Enc {
        Enc::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn u8(&mut self, b: u8) {
        self.bytes.push(b);
    }

    pub fn bool(&mut self, b: bool) {
        self.bytes.push(u8::from(b));
    }

    pub fn uint(&mut self, n: u64) {
        if n < u64::from(U16_MARK) {
            self.bytes.push(n as u8);
        } else if let Ok(n) = u16::try_from(n) {
            self.bytes.push(U16_MARK);
            self.bytes.extend_from_slice(&n.to_le_bytes());
        } else if let Ok(n) = u32::try_from(n) {
            self.bytes.push(U32_MARK);
            self.bytes.extend_from_slice(&n.to_le_bytes());
        } else {
            self.bytes.push(U64_MARK);
            self.bytes.extend_from_slice(&n.to_le_bytes());
        }
    }

    pub fn len(&mut self, n: usize) {
        self.uint(n as u64);
    }

    pub fn int(&mut self, n: i64) {
        self.uint(((n << 1) ^ (n >> 63)) as u64);
    }

    pub fn f64(&mut self, x: f64) {
        self.bytes.extend_from_slice(&x.to_le_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.bytes.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn site(&mut self, site: SiteId) {
        self.bytes(site.as_bytes());
    }

    /// An option: tag 0, or tag 1 and the value.
    pub fn option<T>(&mut self, value: Option<T>, mut each: impl FnMut(&mut Enc, T)) {
        match value {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                each(self, v);
            }
        }
    }

    /// A sequence: its length, then each element.
    pub fn seq<I: IntoIterator>(&mut self, items: I, mut each: impl FnMut(&mut Enc, I::Item))
    where
        I::IntoIter: ExactSizeIterator,
    {
        let items = items.into_iter();
        self.len(items.len());
        for item in items {
            each(self, item);
        }
    }

    /// A value: its variant index (Null 0, Integer 1, Real 2, Text 3,
    /// Blob 4), then its payload.
    pub fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.u8(0),
            Value::Integer(i) => {
                self.u8(1);
                self.int(*i);
            }
            Value::Real(r) => {
                self.u8(2);
                self.f64(*r);
            }
            Value::Text(s) => {
                self.u8(3);
                self.str(s);
            }
            Value::Blob(b) => {
                self.u8(4);
                self.bytes(b);
            }
        }
    }

    pub fn values(&mut self, values: &[Value]) {
        self.seq(values, Enc::value);
    }

    /// `(site index, n)` pairs: clocks, counters, tags.
    pub fn pairs(&mut self, pairs: &[(u32, u64)]) {
        self.seq(pairs, |e, &(i, n)| {
            e.uint(i.into());
            e.uint(n);
        });
    }

    /// `(site index, a, b)` triples: covers, PN-counter entries.
    pub fn triples(&mut self, triples: &[(u32, u64, u64)]) {
        self.seq(triples, |e, &(i, a, b)| {
            e.uint(i.into());
            e.uint(a);
            e.uint(b);
        });
    }

    /// OR-set entries: element and `(site index, seq)` tags.
    pub fn tagged(&mut self, entries: &[(String, Vec<(u32, u64)>)]) {
        self.seq(entries, |e, (elem, tags)| {
            e.str(elem);
            e.pairs(tags);
        });
    }
}

/// Reads primitives from a byte slice, tracking the offset for errors.
pub struct Dec<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Dec<'a> {
    /// A reader over `bytes`; `what` names the format in errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Dec<'a> {
        Dec {
            bytes,
            pos: 0,
            what,
        }
    }

    /// A structural error at the current offset.
    pub fn malformed(&self, message: impl std::fmt::Display) -> DecodeError {
        DecodeError::Malformed {
            what: self.what,
            message: format!("{message} (at byte {})", self.pos),
        }
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Whether every byte has been read (for a layout's optional last field).
    pub fn at_end(&self) -> bool {
        self.left() == 0
    }

    /// Refuses bytes after the end of the layout.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                offset: self.pos,
                extra: self.left(),
            })
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.left() {
            return Err(self.malformed(format!(
                "{n} bytes needed, {} left of {}",
                self.left(),
                self.bytes.len()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.malformed(format!("invalid boolean byte {b}"))),
        }
    }

    pub fn uint(&mut self) -> Result<u64, DecodeError> {
        Ok(match self.u8()? {
            b if b < U16_MARK => u64::from(b),
            U16_MARK => u64::from(u16::from_le_bytes(self.array()?)),
            U32_MARK => u64::from(u32::from_le_bytes(self.array()?)),
            U64_MARK => u64::from_le_bytes(self.array()?),
            b => return Err(self.malformed(format!("invalid integer marker {b}"))),
        })
    }

    /// A 32-bit field (indices, variant numbers): the 64-bit form is
    /// refused even when the value would fit, as bincode did.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.bytes.get(self.pos) == Some(&U64_MARK) {
            return Err(self.malformed("a 64-bit integer where a 32-bit one belongs"));
        }
        let n = self.uint()?;
        u32::try_from(n).map_err(|_| self.malformed(format!("{n} does not fit 32 bits")))
    }

    pub fn int(&mut self) -> Result<i64, DecodeError> {
        let n = self.uint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A count of elements, each at least one byte: refused before any
    /// allocation when fewer bytes are left.
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.uint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.left() => Ok(n),
            _ => Err(self.malformed(format!(
                "a count of {n} with only {} bytes left",
                self.left()
            ))),
        }
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count()?;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let raw = self.bytes()?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => {
                self.pos = start;
                Err(self.malformed(format!("string is not UTF-8: {e}")))
            }
        }
    }

    pub fn site(&mut self) -> Result<SiteId, DecodeError> {
        let raw = self.bytes()?;
        let bytes: [u8; 16] = raw
            .try_into()
            .map_err(|_| self.malformed(format!("a site id of {} bytes, not 16", raw.len())))?;
        Ok(SiteId::from_bytes(bytes))
    }

    pub fn option<T>(
        &mut self,
        mut each: impl FnMut(&mut Dec<'a>) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(each(self)?)),
            b => Err(self.malformed(format!("invalid option tag {b}"))),
        }
    }

    pub fn seq<T>(
        &mut self,
        mut each: impl FnMut(&mut Dec<'a>) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.count()?;
        let mut out = capped(n);
        for _ in 0..n {
            out.push(each(self)?);
        }
        Ok(out)
    }

    /// A variant index below `variants`.
    pub fn variant(&mut self, variants: u32, of: &str) -> Result<u32, DecodeError> {
        let i = self.u32()?;
        if i < variants {
            Ok(i)
        } else {
            Err(self.malformed(format!("unknown {of} variant {i}")))
        }
    }

    pub fn value(&mut self) -> Result<Value, DecodeError> {
        Ok(match self.variant(5, "value")? {
            0 => Value::Null,
            1 => Value::Integer(self.int()?),
            2 => Value::Real(self.f64()?),
            3 => Value::Text(self.string()?),
            _ => Value::Blob(self.bytes()?.to_vec()),
        })
    }

    pub fn values(&mut self) -> Result<Vec<Value>, DecodeError> {
        self.seq(Dec::value)
    }

    pub fn pairs(&mut self) -> Result<Vec<(u32, u64)>, DecodeError> {
        self.seq(|d| Ok((d.u32()?, d.uint()?)))
    }

    pub fn triples(&mut self) -> Result<Vec<(u32, u64, u64)>, DecodeError> {
        self.seq(|d| Ok((d.u32()?, d.uint()?, d.uint()?)))
    }

    pub fn tagged(&mut self) -> Result<Tagged, DecodeError> {
        self.seq(|d| Ok((d.string()?, d.pairs()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn integers_round_trip_in_the_fewest_bytes(n in any::<u64>(), i in any::<i64>()) {
            let mut e = Enc::new();
            e.uint(n);
            e.int(i);
            let bytes = e.into_bytes();
            let width = |n: u64| if n < 251 { 1 } else if n <= 0xffff { 3 } else if n <= 0xffff_ffff { 5 } else { 9 };
            let zz = ((i << 1) ^ (i >> 63)) as u64;
            prop_assert_eq!(bytes.len(), width(n) + width(zz));
            let mut d = Dec::new(&bytes, "test");
            prop_assert_eq!(d.uint()?, n);
            prop_assert_eq!(d.int()?, i);
            d.finish()?;
        }
    }

    #[test]
    fn known_bytes() {
        let mut e = Enc::new();
        e.uint(250);
        e.uint(251);
        e.int(-1);
        e.str("hé");
        e.option(Some(7u64), Enc::uint);
        e.option(None::<u64>, Enc::uint);
        assert_eq!(
            e.into_bytes(),
            [250, 251, 251, 0, 1, 3, b'h', 0xc3, 0xa9, 1, 7, 0]
        );
    }

    #[test]
    fn announced_counts_reserve_little() {
        let v: Vec<[u8; 144]> = capped(usize::MAX);
        assert!(v.capacity() * 144 <= MAX_PREALLOC);
        let small: Vec<u64> = capped(3);
        assert!(small.capacity() >= 3);
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        // A count of 2^60 elements in a four-byte input.
        let mut d = Dec::new(&[253, 0, 0, 0, 0, 0, 0, 0, 16], "test");
        assert!(d.seq(Dec::u8).is_err());
        assert!(Dec::new(&[254], "test").uint().is_err());
        assert!(Dec::new(&[2], "test").bool().is_err());
        assert!(Dec::new(&[2], "test").option(Dec::u8).is_err());
        assert!(Dec::new(&[2, 0xff, 0xfe], "test").string().is_err());
        assert!(Dec::new(&[3, 1, 2, 3], "test").site().is_err());
        assert!(Dec::new(&[9], "test").value().is_err());
        assert!(Dec::new(&[253, 0, 0, 0, 0, 1, 0, 0, 0], "test")
            .u32()
            .is_err());
        assert!(matches!(
            Dec::new(&[1, 2], "test").finish(),
            Err(DecodeError::TrailingBytes {
                offset: 0,
                extra: 2
            })
        ));
    }
}
