//! SPDY/3 frames (the framing of SPDY/3.1, as Go's spdystream speaks it for kubectl) and their header blocks,
//! compressed with one zlib stream per direction primed with SPDY's dictionary.
//!
//! A control frame is `1 | version (15 bits) | type (16) | flags (8) | length (24) | payload`; a data frame is
//! `0 | stream id (31) | flags (8) | length (24) | payload`. A header block is, before compression, a 32-bit
//! count of pairs, then each name and value as a 32-bit length and its bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::sync::OnceLock;

/// The framing version Kubernetes' SPDY/3.1 streams carry.
const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
/// FLAG_FIN: the sender's half of the stream ends with this frame.
const FIN: u8 = 0x01;
/// The most bytes a header block may expand to: bigger is an attack, not a request.
const MAX_HEADER_BLOCK: usize = 64 << 10;
/// The most pairs a header block may have.
const MAX_HEADERS: usize = 256;
/// The most bytes of a frame's payload this side accepts (a data frame of spdystream carries at most 64 KiB).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// A stream's headers, names lower case as SPDY/3 requires.
pub type Headers = Vec<(String, String)>;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A new stream from the peer.
    SynStream {
        /// Its id (odd from a client).
        stream: u32,
        /// Whether the peer sends nothing on it.
        fin: bool,
        /// Its headers.
        headers: Headers,
    },
    /// The answer to a SYN_STREAM.
    SynReply {
        /// The stream.
        stream: u32,
        /// Its headers.
        headers: Headers,
    },
    /// The stream is abandoned.
    RstStream {
        /// The stream.
        stream: u32,
        /// Why (SPDY's status codes; 5 = CANCEL).
        status: u32,
    },
    /// More headers on a stream.
    Headers {
        /// The stream.
        stream: u32,
    },
    /// A ping, answered with the same id.
    Ping {
        /// Its id.
        id: u32,
    },
    /// The peer ends the session.
    GoAway {
        /// The last stream it accepted.
        last_stream: u32,
    },
    /// SETTINGS and WINDOW_UPDATE, which this side does not act on (spdystream does not enforce windows).
    Ignored,
    /// Bytes of a stream.
    Data {
        /// The stream.
        stream: u32,
        /// Whether the sender's half ends here.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
}

/// Why the bytes are not a SPDY session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A control frame of another version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame longer than this side accepts.
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    /// A payload shorter than its type needs, or a malformed header block.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A header block that does not inflate.
    #[error("header block: {0}")]
    Compression(String),
}

/// SPDY/3's zlib dictionary (section 2.6.10.1 of the draft): the header names of HTTP/1.1, each with its
/// 32-bit length, then common values run together.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: [&str; 66] = [
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
            "",
        ];
        const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
            203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
            403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
            Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
            chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
            text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
        let mut bytes = Vec::new();
        for word in WORDS.iter().filter(|w| !w.is_empty()) {
            bytes.extend_from_slice(&(word.len() as u32).to_be_bytes());
            bytes.extend_from_slice(word.as_bytes());
        }
        bytes.extend_from_slice(TAIL.as_bytes());
        bytes
    })
}

/// Encodes and decodes one session's frames: each direction's header blocks form one zlib stream.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for Codec {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Priming the compressor cannot fail: it is new and the dictionary is fixed.
        let _ = deflate.set_dictionary(dictionary());
        Self {
            inflate: Decompress::new(true),
            deflate,
        }
    }
}

fn u32_at(payload: &[u8], at: usize, what: &'static str) -> Result<u32, FrameError> {
    payload
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(FrameError::Malformed(what))
}

