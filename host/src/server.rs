//! The HTTP server loop shared by the gateway and the mock upstream: connection-level limits that hold with no
//! cooperation from the client, and draining on shutdown.
//!
//! - **Connection cap** (`limits.max_connections`; by default the file-descriptor limit minus a reserve): at the cap,
//!   a new connection first evicts the oldest connection that has not sent a single byte yet (an idle socket costs
//!   an attacker nothing; a real client sends its request at once), so a flood of idle sockets cannot lock real
//!   clients out; if every connection is busy, the new one is answered at once with a short `503` and closed —
//!   shed, counted (`weir_connections_shed_total`). The process never runs out of descriptors and `/healthz` keeps
//!   answering.
//! - **First byte**: a connection that sends nothing within `limits.client_header_timeout` is closed (hyper's
//!   header timeout only starts at the first byte, and the HTTP/1-or-2 detection waits for bytes forever).
//! - **Idle**: a connection with no request in progress on which no byte moved either way for
//!   `limits.keep_alive_idle` is closed (an idle keep-alive connection). A request in progress is never cut by this
//!   (waiting for a slow upstream, retries and long streams are bounded by the upstream timeouts instead); a request
//!   counts as in progress until its response body has been sent or dropped.
//! - Accept errors back off exponentially (10 ms → 1 s) instead of spinning; `raise_fd_limit` lifts the soft limit
//!   on open files to the hard limit at start.
//! - On shutdown the listener is closed and open connections get at most the drain time to finish.

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::{Notify, Semaphore};

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Server settings.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Time to the first byte of a connection, and to the end of each request's headers.
    pub header_timeout: Duration,
    /// A connection with no byte moving either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are shed with a 503.
    pub max_connections: usize,
    pub drain: Duration,
}

impl ServeOptions {
    pub fn new(header_timeout: Duration, idle_timeout: Duration, max_connections: usize, drain: Duration) -> Self {
        ServeOptions { header_timeout, idle_timeout, max_connections: max_connections.max(1), drain }
    }
}

/// Milliseconds since `base`, for activity stamps.
fn since(base: Instant) -> u64 {
    base.elapsed().as_millis() as u64
}

/// Connections that have not sent their first byte yet, oldest first: the ones evicted at the connection cap.
#[derive(Default)]
struct Silent {
    queue: Mutex<VecDeque<(u64, Arc<Notify>)>>,
}

