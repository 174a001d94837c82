//! Response compression: gzip and brotli, chosen from the request's `accept-encoding`.
//!
//! Shape responses (catch-up and live long-poll) are compressed by [`super::shape`] itself: a
//! catch-up response is immutable, so its compressed bytes are made once and kept in a bounded
//! [`Cache`] (live responses that many clients at the same offset receive hit it too). Their tags
//! carry the encoding (`…:gzip"`, `…:br"`), so no cache ever answers a revalidation of one
//! encoding with another. Every other answer big enough to matter (subset snapshots, which
//! stream; presence, metrics) goes through tower-http's streaming compression ([`layer`]).
//! Server-sent events get gzip ([`GzipEvents`]) made so that each batch of events reaches the
//! client at once, without a compressor held per open stream (which would cost hundreds of KiB
//! for each of thousands of clients). Bodies under [`MIN_BYTES`] are sent as they are.

use axum::http::{header, HeaderMap, HeaderValue};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::io::Write;

/// Bodies smaller than this are not compressed (the saving would not pay for the work).
pub const MIN_BYTES: usize = 1024;
/// gzip level for shape responses (compressed once, served many times).
const GZIP_LEVEL: u32 = 6;
/// Brotli quality and window for shape responses.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW: u32 = 22;

/// A content coding this server produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// `gzip`.
    Gzip,
    /// `br`.
    Brotli,
}

impl Encoding {
    /// The coding to answer a request with: brotli if accepted (and not ranked below gzip),
    /// else gzip, else none. Codings with `q=0` are refused; `*` stands for both.
    pub fn negotiate(headers: &HeaderMap) -> Encoding {
        let (br, gzip, any) = weights(headers);
        let accepted = |q: Option<f32>| q.or(any).is_some_and(|q| q > 0.0);
        if accepted(br) && br.or(any) >= gzip.or(any) {
            Encoding::Brotli
        } else if accepted(gzip) {
            Encoding::Gzip
        } else {
            Encoding::Identity
        }
    }

    /// [`Encoding::Gzip`] if the request accepts gzip, else identity (event streams are only
    /// ever gzipped, see [`GzipEvents`]).
    pub fn negotiate_gzip(headers: &HeaderMap) -> Encoding {
        let (_, gzip, any) = weights(headers);
        if gzip.or(any).is_some_and(|q| q > 0.0) {
            Encoding::Gzip
        } else {
            Encoding::Identity
        }
    }

    /// The `content-encoding` value (`None` for identity).
    pub fn header_value(self) -> Option<HeaderValue> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some(HeaderValue::from_static("gzip")),
            Encoding::Brotli => Some(HeaderValue::from_static("br")),
        }
    }

    /// What a response's entity tag gets for this coding (representations differ per coding).
    pub fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Gzip => ":gzip",
            Encoding::Brotli => ":br",
        }
    }
}

/// The q-values `accept-encoding` gives `br`, `gzip` (or `x-gzip`) and `*` (`None`: not named).
fn weights(headers: &HeaderMap) -> (Option<f32>, Option<f32>, Option<f32>) {
    let (mut br, mut gzip, mut any) = (None, None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "br" => br = Some(q),
                "gzip" | "x-gzip" => gzip = Some(q),
                "*" => any = Some(q),
                _ => {}
            }
        }
    }
    (br, gzip, any)
}

/// Compresses `data` with `encoding` (identity: a copy).
pub fn compress(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(data.len() / 4 + 64);
    match encoding {
        Encoding::Identity => data.to_vec(),
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            // Writing to memory cannot fail.
            let _ = e.write_all(data);
            e.finish().unwrap_or_default()
        }
        Encoding::Brotli => {
            let mut e = brotli::CompressorWriter::new(out, 64 * 1024, BROTLI_QUALITY, BROTLI_WINDOW);
            let _ = e.write_all(data);
            e.into_inner()
        }
    }
}

