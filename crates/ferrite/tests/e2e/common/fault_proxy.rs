//! A fault-injecting HTTP/1.1 proxy for tests. It sits between one client and the server and,
//! decided by a seeded RNG (so a failing run replays), refuses requests, loses or cuts responses,
//! delays both directions, delivers a request twice, and replays an old request later (a
//! duplicate that arrives after newer ones). Taken offline, it closes every connection it gets.
//!
//! One request per connection: the proxy answers with `connection: close`, which keeps request
//! boundaries (and so the fault decisions) deterministic without parsing keep-alive streams.

#![allow(dead_code)] // each test uses part of it

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How often each fault happens (probabilities per request) and the longest delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// The request is read, never forwarded, and the connection closed.
    pub refuse: f64,
    /// Forwarded and answered by the server, but the answer never reaches the client.
    pub lose_response: f64,
    /// Forwarded; only part of the answer reaches the client before the connection closes.
    pub cut_response: f64,
    /// Forwarded twice in a row; the client sees the second answer.
    pub duplicate: f64,
    /// Kept and delivered again just before a later request (an old duplicate arriving late).
    pub replay_later: f64,
    /// Each direction waits up to this long.
    pub max_delay_ms: u64,
}

impl Faults {
    /// A clean network.
    pub const NONE: Faults = Faults {
        refuse: 0.0,
        lose_response: 0.0,
        cut_response: 0.0,
        duplicate: 0.0,
        replay_later: 0.0,
        max_delay_ms: 0,
    };

    /// A bad network: about one request in three meets a fault.
    pub const CHAOTIC: Faults = Faults {
        refuse: 0.08,
        lose_response: 0.08,
        cut_response: 0.08,
        duplicate: 0.06,
        replay_later: 0.06,
        max_delay_ms: 15,
    };
}

/// What the proxy did, for the test's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Requests received.
    pub requests: usize,
    /// Requests refused because the proxy was offline.
    pub offline: usize,
    /// Requests read and never forwarded.
    pub refused: usize,
    /// Requests the server answered whose answers were dropped.
    pub lost: usize,
    /// Answers delivered only in part.
    pub cut: usize,
    /// Requests the server received twice in a row.
    pub duplicated: usize,
    /// Old requests the server received again later.
    pub replayed: usize,
}

impl std::ops::AddAssign for FaultCounts {
    fn add_assign(&mut self, o: FaultCounts) {
        self.requests += o.requests;
        self.offline += o.offline;
        self.refused += o.refused;
        self.lost += o.lost;
        self.cut += o.cut;
        self.duplicated += o.duplicated;
        self.replayed += o.replayed;
    }
}

