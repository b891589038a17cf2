//! AWS event-stream framing (`application/vnd.amazon.eventstream`), both ways: the decoder for Bedrock's streamed
//! answers and the encoder for the mock (and for speaking Bedrock to clients).
//!
//! A message is: total length (u32 BE), headers length (u32 BE), the CRC32 of those 8 bytes, the headers, the
//! payload, and the CRC32 of everything before it. A header is a name (u8 length), a type byte and a typed value;
//! strings (type 7) and byte arrays (6) carry a u16 length. Both CRCs are checked before a message is used: a frame
//! that fails either is an error, and nothing of it is forwarded.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Prelude (12 bytes) plus the message CRC (4).
const OVERHEAD: usize = 16;
/// Largest message accepted (AWS's own limit is 16 MiB).
pub const MAX_MESSAGE: usize = 16 << 20;

/// One decoded message: its header block (checked well-formed when decoded; read by name, string headers only)
/// and its payload. Nothing is copied or allocated per header: a Bedrock stream has a frame per token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    headers: Bytes,
    pub payload: Bytes,
}

impl Message {
    /// The value of the string header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut found = None;
        let _ = walk_headers(&self.headers, |k, v| {
            if found.is_none() && k == name.as_bytes() {
                found = v.and_then(|v| std::str::from_utf8(v).ok());
            }
        });
        found
    }
}

/// A framing error: the stream cannot be trusted past it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("an event-stream frame's prelude checksum does not match (corrupted stream)")]
    PreludeCrc,
    #[error("an event-stream frame's message checksum does not match (corrupted stream)")]
    MessageCrc,
    #[error("an event-stream frame declares an impossible length ({0} bytes)")]
    Length(usize),
    #[error("an event-stream frame has malformed headers")]
    Headers,
    #[error("the event stream ended inside a frame")]
    Truncated,
}

/// Incremental decoder: push bytes as they arrive, take whole messages.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let Some(prelude) = self.buf.get(..12) else { return Ok(None) };
        let word =
            |i: usize| prelude.get(i..i + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map_or(0, u32::from_be_bytes);
        let (total, headers_len, crc) = (word(0) as usize, word(4) as usize, word(8));
        if crc32fast::hash(prelude.get(..8).unwrap_or_default()) != crc {
            return Err(FrameError::PreludeCrc);
        }
        if !(OVERHEAD..=MAX_MESSAGE).contains(&total) || headers_len > total - OVERHEAD {
            return Err(FrameError::Length(total));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        let (body, tail) = frame.split_at(total - 4);
        let want = u32::from_be_bytes(tail.try_into().map_err(|_| FrameError::Truncated)?);
        if crc32fast::hash(body) != want {
            return Err(FrameError::MessageCrc);
        }
        let headers = frame.slice(12..12 + headers_len);
        walk_headers(&headers, |_, _| {})?;
        let payload = frame.slice(12 + headers_len..total - 4);
        Ok(Some(Message { headers, payload }))
    }

    /// Whether bytes of an unfinished message remain (at the end of the stream: truncation).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Calls `f(name, value)` for each header of a block (`value` for string headers only), or says the block is
/// malformed.
fn walk_headers<'a>(mut b: &'a [u8], mut f: impl FnMut(&'a [u8], Option<&'a [u8]>)) -> Result<(), FrameError> {
    while b.has_remaining() {
        let n = b.try_get_u8().map_err(|_| FrameError::Headers)? as usize;
        let name = b.get(..n).ok_or(FrameError::Headers)?;
        b = b.get(n..).ok_or(FrameError::Headers)?;
        let ty = b.try_get_u8().map_err(|_| FrameError::Headers)?;
        let fixed = match ty {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => {
                let len = b.try_get_u16().map_err(|_| FrameError::Headers)? as usize;
                let v = b.get(..len).ok_or(FrameError::Headers)?;
                if ty == 7 {
                    std::str::from_utf8(v).map_err(|_| FrameError::Headers)?;
                    f(name, Some(v));
                } else {
                    f(name, None);
                }
                b = b.get(len..).ok_or(FrameError::Headers)?;
                continue;
            }
            _ => return Err(FrameError::Headers),
        };
        f(name, None);
        b = b.get(fixed..).ok_or(FrameError::Headers)?;
    }
    Ok(())
}

/// Encodes one message with string headers.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let headers_len: usize = headers.iter().map(|(k, v)| 1 + k.len() + 1 + 2 + v.len()).sum();
    let total = OVERHEAD + headers_len + payload.len();
    let mut b = BytesMut::with_capacity(total);
    b.put_u32(total as u32);
    b.put_u32(headers_len as u32);
    let crc = crc32fast::hash(&b);
    b.put_u32(crc);
    for (k, v) in headers {
        b.put_u8(k.len() as u8);
        b.put_slice(k.as_bytes());
        b.put_u8(7);
        b.put_u16(v.len() as u16);
        b.put_slice(v.as_bytes());
    }
    b.put_slice(payload);
    let crc = crc32fast::hash(&b);
    b.put_u32(crc);
    b.freeze()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn chunk(payload: &str) -> Bytes {
        encode(
            &[(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")],
            payload.as_bytes(),
        )
    }

    #[test]
    fn round_trips_in_pieces_of_any_size() {
        let frames: Vec<Bytes> = (0..5).map(|i| chunk(&format!("{{\"bytes\":\"{i}\"}}"))).collect();
        let all: Vec<u8> = frames.concat();
        for step in [1, 3, 7, 64, all.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in all.chunks(step) {
                d.push(piece);
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert!(!d.has_partial());
            assert_eq!(got.len(), 5, "step {step}");
            assert_eq!(got[3].header(":event-type"), Some("chunk"));
            assert_eq!(&got[3].payload[..], b"{\"bytes\":\"3\"}");
        }
    }

    #[test]
    fn corruption_is_caught_by_the_checksums() {
        let f = chunk("{\"bytes\":\"x\"}").to_vec();
        for i in 0..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 0x20;
            let mut d = Decoder::default();
            d.push(&bad);
            match d.next_message() {
                Ok(Some(m)) => panic!("byte {i} flipped, still decoded: {m:?}"),
                Ok(None) => assert!(i < 4, "only a length change can leave the decoder waiting (byte {i})"),
                Err(_) => {}
            }
        }
        let mut d = Decoder::default();
        d.push(&f[..f.len() - 1]);
        assert_eq!(d.next_message(), Ok(None));
        assert!(d.has_partial(), "a truncated frame is left over");
    }

    #[test]
    fn skips_typed_headers_it_does_not_need() {
        // A header of each fixed-size type before a string one.
        let mut h = BytesMut::new();
        for (ty, len) in [(0u8, 0usize), (2, 1), (3, 2), (4, 4), (5, 8), (8, 8), (9, 16)] {
            h.put_u8(1);
            h.put_u8(b'a');
            h.put_u8(ty);
            h.put_bytes(0, len);
        }
        h.put_u8(1);
        h.put_u8(b'b');
        h.put_u8(6);
        h.put_u16(2);
        h.put_slice(b"zz");
        let mut names = Vec::new();
        walk_headers(&h, |k, v| names.push((k.to_vec(), v.map(<[u8]>::to_vec)))).unwrap();
        assert_eq!(names.len(), 8);
        assert_eq!(names[7], (b"b".to_vec(), None), "a byte array is not a string");
        h.put_u8(99);
        assert_eq!(walk_headers(&h, |_, _| {}), Err(FrameError::Headers));
    }
}
