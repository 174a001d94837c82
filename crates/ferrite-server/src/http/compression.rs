//! Response compression: gzip and brotli, chosen from the request's `accept-encoding`.
//!
//! Shape responses (catch-up and live long-poll) are compressed by [`super::shape`] itself: a
//! catch-up response is immutable, so its compressed bytes are made once and kept in a bounded
//! [`Cache`] (live responses that many clients at the same offset receive hit it too). Their tags
//! carry the encoding (`…:gzip"`, `…:br"`), so no cache ever answers a revalidation of one
//! encoding with another. Every other answer big enough to matter (subset snapshots, which
//! stream; presence, metrics) goes through tower-http's streaming compression ([`layer`]).
//! Server-sent events are not compressed: each event must reach the client at once, and a
//! compressor per open stream would cost hundreds of KiB for each of thousands of clients.
//! Bodies under [`MIN_BYTES`] are sent as they are.

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
    /// The coding to answer a request with: brotli if accepted, else gzip, else none. Codings
    /// with `q=0` are refused; `*` stands for both.
    pub fn negotiate(headers: &HeaderMap) -> Encoding {
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
        let accepted = |q: Option<f32>| q.or(any).is_some_and(|q| q > 0.0);
        if accepted(br) && br.or(any) >= gzip.or(any) {
            Encoding::Brotli
        } else if accepted(gzip) {
            Encoding::Gzip
        } else if accepted(br) {
            Encoding::Brotli
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
    pub fn size(&self) -> usize {
        self.inner.lock().bytes
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