impl Codec {
    /// Takes one whole frame off the front of `buffer`, if it holds one.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buffer.len() < 8 {
            return Ok(None);
        }
        let length =
            usize::from(buffer[5]) << 16 | usize::from(buffer[6]) << 8 | usize::from(buffer[7]);
        if length > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(length));
        }
        if buffer.len() < 8 + length {
            return Ok(None);
        }
        let head = buffer.split_to(8);
        let payload = buffer.split_to(length).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Ok(Some(Frame::Data {
                stream,
                fin: flags & FIN != 0,
                data: payload,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let stream = || u32_at(&payload, 0, "frame").map(|id| id & 0x7fff_ffff);
        let frame = match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM => {
                let block = payload
                    .get(10..)
                    .ok_or(FrameError::Malformed("SYN_STREAM"))?;
                Frame::SynStream {
                    stream: stream()?,
                    fin: flags & FIN != 0,
                    headers: self.inflate_headers(block)?,
                }
            }
            SYN_REPLY => {
                let block = payload.get(4..).ok_or(FrameError::Malformed("SYN_REPLY"))?;
                Frame::SynReply {
                    stream: stream()?,
                    headers: self.inflate_headers(block)?,
                }
            }
            HEADERS => {
                let block = payload.get(4..).ok_or(FrameError::Malformed("HEADERS"))?;
                // Inflated to keep the zlib stream in step; no stream here uses later headers.
                self.inflate_headers(block)?;
                Frame::Headers { stream: stream()? }
            }
            RST_STREAM => Frame::RstStream {
                stream: stream()?,
                status: u32_at(&payload, 4, "RST_STREAM")?,
            },
            PING => Frame::Ping {
                id: u32_at(&payload, 0, "PING")?,
            },
            GOAWAY => Frame::GoAway {
                last_stream: stream()?,
            },
            SETTINGS | WINDOW_UPDATE => Frame::Ignored,
            // "Implementations MUST ignore unknown control frame types" (unknown ones carry no header block).
            _ => Frame::Ignored,
        };
        Ok(Some(frame))
    }

    fn inflate_headers(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if plain.len() == plain.capacity() {
                if plain.len() >= MAX_HEADER_BLOCK {
                    return Err(FrameError::TooLarge(plain.len()));
                }
                plain.reserve(plain.len().max(256));
            }
            let before = self.inflate.total_in();
            let result = self
                .inflate
                .decompress_vec(input, &mut plain, FlushDecompress::Sync);
            let consumed = usize::try_from(self.inflate.total_in() - before).unwrap_or(input.len());
            input = &input[consumed.min(input.len())..];
            match result {
                Err(error) if error.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                }
                Err(error) => return Err(FrameError::Compression(error.to_string())),
                Ok(_) if input.is_empty() && plain.len() < plain.capacity() => break,
                Ok(_) => {}
            }
        }
        parse_headers(&plain)
    }

    fn deflate_headers(&mut self, headers: &Headers) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (name, value) in headers {
            plain.put_u32(name.len() as u32);
            plain.put_slice(name.as_bytes());
            plain.put_u32(value.len() as u32);
            plain.put_slice(value.as_bytes());
        }
        let mut compressed = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            let before = self.deflate.total_in();
            // Compressing into a Vec with room cannot fail.
            let _ = self
                .deflate
                .compress_vec(input, &mut compressed, FlushCompress::Sync);
            let consumed = usize::try_from(self.deflate.total_in() - before).unwrap_or(input.len());
            input = &input[consumed.min(input.len())..];
            // Done when everything went in and the flush did not fill the output.
            if input.is_empty() && compressed.len() < compressed.capacity() {
                return compressed;
            }
            compressed.reserve(compressed.capacity().max(64));
        }
    }

    /// Appends a frame to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u8(flags);
            out.put_uint(payload.len() as u64, 3);
            out.put_slice(payload);
        };
        match frame {
            Frame::Data { stream, fin, data } => {
                out.put_u32(stream & 0x7fff_ffff);
                out.put_u8(if *fin { FIN } else { 0 });
                out.put_uint(data.len() as u64, 3);
                out.put_slice(data);
            }
            Frame::SynReply { stream, headers } => {
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend(self.deflate_headers(headers));
                control(out, SYN_REPLY, 0, &payload);
            }
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => {
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend([0; 6]);
                payload.extend(self.deflate_headers(headers));
                control(out, SYN_STREAM, if *fin { FIN } else { 0 }, &payload);
            }
            Frame::RstStream { stream, status } => {
                let mut payload = stream.to_be_bytes().to_vec();
                payload.extend(status.to_be_bytes());
                control(out, RST_STREAM, 0, &payload);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_stream } => {
                let mut payload = last_stream.to_be_bytes().to_vec();
                payload.extend(0u32.to_be_bytes());
                control(out, GOAWAY, 0, &payload);
            }
            Frame::Headers { .. } | Frame::Ignored => {}
        }
    }
}