/// gzip for an event stream, piece by piece: each piece (a batch of events, a keep-alive) is
/// complete deflate data ending on a byte boundary, so the client can decode it as soon as it
/// arrives. A big piece is compressed by a compressor made for it alone (no back-references
/// into earlier pieces, so nothing is held between pieces but a CRC); a small one goes as a
/// stored block. [`GzipEvents::finish`] ends the stream.
pub struct GzipEvents {
    crc: crc32fast::Hasher,
    len: u32,
    started: bool,
}

/// gzip header: deflate, no name or time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

impl Default for GzipEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl GzipEvents {
    /// A stream with nothing sent yet.
    pub fn new() -> GzipEvents {
        GzipEvents { crc: crc32fast::Hasher::new(), len: 0, started: false }
    }

    /// The bytes that carry `data`, decodable on arrival.
    pub fn piece(&mut self, data: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(data.len() / 2 + 32);
        if !self.started {
            out.extend_from_slice(&GZIP_HEADER);
            self.started = true;
        }
        self.crc.update(data);
        self.len = self.len.wrapping_add(data.len() as u32);
        if data.len() >= MIN_BYTES {
            let mut e = flate2::write::DeflateEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            // A sync flush ends the data on a byte boundary without ending the deflate stream.
            let _ = e.write_all(data);
            let _ = e.flush();
            // (Dropping the encoder writes a final block into the emptied buffer, not into `out`.)
            out = std::mem::take(e.get_mut());
        } else {
            for part in data.chunks(u16::MAX as usize) {
                let n = part.len() as u16;
                // A stored block, not the last: BFINAL 0, BTYPE 00, then byte-aligned LEN, NLEN.
                out.push(0);
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&(!n).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        Bytes::from(out)
    }

    /// The end of the stream: a last, empty block and the gzip trailer.
    pub fn finish(self) -> Bytes {
        let mut out = Vec::with_capacity(GZIP_HEADER.len() + 10);
        if !self.started {
            out.extend_from_slice(&GZIP_HEADER);
        }
        // BFINAL 1, BTYPE 01 (fixed codes), end-of-block: the bits 1, 10, 0000000.
        out.extend_from_slice(&[0x03, 0x00]);
        out.extend_from_slice(&self.crc.finalize().to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        Bytes::from(out)
    }
}

/// Compressed shape responses, by key (the response's tag, coding included, and its
/// `up-to-date` LSN), oldest dropped first once `limit` bytes are held.
pub struct Cache {
    limit: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Cache {
    /// An empty cache holding at most `limit` bytes of compressed bodies.
    pub fn new(limit: usize) -> Cache {
        Cache { limit, inner: Mutex::new(CacheInner::default()) }
    }

    /// The compressed body stored under `key`.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.inner.lock().map.get(key).cloned()
    }

    /// Stores a compressed body (bodies over an eighth of the limit are not kept).
    pub fn insert(&self, key: String, body: Bytes) {
        if body.len() > self.limit / 8 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.map.contains_key(&key) {
            return;
        }
        inner.bytes += body.len();
        inner.map.insert(key.clone(), body);
        inner.order.push_back(key);
        while inner.bytes > self.limit {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(b) = inner.map.remove(&old) {
                inner.bytes -= b.len();
            }
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn size(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Drops everything (benchmarks measure the first compression of each response with it).
    pub fn clear(&self) {
        *self.inner.lock() = CacheInner::default();
    }
}

/// Marks a response whose coding the handler chose itself: the compression layer leaves it be.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated;

/// tower-http's compression for every other answer: gzip or brotli (at a fast level: these are
/// compressed as they stream) for bodies of at least [`MIN_BYTES`] (or of unknown length), not for
/// event streams, images, or responses marked [`Negotiated`].
pub fn layer() -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
    let predicate = SizeAbove::new(MIN_BYTES as u16)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
        .and(|_: axum::http::StatusCode, _: axum::http::Version, _: &HeaderMap, ext: &axum::http::Extensions| {
            ext.get::<Negotiated>().is_none()
        });
    tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .br(true)
        .quality(tower_http::compression::CompressionLevel::Precise(4))
        .compress_when(predicate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn accept(v: &str) -> Encoding {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        Encoding::negotiate(&h)
    }

    #[test]
    fn negotiates_from_accept_encoding() {
        assert_eq!(Encoding::negotiate(&HeaderMap::new()), Encoding::Identity);
        assert_eq!(accept("gzip, deflate, br, zstd"), Encoding::Brotli);
        assert_eq!(accept("gzip"), Encoding::Gzip);
        assert_eq!(accept("x-gzip"), Encoding::Gzip);
        assert_eq!(accept("br"), Encoding::Brotli);
        assert_eq!(accept("br;q=0, gzip"), Encoding::Gzip);
        assert_eq!(accept("br;q=0.5, gzip;q=0.8"), Encoding::Gzip);
        assert_eq!(accept("gzip;q=0, br;q=0"), Encoding::Identity);
        assert_eq!(accept("identity"), Encoding::Identity);
        assert_eq!(accept("deflate"), Encoding::Identity);
        assert_eq!(accept("*"), Encoding::Brotli);
        assert_eq!(accept("*;q=0"), Encoding::Identity);
        assert_eq!(accept("br;q=0, *"), Encoding::Gzip);
    }

    #[test]
    fn compressed_bodies_decode_to_the_original() {
        let data: Vec<u8> =
            (0..5000).flat_map(|i| format!("{{\"key\":\"{i}\",\"v\":\"row {i}\"}},").into_bytes()).collect();
        let gz = compress(Encoding::Gzip, &data);
        let mut out = vec![];
        flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(gz.len() * 4 < data.len());
        let br = compress(Encoding::Brotli, &data);
        let mut out = vec![];
        brotli::Decompressor::new(br.as_slice(), 4096).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(br.len() * 4 < data.len());
    }

    #[test]
    fn event_stream_pieces_decode_as_they_arrive() {
        use flate2::write::GzDecoder;
        let pieces: Vec<Vec<u8>> = vec![
            b"data: {\"a\":1}\n\n".to_vec(),
            b": keep-alive\n\n".to_vec(),
            (0..400).flat_map(|i| format!("data: {{\"key\":\"{i}\"}}\n\n").into_bytes()).collect(),
            vec![b'x'; 70_000],
            b"data: {\"b\":2}\n\n".to_vec(),
        ];
        let mut gz = GzipEvents::new();
        let mut decoder = GzDecoder::new(Vec::new());
        let mut expected = vec![];
        for p in &pieces {
            decoder.write_all(&gz.piece(p)).unwrap();
            decoder.flush().unwrap();
            expected.extend_from_slice(p);
            // Everything sent so far is readable now, before the stream ends.
            assert_eq!(decoder.get_ref(), &expected);
        }
        decoder.write_all(&gz.finish()).unwrap();
        assert_eq!(decoder.finish().unwrap(), expected, "the trailer's CRC and length check out");
        // A stream that ends before any piece is still valid gzip.
        let mut out = vec![];
        flate2::read::GzDecoder::new(GzipEvents::new().finish().as_ref()).read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
        // Pieces of repetitive events do shrink.
        assert!(GzipEvents::new().piece(&pieces[2]).len() * 4 < pieces[2].len());
    }

    #[test]
    fn event_streams_are_only_gzipped() {
        assert_eq!(Encoding::negotiate_gzip(&HeaderMap::new()), Encoding::Identity);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            Encoding::negotiate_gzip(&h)
        };
        assert_eq!(with("gzip, deflate, br"), Encoding::Gzip);
        assert_eq!(with("br"), Encoding::Identity);
        assert_eq!(with("br, gzip;q=0"), Encoding::Identity);
        assert_eq!(with("*"), Encoding::Gzip);
    }

    #[test]
    fn the_cache_stays_within_its_limit() {
        let c = Cache::new(8000);
        for i in 0..20 {
            c.insert(format!("k{i}"), Bytes::from(vec![0u8; 900]));
        }
        assert!(c.size() <= 8000);
        assert!(c.get("k19").is_some());
        assert!(c.get("k0").is_none());
        c.insert("big".into(), Bytes::from(vec![0u8; 1001]));
        assert!(c.get("big").is_none(), "bodies over an eighth of the limit are not kept");
    }
}
