//! The REST server's accept loop. Every connection has a deadline (for its first request head,
//! between keep-alive requests, for a request in flight) and their number is bounded, so that
//! a flood of idle or slow clients can neither exhaust file descriptors nor starve `/health`.
//!
//! At the limit the connection idle the longest is closed to make room for the new one; only
//! when every connection has a request in flight is the new one closed at once. An attacker
//! holding idle connections therefore cannot lock out a client that sends a request.
//!
//! A long-lived answer (a live event stream, marked with [`LongLived`] in its response
//! extensions) is exempt from the request deadline once its head is written: it lasts as
//! long as the client keeps reading, or until shutdown, which ends the stream itself (and the
//! connection is dropped after a short grace if a stalled client never takes the end). Such
//! connections are busy, so never evicted; `api.max_streams` keeps them from taking every
//! connection. Their socket's send buffer is made small ([`STREAM_SEND_BUFFER`]): the kernel
//! would otherwise grow it to megabytes for a client that stopped reading, holding that much
//! memory per stalled stream and old events the client should rather be told it missed.
//!
//! With TLS the handshake counts as waiting for the first request head. Every request
//! carries its client address (`ConnectInfo<SocketAddr>`) for the failed-auth limit.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounterVec, IntGauge, Opts};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::tls::TlsAcceptor;

/// How long a connection asked to close may finish what it is writing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Evicted connections whose task has not yet dropped the socket: beyond this many the
/// accept loop waits for them (new connections stay in the kernel's backlog), so descriptors
/// stay bounded by `max_connections` plus this, however fast connections arrive.
const CLOSING_MAX: usize = 256;
/// Pause after an accept error such as EMFILE, which would otherwise repeat in a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Limits of the REST server, from `[api]` (the binary may lower `max_connections` to what
/// the process's descriptor limit allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// From accept until the first request head has arrived.
    pub header_read_timeout: Duration,
    /// From the end of a response until the next request head has arrived.
    pub idle_timeout: Duration,
    /// From a request head until its response has been written.
    pub request_timeout: Duration,
}

/// Marks a response (in its extensions) whose body streams for as long as the client wants:
/// no request deadline applies to it.
#[derive(Debug, Clone, Copy)]
pub struct LongLived;

/// Send buffer of a connection once its answer is long-lived (the kernel doubles it).
pub const STREAM_SEND_BUFFER: usize = 32 * 1024;

/// How far away "no deadline" is (tokio's own far future).
const NO_DEADLINE: Duration = Duration::from_secs(86400 * 365 * 30);

/// Why the server closed a connection (the `reason` label of the close counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    HeaderTimeout,
    TlsHandshake,
    IdleTimeout,
    RequestTimeout,
    Evicted,
    Shutdown,
}

