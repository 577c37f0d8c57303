//! The body decoder of the fast path's codec: a response body as `Content-Length` bytes,
//! chunks (chunk-size lines and trailers read as hyper reads them, within its limits), or
//! everything until the connection closes, taken piece by piece off the read buffer.

use bytes::{Buf, BytesMut};
use http::header::{HeaderName, HeaderValue};

use super::{MAX_CHUNK_LINE, MAX_TRAILERS, TRAILERS_UNDER};

pub(in crate::proxy) enum Decoder {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
}

pub(in crate::proxy) enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    /// After the last chunk: the trailer lines so far, and their bytes with their CRLFs.
    Trailers(usize, usize),
}

pub(in crate::proxy) enum Piece {
    Data(BytesMut),
    NeedMore,
    End,
}

impl Decoder {
    /// The next piece of body in `buf`, consuming framing as it goes.
    pub(in crate::proxy) fn next(&mut self, buf: &mut BytesMut) -> Result<Piece, &'static str> {
        loop {
            match self {
                Decoder::Length(0) => return Ok(Piece::End),
                Decoder::Length(left) | Decoder::Chunked(ChunkState::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Piece::NeedMore);
                    }
                    let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    if let Decoder::Chunked(state @ ChunkState::Data(0)) = self {
                        *state = ChunkState::DataEnd;
                    }
                    return Ok(Piece::Data(buf.split_to(n)));
                }
                Decoder::UntilClose => {
                    return Ok(if buf.is_empty() { Piece::NeedMore } else { Piece::Data(buf.split()) });
                }
                Decoder::Chunked(ChunkState::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Piece::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    buf.advance(2);
                    *self = Decoder::Chunked(ChunkState::Size);
                }
                Decoder::Chunked(ChunkState::Size) => {
                    let Some(line) = take_line(buf)? else { return Ok(Piece::NeedMore) };
                    let size = chunk_size(&line)?;
                    *self =
                        Decoder::Chunked(if size == 0 { ChunkState::Trailers(0, 0) } else { ChunkState::Data(size) });
                }
                Decoder::Chunked(ChunkState::Trailers(lines, bytes)) => {
                    let Some(line) = take_line(buf)? else { return Ok(Piece::NeedMore) };
                    // The blank line counts once there are trailers (as hyper counts).
                    *bytes += if line.is_empty() && *lines == 0 { 0 } else { line.len() + 2 };
                    if *bytes >= TRAILERS_UNDER {
                        return Err("trailers over 16 KiB");
                    }
                    if line.is_empty() {
                        *self = Decoder::Length(0);
                        continue;
                    }
                    *lines += 1;
                    if *lines > MAX_TRAILERS {
                        return Err("more than 100 trailers");
                    }
                    if !is_field(&line) {
                        return Err("malformed trailer");
                    }
                }
            }
        }
    }
}

/// The size a chunk-size line gives: hex digits, then (as hyper reads it) spaces or tabs,
/// then `;` and extensions, which are ignored (RFC 9112 §7.1.1) but may not hold a CR.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err("malformed chunk size");
    }
    line[..digits]
        .iter()
        .try_fold(0u64, |size, &b| size.checked_mul(16)?.checked_add(u64::from((b as char).to_digit(16)?)))
        .ok_or("chunk size overflows")
}

/// Whether a trailer line is one header field, as hyper checks its trailers: httparse reads
/// it, and `http` takes its name and value.
fn is_field(line: &[u8]) -> bool {
    let mut field = Vec::with_capacity(line.len() + 4);
    field.extend_from_slice(line);
    field.extend_from_slice(b"\r\n\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 1];
    match httparse::parse_headers(&field, &mut headers) {
        Ok(httparse::Status::Complete((_, [h]))) => {
            HeaderName::from_bytes(h.name.as_bytes()).is_ok() && HeaderValue::from_bytes(h.value).is_ok()
        }
        _ => false,
    }
}

/// A CRLF-terminated line off the front of `buf` (without the CRLF), if all there. The
/// length limit holds however the reads split the line.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, &'static str> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > MAX_CHUNK_LINE { Err("chunk framing line too long") } else { Ok(None) };
    };
    if end > MAX_CHUNK_LINE {
        return Err("chunk framing line too long");
    }
    if end == 0 || buf[end - 1] != b'\r' {
        return Err("chunk framing line not ended by CRLF");
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}
