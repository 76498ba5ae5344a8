//! The binary encoding of state: postcard (serde), a compact, stable, documented wire
//! format (varint integers, no field names), for keys, accumulators and window state
//! alike. A snapshot is a sequence of values written one after the other; the reader
//! takes them back in the same order.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A state snapshot or restore failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateError(String);

impl StateError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        StateError(msg.into())
    }
}

/// Appends values to a byte buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `v`.
    pub fn put<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), StateError> {
        let buf = std::mem::take(&mut self.buf);
        self.buf = postcard::to_extend(v, buf)
            .map_err(|e| StateError::new(format!("cannot encode state: {e}")))?;
        Ok(())
    }

    /// Appends a length or count.
    pub fn put_len(&mut self, n: usize) -> Result<(), StateError> {
        self.put(&(n as u64))
    }

    /// Appends raw bytes with their length.
    pub fn put_bytes(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.put_len(bytes.len())?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Appends bytes that are already encoded values (a store's entries kept encoded).
    pub fn put_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Takes values back from bytes written by an [`Encoder`].
#[derive(Debug)]
pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Decoder { rest: bytes }
    }

    /// Takes the next value.
    pub fn take<T: DeserializeOwned>(&mut self) -> Result<T, StateError> {
        let (v, rest) = postcard::take_from_bytes::<T>(self.rest).map_err(|e| {
            StateError::new(format!(
                "cannot decode state ({e}; {} bytes left)",
                self.rest.len()
            ))
        })?;
        self.rest = rest;
        Ok(v)
    }

    /// Takes a length or count written by [`Encoder::put_len`].
    pub fn take_len(&mut self) -> Result<usize, StateError> {
        let n: u64 = self.take()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.rest.len().saturating_mul(8).max(1 << 20))
            .ok_or_else(|| StateError::new(format!("implausible length {n} in state")))
    }

    /// Takes raw bytes written by [`Encoder::put_bytes`].
    pub fn take_bytes(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.take_len()?;
        if n > self.rest.len() {
            return Err(StateError::new(format!(
                "state truncated: {n} bytes announced, {} left",
                self.rest.len()
            )));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// What is left to read (the bytes of the values that follow).
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Fails unless everything was read.
    pub fn finish(&self) -> Result<(), StateError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(StateError::new(format!(
                "{} bytes of state left unread",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_in_order() {
        let mut e = Encoder::new();
        e.put(&(1u32, "a".to_string())).unwrap();
        e.put_len(3).unwrap();
        e.put_bytes(b"xyz").unwrap();
        e.put(&Some(-5i64)).unwrap();
        let bytes = e.into_bytes();
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.take::<(u32, String)>().unwrap(), (1, "a".to_string()));
        assert_eq!(d.take_len().unwrap(), 3);
        assert_eq!(d.take_bytes().unwrap(), b"xyz");
        assert_eq!(d.take::<Option<i64>>().unwrap(), Some(-5));
        d.finish().unwrap();
        // Truncated input is an error, never a panic.
        for cut in 0..bytes.len() {
            let mut d = Decoder::new(&bytes[..cut]);
            let r = (|| {
                d.take::<(u32, String)>()?;
                d.take_len()?;
                d.take_bytes()?;
                d.take::<Option<i64>>()
            })();
            assert!(r.is_err(), "cut at {cut}");
        }
    }
}