impl CloseReason {
    fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::TlsHandshake => "tls_handshake",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::RequestTimeout => "request_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone)]
struct Metrics {
    open: IntGauge,
    closed: IntCounterVec,
}

impl Metrics {
    fn register(registry: &prometheus::Registry) -> Metrics {
        let open = IntGauge::new("loraflow_api_connections", "Open REST connections").expect("valid metric");
        let closed = IntCounterVec::new(
            Opts::new(
                "loraflow_api_connections_closed_total",
                "REST connections closed or refused by the server, by reason (timeouts, failed TLS handshakes, eviction at the limit, refused)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in
            [CloseReason::HeaderTimeout, CloseReason::IdleTimeout, CloseReason::RequestTimeout, CloseReason::Evicted, CloseReason::Shutdown]
        {
            closed.with_label_values(&[reason.label()]);
        }
        closed.with_label_values(&["refused"]);
        // A second server on the same registry (tests) shares the already registered ones.
        let _ = registry.register(Box::new(open.clone()));
        let _ = registry.register(Box::new(closed.clone()));
        Metrics { open, closed }
    }
}

/// What the accept loop and the connection's timer know about one connection.
struct Conn {
    id: u64,
    /// Where the connection queues itself for eviction when it becomes idle.
    table: Weak<Mutex<Table>>,
    activity: Mutex<Activity>,
    /// Wakes the timer when a request starts or ends (its deadline moved).
    changed: Notify,
    /// Cancelled to evict the connection, and by server shutdown (child token).
    close: CancellationToken,
    /// Set once an answer is long-lived: the socket's send buffer is shrunk at its next write.
    streaming: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: usize,
    /// Of those, long-lived answers whose head is written ([`LongLived`]).
    long_lived: usize,
    served: u64,
    /// When the connection last became idle (or was accepted), or busy.
    since: Instant,
}

impl Conn {
    fn new(id: u64, table: &ConnTable, close: CancellationToken) -> Conn {
        Conn {
            id,
            table: Arc::downgrade(table),
            activity: Mutex::new(Activity { in_flight: 0, long_lived: 0, served: 0, since: Instant::now() }),
            changed: Notify::new(),
            close,
            streaming: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn activity(&self) -> Activity {
        *self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the connection must be closed if nothing happens before, and why.
    fn deadline(&self, limits: &ConnectionLimits) -> (Instant, CloseReason) {
        let a = self.activity();
        if a.in_flight > 0 && a.long_lived >= a.in_flight {
            (Instant::now() + NO_DEADLINE, CloseReason::RequestTimeout)
        } else if a.in_flight > 0 {
            (a.since + limits.request_timeout, CloseReason::RequestTimeout)
        } else if a.served == 0 {
            (a.since + limits.header_read_timeout, CloseReason::HeaderTimeout)
        } else {
            (a.since + limits.idle_timeout, CloseReason::IdleTimeout)
        }
    }

    /// Since when the connection has had no request in flight; None while busy or closing.
    fn idle_since(&self) -> Option<Instant> {
        let a = self.activity();
        (a.in_flight == 0 && !self.close.is_cancelled()).then_some(a.since)
    }

    fn begin_request(self: &Arc<Self>) -> RequestGuard {
        {
            let mut a = self.activity.lock().unwrap_or_else(|p| p.into_inner());
            if a.in_flight == 0 {
                a.since = Instant::now();
            }
            a.in_flight += 1;
        }
        self.changed.notify_one();
        RequestGuard { conn: self.clone(), long_lived: false }
    }
}

/// Marks a request in flight until its response body has been written (or dropped).
struct RequestGuard {
    conn: Arc<Conn>,
    long_lived: bool,
}

impl RequestGuard {
    /// The answer is [`LongLived`]: its connection has no deadline while it streams.
    fn long_lived(&mut self) {
        if !self.long_lived {
            self.long_lived = true;
            self.conn.activity.lock().unwrap_or_else(|p| p.into_inner()).long_lived += 1;
            self.conn.streaming.store(true, Ordering::Relaxed);
            self.conn.changed.notify_one();
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let idle_since = {
            let mut a = self.conn.activity.lock().unwrap_or_else(|p| p.into_inner());
            a.in_flight = a.in_flight.saturating_sub(1);
            if self.long_lived {
                a.long_lived = a.long_lived.saturating_sub(1);
            }
            a.served += 1;
            if a.in_flight == 0 {
                a.since = Instant::now();
            }
            (a.in_flight == 0).then_some(a.since)
        };
        if let (Some(since), Some(table)) = (idle_since, self.conn.table.upgrade()) {
            lock(&table).became_idle(since, self.conn.id);
        }
        self.conn.changed.notify_one();
    }
}

/// The TCP socket under a connection's stream (plain or TLS).
pub trait TcpOf {
    fn tcp(&self) -> &TcpStream;
}

impl TcpOf for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl TcpOf for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// A connection's stream that shrinks its socket's send buffer once the connection streams
/// a long-lived answer (see [`STREAM_SEND_BUFFER`]).
struct ConnIo<S> {
    inner: S,
    conn: Arc<Conn>,
    shrunk: bool,
}

impl<S: TcpOf> ConnIo<S> {
    fn shrink_when_streaming(&mut self) {
        if !self.shrunk && self.conn.streaming.load(Ordering::Relaxed) {
            self.shrunk = true;
            if let Err(e) = socket2::SockRef::from(self.inner.tcp()).set_send_buffer_size(STREAM_SEND_BUFFER) {
                tracing::debug!(error = %e, "could not shrink the send buffer of a streaming connection");
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + TcpOf + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.shrink_when_streaming();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        self.shrink_when_streaming();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// A response body that keeps its request counted as in flight until hyper has sent it all.
struct GuardedBody {
    body: Body,
    _guard: RequestGuard,
}

impl HttpBody for GuardedBody {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[derive(Default)]
struct Table {
    /// Connections counted against the limit.
    open: HashMap<u64, Arc<Conn>>,
    /// Evicted connections still holding their socket (no longer in `open`).
    closing: usize,
    /// Eviction candidates in the order they became idle. An entry is stale once its
    /// connection got busy, idle again later or closed; stale ones are skipped when popped and
    /// dropped when they outnumber the connections, so choosing a victim costs O(1) amortized.
    idle_order: VecDeque<(Instant, u64)>,
}

impl Table {
    fn register(&mut self, conn: Arc<Conn>) {
        let since = conn.activity().since;
        self.open.insert(conn.id, conn.clone());
        self.became_idle(since, conn.id);
    }

    fn became_idle(&mut self, since: Instant, id: u64) {
        self.idle_order.push_back((since, id));
        if self.idle_order.len() > 2 * self.open.len() + 64 {
            let open = &self.open;
            self.idle_order.retain(|(since, id)| open.get(id).is_some_and(|c| c.idle_since() == Some(*since)));
        }
    }

    /// Takes the connection idle the longest out of `open`.
    fn evict_longest_idle(&mut self) -> Option<Arc<Conn>> {
        while let Some((since, id)) = self.idle_order.pop_front() {
            if self.open.get(&id).is_some_and(|c| c.idle_since() == Some(since)) {
                return self.open.remove(&id);
            }
        }
        None
    }
}

type ConnTable = Arc<Mutex<Table>>;

fn lock(table: &ConnTable) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes room for one more connection: true when it may be served. At the limit the
/// connection idle the longest is evicted (it leaves the count at once); when every
/// connection is busy there is no room.
fn admit(table: &ConnTable, max: usize) -> bool {
    let mut t = lock(table);
    if t.open.len() < max {
        return true;
    }
    let Some(victim) = t.evict_longest_idle() else { return false };
    victim.close.cancel();
    t.closing += 1;
    true
}

/// Forgets a connection whose task has ended.
fn release(table: &ConnTable, id: u64) {
    let mut t = lock(table);
    if t.open.remove(&id).is_none() {
        t.closing = t.closing.saturating_sub(1);
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests in flight
/// finish (idle connections are closed at once).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    registry: &prometheus::Registry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let metrics = Metrics::register(registry);
    let table: ConnTable = Arc::default();
    let tracker = TaskTracker::new();
    let next_id = AtomicU64::new(0);
    let mut last_error_log: Option<Instant> = None;
    loop {
        // Too many evicted connections not yet gone: let their tasks run before taking more.
        while lock(&table).closing >= CLOSING_MAX && !shutdown.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Per-connection errors (reset before accept) need no pause; EMFILE and the
                // like do, and are logged at most once a second.
                if !matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset) {
                    if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, "REST accept failed");
                        last_error_log = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                continue;
            }
        };
        if !admit(&table, limits.max_connections) {
            metrics.closed.with_label_values(&["refused"]).inc();
            drop(stream);
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id, &table, shutdown.child_token()));
        lock(&table).register(conn.clone());
        metrics.open.inc();
        let (table, metrics, router, shutdown, tls) = (table.clone(), metrics.clone(), router.clone(), shutdown.clone(), tls.clone());
        tracker.spawn(async move {
            let reason = match tls {
                None => serve_connection(stream, peer, conn, router, &limits, &shutdown).await,
                Some(tls) => match handshake(&tls, stream, &conn, &limits, &shutdown).await {
                    Ok(stream) => serve_connection(stream, peer, conn, router, &limits, &shutdown).await,
                    Err(reason) => Some(reason),
                },
            };
            release(&table, id);
            metrics.open.dec();
            if let Some(reason) = reason {
                metrics.closed.with_label_values(&[reason.label()]).inc();
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// The TLS handshake, within the time a connection has for its first request head.
async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    conn: &Conn,
    limits: &ConnectionLimits,
    shutdown: &CancellationToken,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, CloseReason> {
    tokio::select! {
        result = tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)) => match result {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => {
                // Plain HTTP to the HTTPS port, an untrusted certificate, a scanner: the
                // client's business, hence debug.
                tracing::debug!(error = %e, "REST TLS handshake failed");
                Err(CloseReason::TlsHandshake)
            }
            Err(_) => Err(CloseReason::HeaderTimeout),
        },
        _ = conn.close.cancelled() => Err(if shutdown.is_cancelled() { CloseReason::Shutdown } else { CloseReason::Evicted }),
    }
}

/// Serves one connection until the client closes it (None) or the server does (the reason).
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    conn: Arc<Conn>,
    router: Router,
    limits: &ConnectionLimits,
    shutdown: &CancellationToken,
) -> Option<CloseReason>
where
    S: AsyncRead + AsyncWrite + TcpOf + Unpin + Send + 'static,
{
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let mut guard = conn.begin_request();
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let response = router.oneshot(req.map(Body::new)).await.unwrap_or_else(|never| match never {});
                if response.extensions().get::<LongLived>().is_some() {
                    guard.long_lived();
                }
                Ok::<_, Infallible>(response.map(|body| Body::new(GuardedBody { body, _guard: guard })))
            }
        })
    };
    // hyper's own `header_read_timeout` is not used: it restarts for every keep-alive request,
    // so it cannot be a separate first-request and idle timeout, and it does not cover a slow
    // body or a client that never reads its answer. The deadlines below cover all of them.
    let mut connection = pin!(hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(ConnIo { inner: stream, conn: conn.clone(), shrunk: false }), service));
    let reason = loop {
        let (deadline, _) = conn.deadline(limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "REST connection ended with an error");
                }
                return None;
            }
            _ = conn.changed.notified() => continue,
            _ = conn.close.cancelled() => break if shutdown.is_cancelled() { CloseReason::Shutdown } else { CloseReason::Evicted },
            _ = tokio::time::sleep_until(deadline) => {
                // A request may have started or ended at the same instant: re-check.
                let (deadline, reason) = conn.deadline(limits);
                if deadline <= Instant::now() {
                    break reason;
                }
            }
        }
    };
    // Closes an idle connection at once; one in the middle of a message gets a moment to
    // finish (at shutdown the caller's own grace period bounds the wait instead).
    connection.as_mut().graceful_shutdown();
    // A stream ends itself at shutdown, but a client that stopped reading never takes that
    // end (nor what was buffered before it): a connection that streamed only gets the grace,
    // even when its body has already ended and only the socket is full.
    if reason == CloseReason::Shutdown && !conn.streaming.load(Ordering::Relaxed) {
        let _ = connection.await;
    } else {
        let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
    }
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }

    fn conn(table: &ConnTable, id: u64) -> Arc<Conn> {
        let c = Arc::new(Conn::new(id, table, CancellationToken::new()));
        lock(table).register(c.clone());
        c
    }

    fn counts(table: &ConnTable) -> (usize, usize) {
        let t = lock(table);
        (t.open.len(), t.closing)
    }

    #[tokio::test]
    async fn deadline_follows_the_connection_state() {
        let table: ConnTable = Arc::default();
        let conn = conn(&table, 0);
        let since = || conn.activity().since;
        let accepted = since();
        assert_eq!(conn.deadline(&limits()), (accepted + Duration::from_secs(10), CloseReason::HeaderTimeout));
        assert_eq!(conn.idle_since(), Some(accepted));
        let guard = conn.begin_request();
        assert_eq!(conn.deadline(&limits()), (since() + Duration::from_secs(30), CloseReason::RequestTimeout));
        assert_eq!(conn.idle_since(), None);
        // A second request in flight (HTTP pipelining) keeps the connection busy.
        let second = conn.begin_request();
        drop(guard);
        assert_eq!(conn.deadline(&limits()).1, CloseReason::RequestTimeout);
        drop(second);
        assert_eq!(conn.deadline(&limits()), (since() + Duration::from_secs(60), CloseReason::IdleTimeout));
        assert!(since() >= accepted);
        assert_eq!(conn.activity().served, 2);
    }

    #[tokio::test]
    async fn a_long_lived_answer_has_no_request_deadline_until_it_ends() {
        let table: ConnTable = Arc::default();
        let conn = conn(&table, 0);
        let mut guard = conn.begin_request();
        assert_eq!(conn.deadline(&limits()).1, CloseReason::RequestTimeout);
        guard.long_lived();
        let (deadline, _) = conn.deadline(&limits());
        assert!(deadline > Instant::now() + Duration::from_secs(86400 * 365), "no deadline while streaming");
        assert_eq!(conn.idle_since(), None, "a streaming connection is busy: never evicted");
        // A pipelined ordinary request behind it brings the request deadline back.
        let second = conn.begin_request();
        assert!(conn.deadline(&limits()).0 <= Instant::now() + Duration::from_secs(30));
        drop(second);
        drop(guard);
        assert_eq!(conn.activity().long_lived, 0);
        assert_eq!(conn.deadline(&limits()).1, CloseReason::IdleTimeout);
    }

    #[tokio::test]
    async fn at_the_limit_the_longest_idle_connection_is_evicted() {
        let table: ConnTable = Arc::default();
        let old = conn(&table, 0);
        let newer = conn(&table, 1);
        let busy = conn(&table, 2);
        let _guard = busy.begin_request();
        assert!(admit(&table, 3));
        assert!(old.close.is_cancelled() && !newer.close.is_cancelled() && !busy.close.is_cancelled());
        assert_eq!(counts(&table), (2, 1));
        let fourth = conn(&table, 3);
        assert!(admit(&table, 3));
        assert!(newer.close.is_cancelled() && !busy.close.is_cancelled() && !fourth.close.is_cancelled());
        // The evicted connections' tasks end: they leave the closing count, not `open`.
        release(&table, 0);
        release(&table, 1);
        assert_eq!(counts(&table), (2, 0));
        // With only busy connections at the limit the new one is refused.
        let _busy_too = fourth.begin_request();
        assert!(!admit(&table, 2));
    }

    #[tokio::test]
    async fn a_connection_that_served_a_request_queues_behind_older_idle_ones() {
        let table: ConnTable = Arc::default();
        let first = conn(&table, 0);
        let second = conn(&table, 1);
        // `first` answers a request: it is now idle for a shorter time than `second`.
        drop(first.begin_request());
        assert!(admit(&table, 2));
        assert!(second.close.is_cancelled() && !first.close.is_cancelled());
        // Many requests on one connection leave stale entries that are compacted away.
        for _ in 0..1000 {
            drop(first.begin_request());
        }
        {
            let t = lock(&table);
            assert!(t.idle_order.len() <= 2 * t.open.len() + 64 + 1, "{} entries", t.idle_order.len());
        }
        assert!(admit(&table, 1));
        assert!(first.close.is_cancelled());
    }

    #[tokio::test]
    async fn below_the_limit_nobody_is_evicted() {
        let table: ConnTable = Arc::default();
        let c = conn(&table, 0);
        assert!(admit(&table, 2));
        assert!(!c.close.is_cancelled());
    }
}
