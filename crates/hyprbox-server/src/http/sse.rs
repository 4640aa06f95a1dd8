//! Server-sent event answers, gzip-compressed when the client accepts it.
//!
//! The compression layer cannot compress an event stream: it would hold events back to fill its
//! blocks, and every subscriber of the live fleet would compress the same frames again. Here each
//! chunk is compressed on its own and ended with a sync flush (deflate's empty stored block), so the
//! browser gets it whole and at once, and a chunk compressed once can be sent to every subscriber:
//! a sequence of such pieces behind one gzip header is a valid deflate stream, and the CRC the gzip
//! trailer needs is combined from each piece's own. Brotli streams cannot be put together from
//! pieces like this, so event streams are gzip or plain.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use flate2::{Compress, Compression, FlushCompress};
use futures_util::{Stream, StreamExt};

/// The comment line that keeps idle connections (and proxies) alive.
pub const PING_EVERY: Duration = Duration::from_secs(25);

const PING: &[u8] = b": ping\n\n";

/// A gzip member's header: no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Text compressed as a self-contained piece of a deflate stream, with what the gzip trailer needs.
#[derive(Clone, Debug)]
pub struct GzipPiece {
    deflated: Bytes,
    crc: u32,
    len: u64,
}

impl GzipPiece {
    /// Compresses `text` with no reference to anything before it, ending on a byte boundary.
    pub fn of(text: &[u8], level: u32) -> GzipPiece {
        let mut deflate = Compress::new(Compression::new(level), false);
        GzipPiece {
            deflated: Bytes::from(deflate_flushed(&mut deflate, text)),
            crc: crc32fast::hash(text),
            len: text.len() as u64,
        }
    }
}

/// Compresses `text` into `deflate`'s stream and flushes it to a byte boundary (not ending it).
fn deflate_flushed(deflate: &mut Compress, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 3 + 64);
    let start = deflate.total_in();
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(256));
        }
        let consumed = (deflate.total_in() - start) as usize;
        // Compressing into memory fails only on a broken stream state, which this code never makes.
        if deflate
            .compress_vec(&text[consumed..], &mut out, FlushCompress::Sync)
            .is_err()
        {
            break;
        }
        // The flush is complete once the compressor stops short of the space it was given.
        if (deflate.total_in() - start) as usize == text.len() && out.len() < out.capacity() {
            break;
        }
    }
    out
}

/// One gzip answer being sent: its header once, pieces, then the trailer.
#[derive(Debug)]
pub struct GzipStream {
    crc: crc32fast::Hasher,
    len: u64,
    /// This answer's own compressor, for what it sends alone (pings, a stream's own events).
    own: Option<Compress>,
}

impl GzipStream {
    pub fn new() -> GzipStream {
        GzipStream {
            crc: crc32fast::Hasher::new(),
            len: 0,
            own: None,
        }
    }

    pub fn header() -> Bytes {
        Bytes::from_static(&GZIP_HEADER)
    }

    /// A piece compressed elsewhere (shared by every subscriber), as the next bytes of this answer.
    pub fn shared(&mut self, piece: &GzipPiece) -> Bytes {
        self.crc
            .combine(&crc32fast::Hasher::new_with_initial_len(piece.crc, piece.len));
        self.len += piece.len;
        piece.deflated.clone()
    }

    /// `text` compressed by this answer's own compressor, which remembers what it sent before.
    pub fn own(&mut self, text: &[u8]) -> Bytes {
        self.crc.update(text);
        self.len += text.len() as u64;
        let deflate = self
            .own
            .get_or_insert_with(|| Compress::new(Compression::new(1), false));
        Bytes::from(deflate_flushed(deflate, text))
    }

    /// The end of the answer: a last, empty block, then the CRC and length of everything sent.
    pub fn finish(self) -> Bytes {
        let mut end = Vec::with_capacity(10);
        // A final block with fixed codes holding only its end-of-block code.
        end.extend_from_slice(&[0x03, 0x00]);
        end.extend_from_slice(&self.crc.finalize().to_le_bytes());
        end.extend_from_slice(&(self.len as u32).to_le_bytes());
        Bytes::from(end)
    }
}

impl Default for GzipStream {
    fn default() -> Self {
        GzipStream::new()
    }
}

/// Whether the request's `Accept-Encoding` takes gzip (`gzip` or `x-gzip`, or `*`, without `q=0`).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            ["gzip", "x-gzip", "*"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
                && !refused
        })
}