fn parse_headers(plain: &[u8]) -> Result<Headers, FrameError> {
    let mut block = plain;
    let take = |block: &mut &[u8]| -> Result<String, FrameError> {
        if block.remaining() < 4 {
            return Err(FrameError::Malformed("header block"));
        }
        let length = block.get_u32() as usize;
        if block.remaining() < length {
            return Err(FrameError::Malformed("header block"));
        }
        let text = String::from_utf8_lossy(&block[..length]).into_owned();
        block.advance(length);
        Ok(text)
    };
    if block.remaining() < 4 {
        return Err(FrameError::Malformed("header block"));
    }
    let count = block.get_u32() as usize;
    if count > MAX_HEADERS {
        return Err(FrameError::Malformed("header block: too many headers"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take(&mut block)?.to_ascii_lowercase();
        let value = take(&mut block)?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// The value of a header, if present (the first of NUL-separated values).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.split('\0').next())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let (mut sender, mut receiver) = (Codec::default(), Codec::default());
        let mut wire = BytesMut::new();
        for frame in frames {
            sender.encode(frame, &mut wire);
        }
        let mut decoded = Vec::new();
        while let Some(frame) = receiver.decode(&mut wire).unwrap() {
            decoded.push(frame);
        }
        assert!(wire.is_empty());
        decoded
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let dictionary = dictionary();
        assert_eq!(dictionary.len(), 1423);
        assert_eq!(&dictionary[..11], b"\0\0\0\x07options");
        assert!(dictionary.ends_with(b",utf-,*,enq=0."));
    }

    #[test]
    fn frames_survive_a_round_trip_and_header_blocks_share_one_zlib_stream() {
        let headers = |kind: &str| -> Headers {
            vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), "8080".into()),
            ]
        };
        let frames = [
            Frame::SynStream {
                stream: 1,
                fin: false,
                headers: headers("error"),
            },
            Frame::SynStream {
                stream: 3,
                fin: true,
                headers: headers("data"),
            },
            Frame::SynReply {
                stream: 3,
                headers: Vec::new(),
            },
            Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream: 1,
                status: 5,
            },
            Frame::GoAway { last_stream: 3 },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn a_frame_split_anywhere_waits_for_the_rest() {
        let mut codec = Codec::default();
        let mut wire = BytesMut::new();
        codec.encode(
            &Frame::Data {
                stream: 5,
                fin: false,
                data: Bytes::from_static(b"abcdef"),
            },
            &mut wire,
        );
        let mut reader = Codec::default();
        let mut partial = BytesMut::from(&wire[..9]);
        assert_eq!(reader.decode(&mut partial), Ok(None));
        partial.extend_from_slice(&wire[9..]);
        assert!(matches!(
            reader.decode(&mut partial),
            Ok(Some(Frame::Data { stream: 5, .. }))
        ));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let cases: [&[u8]; 6] = [
            // Version 2.
            b"\x80\x02\x00\x01\x00\x00\x00\x0a\0\0\0\x01\0\0\0\0\0\0",
            // A SYN_STREAM too short for its fields.
            b"\x80\x03\x00\x01\x00\x00\x00\x02\0\0",
            // A header block that is not zlib.
            b"\x80\x03\x00\x01\x00\x00\x00\x0e\0\0\0\x01\0\0\0\0\0\0garb",
            // RST_STREAM without a status.
            b"\x80\x03\x00\x03\x00\x00\x00\x04\0\0\0\x01",
            // PING without an id.
            b"\x80\x03\x00\x06\x00\x00\x00\x00",
            // A frame longer than accepted.
            b"\x00\x00\x00\x01\x00\xff\xff\xff",
        ];
        for case in cases {
            let mut buffer = BytesMut::from(case);
            assert!(
                Codec::default().decode(&mut buffer).is_err(),
                "{case:?} is refused"
            );
        }
        // Random bytes: an error or more to wait for, and never a panic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let mut buffer = BytesMut::from(&bytes[..]);
            let mut codec = Codec::default();
            while let Ok(Some(_)) = codec.decode(&mut buffer) {}
        }
    }

    #[test]
    fn a_header_bomb_is_refused() {
        let mut sender = Codec::default();
        let huge: Headers = vec![("x".into(), "a".repeat(200_000))];
        let mut wire = BytesMut::new();
        sender.encode(
            &Frame::SynReply {
                stream: 1,
                headers: huge,
            },
            &mut wire,
        );
        assert!(matches!(
            Codec::default().decode(&mut wire),
            Err(FrameError::TooLarge(_))
        ));
    }
}
