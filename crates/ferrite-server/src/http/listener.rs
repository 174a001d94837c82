//! The accept loop: serves the router on each connection with protections a public endpoint
//! needs and `axum::serve` does not give: a deadline for reading request headers (so slow or
//! abandoned clients cannot hold connections open), TCP keep-alive (so dead peers are noticed),
//! and a graceful shutdown that lets in-flight requests finish.
//!
//! HTTP/1.1 only: without TLS no browser speaks HTTP/2 to us, and skipping protocol detection
//! keeps each held long-poll connection to one read and one write buffer (the detection's
//! replayed prefix made hyper double its read buffer to 16 KiB per connection).

use axum::Router;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long in-flight requests get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` turns true.
/// `max_header_bytes` bounds a request's line and headers (and so the read buffer each
/// connection may grow to): beyond it hyper answers 431 (or 414) and closes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    max_header_bytes: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = Builder::new();
    let max_header_bytes = max_header_bytes.max(8192);
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(max_header_bytes)
        .max_buf_size(max_header_bytes);
    let graceful = GracefulShutdown::new();
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: back off briefly
                    // rather than spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let keepalive =
            socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(10));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are per-connection (a client hung up, sent garbage or was too slow);
            // hyper has already answered what could be answered.
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}