impl Silent {
    /// The queue (a poisoned lock only means a panic elsewhere; the queue is still consistent).
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, id: u64) -> Arc<Notify> {
        let evict = Arc::new(Notify::new());
        self.lock().push_back((id, evict.clone()));
        evict
    }
    fn remove(&self, id: u64) {
        let mut q = self.lock();
        if let Some(i) = q.iter().position(|(k, _)| *k == id) {
            q.remove(i);
        }
    }
    /// Tells the oldest silent connection to close; false when there is none.
    fn evict_oldest(&self) -> bool {
        match self.lock().pop_front() {
            Some((_, n)) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's socket, stamping every byte that moves (either way) so a watchdog can close idle connections.
struct Watched {
    inner: TcpStream,
    base: Instant,
    /// Milliseconds since `base` of the last byte moved; `u64::MAX` until the first byte arrives.
    last: Arc<AtomicU64>,
    id: u64,
    silent: Arc<Silent>,
}

impl Watched {
    fn touch(&self) {
        if self.last.swap(since(self.base), Ordering::Relaxed) == u64::MAX {
            self.silent.remove(self.id);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Requests in progress on one connection: counted from the moment the request reaches the router until its
/// response body is finished or dropped.
#[derive(Clone, Default)]
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

/// Decrements its connection's in-flight count when dropped.
struct FlightGuard(InFlight);

impl InFlight {
    fn enter(&self) -> FlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        FlightGuard(self.clone())
    }
    fn busy(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`FlightGuard`] until it is finished or dropped.
struct Guarded {
    inner: axum::body::Body,
    _guard: FlightGuard,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves when the connection has been silent too long: no first byte within `first`, or later no byte either
/// way within `idle` while no request is in progress.
async fn watchdog(base: Instant, last: Arc<AtomicU64>, first: Duration, idle: Duration, in_flight: InFlight) {
    loop {
        if in_flight.busy() {
            // A request in progress: its own timeouts bound it. Look again after a while.
            tokio::time::sleep(idle.max(Duration::from_millis(50))).await;
            continue;
        }
        let stamp = last.load(Ordering::Relaxed);
        let deadline = if stamp == u64::MAX { first } else { Duration::from_millis(stamp).saturating_add(idle) };
        let now = base.elapsed();
        if now >= deadline {
            return;
        }
        tokio::time::sleep(deadline - now).await;
    }
}

/// Answers a connection over the cap with a short 503 and closes it.
async fn shed(mut stream: TcpStream) {
    const BODY: &str = "the gateway is at its connection limit; retry shortly\n";
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.write_all(resp.as_bytes())).await;
}

/// Set when the drain time is over: streams still open end with an error event in their client's format (see
/// `pipeline/answer.rs`) instead of being cut mid-event.
static DRAIN_OVER: std::sync::LazyLock<tokio::sync::watch::Sender<bool>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(false).0);

/// Resolves when the drain time of a shutdown is over.
pub async fn drain_over() {
    let mut rx = DRAIN_OVER.subscribe();
    let _ = rx.wait_for(|over| *over).await;
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(listener: TcpListener, router: Router, opts: ServeOptions, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let silent = Arc::new(Silent::default());
    let mut next_id = 0u64;
    let metrics = &crate::telemetry::metrics::METRICS;
    let mut backoff = Duration::from_millis(10);
    let mut last_shed_warning: Option<Instant> = None;
    tokio::pin!(shutdown);

    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(10);
                    a
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, retry_in = ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let mut permit = permits.clone().try_acquire_owned().ok();
        if permit.is_none() && silent.evict_oldest() {
            // The evicted connection gives its permit back as soon as its task sees the notice.
            permit = tokio::time::timeout(Duration::from_millis(200), permits.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(permit) = permit else {
            metrics.connections_shed.inc();
            if last_shed_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_shed_warning = Some(Instant::now());
                tracing::warn!(
                    max_connections = opts.max_connections,
                    "connection limit reached: shedding new connections with 503"
                );
            }
            tokio::spawn(shed(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let base = Instant::now();
        let last = Arc::new(AtomicU64::new(u64::MAX));
        next_id += 1;
        let evicted = silent.add(next_id);
        let io = Watched { inner: stream, base, last: last.clone(), id: next_id, silent: silent.clone() };
        let peer = PeerAddr(_peer);
        let in_flight = InFlight::default();
        let router_for_conn = router.clone();
        let flights = in_flight.clone();
        let service =
            TowerToHyperService::new(tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer);
                let guard = flights.enter();
                let router = router_for_conn.clone();
                async move {
                    let resp = tower::ServiceExt::oneshot(router, req).await?;
                    Ok::<_, std::convert::Infallible>(
                        resp.map(|inner| axum::body::Body::new(Guarded { inner, _guard: guard })),
                    )
                }
            }));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
        let conn = graceful.watch(conn);
        let (first, idle) = (opts.header_timeout, opts.idle_timeout);
        let (silent, id) = (silent.clone(), next_id);
        metrics.open_connections.inc();
        tokio::spawn(async move {
            // Errors here are client-side disconnects and header timeouts; nothing to report.
            tokio::select! {
                _ = conn => {}
                () = watchdog(base, last, first, idle, in_flight) => {}
                () = evicted.notified() => {}
            }
            silent.remove(id);
            crate::telemetry::metrics::METRICS.open_connections.dec();
            drop(permit);
        });
    }

    drop(listener);
    let shutdown = graceful.shutdown();
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => tracing::info!("all connections closed"),
        () = tokio::time::sleep(opts.drain) => {
            tracing::warn!(drain = ?opts.drain, "drain time over; ending the remaining streams with an error event");
            DRAIN_OVER.send_replace(true);
            // Give the streams a moment to send their error events.
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut shutdown).await;
        }
    }
}

/// Raises the soft limit on open files to the hard limit, and returns the limit in effect (for the default
/// connection cap).
pub fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return 1024;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        lim.rlim_cur
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

/// The default connection cap for a file-descriptor limit: all but a reserve for upstream connections, plugins,
/// the compile cache and logs (a quarter of the limit, at least 64, at most 1024).
pub fn default_max_connections(fd_limit: u64) -> usize {
    let reserve = (fd_limit / 4).clamp(64, 1024);
    fd_limit.saturating_sub(reserve).max(16) as usize
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_leaves_a_reserve() {
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(1 << 20), (1 << 20) - 1024);
        assert_eq!(default_max_connections(40), 16);
    }

    #[tokio::test]
    async fn watchdog_waits_for_the_first_byte_then_for_idleness() {
        let ms = Duration::from_millis;
        // No first byte: closed after the first-byte timeout.
        let last = Arc::new(AtomicU64::new(u64::MAX));
        let started = Instant::now();
        watchdog(Instant::now(), last, ms(100), ms(10_000), InFlight::default()).await;
        assert!(started.elapsed() >= ms(100) && started.elapsed() < ms(2_000));
        // Bytes keep moving: never idle; once they stop, closed after the idle timeout.
        let base = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let flights = InFlight::default();
        let w = tokio::spawn(watchdog(base, last.clone(), ms(10_000), ms(150), flights.clone()));
        for _ in 0..6 {
            tokio::time::sleep(ms(50)).await;
            last.store(since(base), Ordering::Relaxed);
        }
        assert!(!w.is_finished(), "activity keeps the connection");
        // A request in progress keeps a silent connection (a slow upstream, retries).
        let guard = flights.enter();
        tokio::time::sleep(ms(400)).await;
        assert!(!w.is_finished(), "silent, but a request is in progress");
        drop(guard);
        last.store(since(base), Ordering::Relaxed);
        let stopped = Instant::now();
        w.await.unwrap();
        assert!(stopped.elapsed() >= ms(90), "closed only after the idle time");
    }
}