struct Shared {
    upstream: SocketAddr,
    rng: Mutex<StdRng>,
    faults: Mutex<Faults>,
    online: AtomicBool,
    /// Requests kept for a late replay.
    stash: Mutex<Vec<Vec<u8>>>,
    counts: Mutex<FaultCounts>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: give this to the client instead of the server's address.
    pub base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) with its own seeded RNG.
    pub async fn start(upstream: &str, seed: u64, faults: Faults) -> FaultProxy {
        let upstream: SocketAddr =
            upstream.trim_start_matches("http://").trim_end_matches('/').parse().expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            faults: Mutex::new(faults),
            online: AtomicBool::new(true),
            stash: Mutex::new(vec![]),
            counts: Mutex::new(FaultCounts::default()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    // A failed connection is one of the faults the client must survive.
                    let _ = serve(&s, conn).await;
                });
            }
        });
        FaultProxy { base, shared, task }
    }

    /// Cuts the client off (every connection closed at once) or lets it back.
    pub fn set_online(&self, online: bool) {
        self.shared.online.store(online, Ordering::SeqCst);
    }

    /// Changes the fault rates from the next request on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
        if faults.replay_later == 0.0 {
            self.shared.stash.lock().unwrap().clear();
        }
    }

    /// What happened so far.
    pub fn counts(&self) -> FaultCounts {
        self.shared.counts.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What to do with one request, drawn before anything is sent so the draws stay in request order.
struct Plan {
    replay: Option<Vec<u8>>,
    stash: bool,
    refuse: bool,
    duplicate: bool,
    lose: bool,
    /// Bytes of the answer to deliver before closing, as a fraction.
    cut: Option<f64>,
    delay_in: Duration,
    delay_out: Duration,
}

fn plan(s: &Shared) -> Plan {
    let f = *s.faults.lock().unwrap();
    let mut rng = s.rng.lock().unwrap();
    let delay = |rng: &mut StdRng| {
        Duration::from_millis(if f.max_delay_ms > 0 { rng.gen_range(0..=f.max_delay_ms) } else { 0 })
    };
    let mut stash = s.stash.lock().unwrap();
    let replay = if !stash.is_empty() && rng.gen_bool(0.5) {
        let i = rng.gen_range(0..stash.len());
        Some(stash.remove(i))
    } else {
        None
    };
    let roll = rng.gen::<f64>();
    let mut at = 0.0;
    let mut pick = |p: f64| {
        at += p;
        roll < at
    };
    let (refuse, lose, cut, duplicate, keep) =
        (pick(f.refuse), pick(f.lose_response), pick(f.cut_response), pick(f.duplicate), pick(f.replay_later));
    let cut = (cut && !lose && !refuse).then(|| rng.gen_range(0.0..1.0));
    Plan {
        replay,
        stash: keep && !(refuse || lose || cut.is_some() || duplicate),
        refuse,
        duplicate: duplicate && !(refuse || lose || cut.is_some()),
        lose: lose && !refuse,
        cut,
        delay_in: delay(&mut rng),
        delay_out: delay(&mut rng),
    }
}

async fn serve(s: &Shared, mut conn: TcpStream) -> std::io::Result<()> {
    let Some(request) = read_request(&mut conn).await? else {
        return Ok(());
    };
    s.counts.lock().unwrap().requests += 1;
    if !s.online.load(Ordering::SeqCst) {
        s.counts.lock().unwrap().offline += 1;
        return Ok(()); // closed unanswered
    }
    let p = plan(s);
    if let Some(old) = &p.replay {
        s.counts.lock().unwrap().replayed += 1;
        let _ = forward(s.upstream, old).await;
    }
    tokio::time::sleep(p.delay_in).await;
    if p.refuse {
        s.counts.lock().unwrap().refused += 1;
        return Ok(());
    }
    if p.stash {
        s.stash.lock().unwrap().push(request.clone());
    }
    let mut answer = forward(s.upstream, &request).await?;
    if p.duplicate {
        s.counts.lock().unwrap().duplicated += 1;
        answer = forward(s.upstream, &request).await?;
    }
    tokio::time::sleep(p.delay_out).await;
    if p.lose {
        s.counts.lock().unwrap().lost += 1;
        return Ok(());
    }
    let answer = rewrite_connection(&answer);
    match p.cut {
        Some(frac) => {
            s.counts.lock().unwrap().cut += 1;
            let n = ((answer.len() as f64 * frac) as usize).min(answer.len().saturating_sub(1));
            conn.write_all(&answer[..n]).await?;
        }
        None => conn.write_all(&answer).await?,
    }
    conn.shutdown().await
}

/// Reads one request (head and a `content-length` body); `None` when the client closed first.
async fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding: chunked"), "the fault proxy only handles content-length request bodies");
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("content-length"))
        .unwrap_or(0);
    while buf.len() < head_end + body_len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(rewrite_connection(&buf[..head_end + body_len])))
}

/// Sends one request on a fresh connection and reads the whole answer (the server closes).
async fn forward(upstream: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(request).await?;
    let mut answer = vec![];
    up.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// An HTTP message with its `connection` header replaced by `connection: close`.
fn rewrite_connection(message: &[u8]) -> Vec<u8> {
    let head_end = find(message, b"\r\n\r\n").map(|i| i + 4).unwrap_or(message.len());
    let head = String::from_utf8_lossy(&message[..head_end]);
    let mut lines: Vec<&str> =
        head.split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
    // lines: start line, headers…, "", "" (the blank line and the empty tail after it).
    lines.insert(1, "connection: close");
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&message[head_end..]);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