/// A piece of an event stream: text shared by every subscriber (with its compressed form), or text
/// of this answer's own.
pub enum Chunk {
    Shared { text: Bytes, gzip: GzipPiece },
    Own(Bytes),
}

/// A `text/event-stream` answer of ready-made SSE text, gzip-compressed when `gzip`, with a
/// `: ping` comment whenever nothing else was sent for [`PING_EVERY`].
pub fn response(gzip: bool, chunks: impl Stream<Item = Chunk> + Send + 'static) -> Response {
    let pinged = futures_util::stream::unfold(chunks.boxed(), |mut chunks| async move {
        let next = match tokio::time::timeout(PING_EVERY, chunks.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return None,
            Err(_) => Chunk::Own(Bytes::from_static(PING)),
        };
        Some((next, chunks))
    });
    let mut response = if gzip {
        gzip_body(pinged).into_response()
    } else {
        let text = pinged.map(|chunk| {
            Ok::<_, Infallible>(match chunk {
                Chunk::Shared { text, .. } | Chunk::Own(text) => text,
            })
        });
        Body::from_stream(text).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    vary_and_encode(headers, gzip);
    response
}

/// Compresses an event-stream answer made elsewhere (axum's `Sse`) chunk by chunk with the
/// answer's own compressor, when the client accepts gzip; anything else is returned as it is.
pub fn compress(gzip: bool, response: Response) -> Response {
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    if !gzip || !is_stream {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // A body error ends the compressed answer where the plain one would have ended.
    let chunks = body.into_data_stream().scan((), |(), item| {
        futures_util::future::ready(item.ok().map(Chunk::Own))
    });
    parts.headers.remove(header::CONTENT_LENGTH);
    vary_and_encode(&mut parts.headers, true);
    Response::from_parts(parts, gzip_body(chunks))
}

/// The gzip header, each chunk as a piece of one deflate stream, then the trailer.
fn gzip_body(chunks: impl Stream<Item = Chunk> + Send + 'static) -> Body {
    let pieces =
        futures_util::stream::unfold(Some((chunks.boxed(), GzipStream::new())), |state| async move {
            let (mut chunks, mut gzip) = state?;
            Some(match chunks.next().await {
                Some(Chunk::Shared { gzip: piece, .. }) => (gzip.shared(&piece), Some((chunks, gzip))),
                Some(Chunk::Own(text)) => (gzip.own(&text), Some((chunks, gzip))),
                None => (gzip.finish(), None),
            })
        });
    let whole = futures_util::stream::once(futures_util::future::ready(GzipStream::header())).chain(pieces);
    Body::from_stream(whole.map(Ok::<_, Infallible>))
}

fn vary_and_encode(headers: &mut HeaderMap, gzip: bool) {
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(bytes: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut text)
            .expect("a valid gzip stream");
        text
    }

    #[test]
    fn shared_pieces_and_own_text_make_one_valid_gzip_answer() {
        let frame = "event: heartbeat\ndata: {\"nodeId\":\"web-1\",\"cpuPercent\":12.5}\n\n".repeat(50);
        let piece = GzipPiece::of(frame.as_bytes(), 6);
        assert!(
            piece.deflated.len() < frame.len() / 5,
            "{} bytes",
            piece.deflated.len()
        );
        let mut stream = GzipStream::new();
        let mut answer = GzipStream::header().to_vec();
        answer.extend_from_slice(&stream.shared(&piece));
        answer.extend_from_slice(&stream.own(b": ping\n\n"));
        answer.extend_from_slice(&stream.shared(&piece));
        answer.extend_from_slice(&stream.own(b"event: lagged\ndata: {\"missed\":3}\n\n"));
        answer.extend_from_slice(&stream.finish());
        assert_eq!(
            gunzip(&answer),
            format!("{frame}: ping\n\n{frame}event: lagged\ndata: {{\"missed\":3}}\n\n")
        );
    }

    #[test]
    fn each_piece_is_readable_as_soon_as_it_arrives() {
        // What a browser does with an unfinished stream: inflate what came so far.
        let mut stream = GzipStream::new();
        let first = stream.own(b"event: a\ndata: 1\n\n");
        let mut inflate = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(1024);
        inflate
            .decompress_vec(&first, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, b"event: a\ndata: 1\n\n");
    }

    #[test]
    fn gzip_is_accepted_unless_refused() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip, deflate, br, zstd"));
        assert!(accepts("br;q=1.0, GZIP;q=0.5"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("br, identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
