//! The accept loop: TLS by rustls, HTTP/1.1 and HTTP/2 by hyper, routing by axum; connection
//! limits, timeouts and graceful shutdown.
//!
//! Written out instead of using a TLS-serving crate so the peer's certificate chain can be
//! put into each request's extensions (exclusive servers authenticate with client
//! certificates), and so every step a client controls has a deadline (`config::Limits`):
//!
//! - at most `max_connections` open, `max_connections_per_ip` per source; at a cap, a new
//!   connection displaces the oldest one that has not yet sent a request (a slowloris
//!   connection, or a port scan's), else it is closed at once;
//! - a new connection must finish its TLS handshake and send one complete request head in
//!   time; HTTP/1.1 heads (hyper's timer) and request bodies (between two reads) have their
//!   own timeouts;
//! - a connection with no request in flight is closed when idle; one whose client reads
//!   nothing of a response is cut;
//! - on shutdown no connection is accepted; each open one is closed once it has no request
//!   in flight (a ranged download between two ranges still counts as busy for a moment), or
//!   at the deadline.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::auth::PeerCertificate;
use crate::config::Limits;
use crate::error::ApiError;
use crate::refusals::PeerSource;

/// How often a connection checks its deadlines.
const TICK: Duration = Duration::from_millis(250);
/// While shutting down, a connection is closed once it has had no request in flight for this
/// long: long enough for a client to send the next range of a download.
const SHUTDOWN_QUIET: Duration = Duration::from_millis(500);
/// After a graceful close was asked for, how long an idle connection may take to go.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 pings detect a peer that vanished in the middle of a transfer.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Refused connections are logged in summaries at most this often (a flood must not flood
/// the log).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// [`Limits`], checked and in the units the loop uses.
struct Policy {
    handshake: Duration,
    header_read: Duration,
    body_read: Duration,
    idle: Duration,
    max_connections: usize,
    max_per_source: usize,
    h2_streams: u32,
    max_header_bytes: u32,
    max_json_body: usize,
    shutdown_grace: Duration,
}

impl Policy {
    fn new(limits: &Limits) -> anyhow::Result<Policy> {
        let secs = |name: &str, value: u64| {
            if value == 0 {
                anyhow::bail!("limits.{name} must be at least 1");
            }
            Ok(Duration::from_secs(value))
        };
        let at_least = |name: &str, value: u64, min: u64| {
            if value < min {
                anyhow::bail!("limits.{name} must be at least {min}");
            }
            Ok(())
        };
        at_least("max_connections", limits.max_connections as u64, 1)?;
        at_least(
            "max_connections_per_ip",
            limits.max_connections_per_ip as u64,
            1,
        )?;
        at_least(
            "http2_max_concurrent_streams",
            limits.http2_max_concurrent_streams.into(),
            1,
        )?;
        // hyper's smallest HTTP/1.1 read buffer.
        at_least("max_header_bytes", limits.max_header_bytes.into(), 8192)?;
        at_least(
            "max_json_body_bytes",
            limits.max_json_body_bytes as u64,
            1024,
        )?;
        at_least("max_upload_files", limits.max_upload_files as u64, 1)?;
        at_least("max_file_bytes", limits.max_file_bytes, 1)?;
        if limits.max_file_bytes > blobstore::MAX_OBJECT_WITH_SMALLEST_PARTS {
            anyhow::bail!(
                "limits.max_file_bytes must be at most {} (larger files need larger part buffers)",
                blobstore::MAX_OBJECT_WITH_SMALLEST_PARTS
            );
        }
        at_least("max_upload_bytes", limits.max_upload_bytes, 1)?;
        at_least(
            "max_open_uploads_per_user",
            limits.max_open_uploads_per_user,
            1,
        )?;
        at_least(
            "max_upload_buffer_bytes",
            limits.max_upload_buffer_bytes,
            16 << 20,
        )?;
        at_least(
            "max_download_buffer_bytes",
            limits.max_download_buffer_bytes,
            16 << 20,
        )?;
        at_least(
            "refusals_per_minute_per_source",
            limits.refusals_per_minute_per_source.into(),
            1,
        )?;
        at_least(
            "refusal_sources_per_minute",
            limits.refusal_sources_per_minute as u64,
            1,
        )?;
        Ok(Policy {
            handshake: secs(
                "tls_handshake_timeout_secs",
                limits.tls_handshake_timeout_secs,
            )?,
            header_read: secs("header_read_timeout_secs", limits.header_read_timeout_secs)?,
            body_read: secs("body_read_timeout_secs", limits.body_read_timeout_secs)?,
            idle: secs("idle_timeout_secs", limits.idle_timeout_secs)?,
            max_connections: limits.max_connections,
            max_per_source: limits.max_connections_per_ip,
            h2_streams: limits.http2_max_concurrent_streams,
            max_header_bytes: limits.max_header_bytes,
            max_json_body: limits.max_json_body_bytes,
            shutdown_grace: secs("shutdown_grace_secs", limits.shutdown_grace_secs)?,
        })
    }

    fn builder(&self, http2: bool) -> Builder<TokioExecutor> {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read)
            .max_buf_size(self.max_header_bytes as usize);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.h2_streams)
            .max_header_list_size(self.max_header_bytes)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        // The protocol comes from ALPN: the automatic sniffing of the first bytes would wait
        // for them without a deadline.
        if http2 {
            builder.http2_only()
        } else {
            builder.http1_only()
        }
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server")
            }
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::info!("SIGINT received");
    } else {
        // No way to hear a signal: serve until the process is killed.
        std::future::pending::<()>().await;
    }
}

/// Serves `listener` until `shutdown` resolves, then lets transfers in flight finish (up to
/// `limits.shutdown_grace_secs`) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let policy = Arc::new(Policy::new(limits)?);
    // Json extractors buffer at most this much, with or without a Content-Length.
    let router = router.layer(DefaultBodyLimit::max(policy.max_json_body));
    let acceptor = TlsAcceptor::from(tls);
    let registry = Arc::new(Registry::new(policy.max_connections, policy.max_per_source));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => log_join(done),
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(admission) = registry.admit(peer.ip()) else {
                    drop(tcp);
                    continue;
                };
                connections.spawn(connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    router.clone(),
                    policy.clone(),
                    admission,
                    stopping.clone(),
                ));
            }
        }
    }
    // From here on a new connection is refused by the kernel.
    drop(listener);
    tracing::info!(
        open = connections.len(),
        grace_secs = policy.shutdown_grace.as_secs(),
        "shutting down: accepting no connection, letting requests in flight finish"
    );
    let _ = stop.send(true);
    let deadline = tokio::time::sleep(policy.shutdown_grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            done = connections.join_next() => match done {
                Some(done) => log_join(done),
                None => break,
            },
            () = &mut deadline => {
                tracing::warn!(
                    cut = connections.len(),
                    "shutdown deadline reached: cutting the connections still open"
                );
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                break;
            }
        }
    }
    tracing::info!("all connections closed");
    Ok(())
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a connection task panicked");
    }
}

/// Refused and timed-out handshakes are logged (an operator looking for why a host or client
/// cannot connect finds the reason), but at most [`HandshakeLog::PER_MINUTE`] a minute, so a
/// flood of them cannot flood the log; the next line logged says how many were left out.
struct HandshakeLog {
    minute: std::sync::atomic::AtomicU64,
    in_minute: std::sync::atomic::AtomicU64,
    unlogged: std::sync::atomic::AtomicU64,
}

static HANDSHAKE_LOG: HandshakeLog = HandshakeLog {
    minute: std::sync::atomic::AtomicU64::new(0),
    in_minute: std::sync::atomic::AtomicU64::new(0),
    unlogged: std::sync::atomic::AtomicU64::new(0),
};

impl HandshakeLog {
    const PER_MINUTE: u64 = 30;

    /// Whether to log this one: `Some(n)` with the number left out since the last logged.
    fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60);
        if self.minute.swap(minute, Relaxed) != minute {
            self.in_minute.store(0, Relaxed);
        }
        if self.in_minute.fetch_add(1, Relaxed) < Self::PER_MINUTE {
            Some(self.unlogged.swap(0, Relaxed))
        } else {
            self.unlogged.fetch_add(1, Relaxed);
            None
        }
    }
}

/// One connection, from TLS handshake to close.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    policy: Arc<Policy>,
    admission: Admission,
    mut stopping: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState::new(admission.registry.clone(), admission.id));
    let handshake = tokio::select! {
        r = tokio::time::timeout(policy.handshake, acceptor.accept(Watched::new(tcp, state.clone()))) => r,
        () = admission.displaced.notified() => {
            tracing::debug!(%peer, "displaced during its TLS handshake by a newer connection at the cap");
            return;
        }
        _ = stopping.changed() => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // rustls's reason (an alert, an unknown issuer, a protocol error) carries no secret.
            if let Some(unlogged) = HANDSHAKE_LOG.admit() {
                tracing::warn!(%peer, reason = %e, unlogged, "TLS handshake refused");
            }
            return;
        }
        Err(_) => {
            if let Some(unlogged) = HANDSHAKE_LOG.admit() {
                tracing::info!(%peer, unlogged, "TLS handshake timed out");
            }
            return;
        }
    };
    let (_, tls_state) = stream.get_ref();
    let http2 = tls_state.alpn_protocol() == Some(b"h2");
    // The client certificate, if any, already chains to the host CA (rustls checked it in the
    // handshake); each request carries its hash so authentication can look the host up,
    // enrolled or revoked, at that moment.
    let peer_cert = tls_state
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| PeerCertificate(crypto::host_ca::cert_sha256_hex(cert)));

    let source = PeerSource(source_of(peer.ip()));
    let service = {
        let state = state.clone();
        let policy = policy.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let flight = Flight::start(&state);
            let refusal = json_too_large(&request, policy.max_json_body);
            let mut request =
                request.map(|body| Body::new(TimeoutBody::new(policy.body_read, body)));
            if let Some(cert) = &peer_cert {
                request.extensions_mut().insert(cert.clone());
            }
            request.extensions_mut().insert(source);
            let router = router.clone();
            async move {
                let response = match refusal {
                    Some(refusal) => refusal.into_response(),
                    None => match router.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                };
                // The request is in flight until its response body has been sent (or
                // dropped).
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _ = &flight;
                        frame
                    }))
                }))
            }
        })
    };
    let builder = policy.builder(http2);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = false;
    let mut closing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = ?e, "connection ended with an error");
                }
                return;
            }
            () = admission.displaced.notified(), if !state.served() => {
                tracing::debug!(%peer, "displaced before its first request by a newer connection at the cap");
                return;
            }
            _ = stopping.changed(), if !shutting_down => shutting_down = true,
            _ = tick.tick() => {
                let now = Instant::now();
                match state.verdict(now, &policy, shutting_down) {
                    Verdict::Keep => {}
                    Verdict::Cut(why) => {
                        tracing::debug!(%peer, why, "connection cut");
                        return;
                    }
                    Verdict::Close(why) => match closing_since {
                        None => {
                            tracing::debug!(%peer, why, "closing connection");
                            conn.as_mut().graceful_shutdown();
                            closing_since = Some(now);
                        }
                        // A client that ignores the close (an unfinished HTTP/2 header block,
                        // say) is cut once nothing is in flight.
                        Some(since) if now.duration_since(since) >= CLOSE_GRACE => return,
                        Some(_) => {}
                    },
                }
            }
        }
    }
}

/// A JSON body declared larger than the limit: refused before a byte of it is read. (Bodies
/// without a declared length are bounded while they are read, by `DefaultBodyLimit`.)
fn json_too_large(request: &hyper::Request<Incoming>, max: usize) -> Option<ApiError> {
    let headers = request.headers();
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    (is_json && declared > max as u64).then(|| {
        ApiError::TooLarge(format!(
            "the JSON request body of {declared} bytes is over the limit of {max} bytes"
        ))
    })
}

enum Verdict {
    Keep,
    /// Ask the connection to close (HTTP/1.1: after the response in progress; HTTP/2: GOAWAY).
    Close(&'static str),
    /// Drop it now.
    Cut(&'static str),
}

/// What the deadlines of one connection need to know, shared by its task, its socket and its
/// requests.
struct ConnState {
    registry: Arc<Registry>,
    id: u64,
    accepted: Instant,
    served: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds since `accepted` when a request last started or ended.
    last_active: AtomicU64,
    /// Milliseconds since `accepted` (plus one; zero: not blocked) since when the client has
    /// not taken the bytes we are trying to send.
    write_blocked_since: AtomicU64,
}

impl ConnState {
    fn new(registry: Arc<Registry>, id: u64) -> ConnState {
        ConnState {
            registry,
            id,
            accepted: Instant::now(),
            served: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.accepted).as_millis()).unwrap_or(u64::MAX)
    }

    fn served(&self) -> bool {
        self.served.load(Ordering::Acquire)
    }

    fn touch(&self) {
        self.last_active
            .store(self.millis(Instant::now()), Ordering::Release);
    }

    fn verdict(&self, now: Instant, policy: &Policy, shutting_down: bool) -> Verdict {
        let age = now.duration_since(self.accepted);
        if !self.served() {
            if shutting_down {
                return Verdict::Cut("shutting down before its first request");
            }
            if age > policy.handshake + policy.header_read {
                return Verdict::Cut("no complete request in time");
            }
            return Verdict::Keep;
        }
        let blocked = self.write_blocked_since.load(Ordering::Acquire);
        if blocked != 0 && self.millis(now).saturating_sub(blocked - 1) > millis(policy.idle) {
            return Verdict::Cut("the client reads nothing of the response");
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Verdict::Keep;
        }
        let quiet = self
            .millis(now)
            .saturating_sub(self.last_active.load(Ordering::Acquire));
        if quiet > millis(policy.idle) {
            return Verdict::Close("idle");
        }
        if shutting_down && quiet >= millis(SHUTDOWN_QUIET) {
            return Verdict::Close("shutting down");
        }
        Verdict::Keep
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A request in flight on its connection, from its head to the end of its response body.
struct Flight(Arc<ConnState>);

impl Flight {
    fn start(state: &Arc<ConnState>) -> Flight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.touch();
        if !state.served.swap(true, Ordering::AcqRel) {
            // No longer a candidate for displacement.
            state.registry.established(state.id);
        }
        Flight(state.clone())
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The TCP stream, noting when the client stops taking what we send.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl Watched {
    fn new(inner: TcpStream, state: Arc<ConnState>) -> Watched {
        Watched { inner, state }
    }

    fn note_write<T>(&self, poll: &Poll<io::Result<T>>) {
        let blocked = &self.state.write_blocked_since;
        match poll {
            Poll::Pending => {
                if blocked.load(Ordering::Relaxed) == 0 {
                    let since = self.state.millis(Instant::now()) + 1;
                    blocked.store(since, Ordering::Release);
                }
            }
            Poll::Ready(_) => {
                if blocked.load(Ordering::Relaxed) != 0 {
                    blocked.store(0, Ordering::Release);
                }
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.note_write(&poll);
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Open connections, counted in total and per source, and which of them may be displaced.
struct Registry {
    max_total: usize,
    max_per_source: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    next_id: u64,
    /// Every counted connection and its source.
    live: HashMap<u64, IpAddr>,
    per_source: HashMap<IpAddr, usize>,
    /// Connections that have not sent a request yet, oldest first, with their displacement
    /// signal.
    opening: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    refused: u64,
    displaced: u64,
    last_report: Option<Instant>,
}

/// A counted connection; uncounted when dropped.
struct Admission {
    registry: Arc<Registry>,
    id: u64,
    displaced: Arc<Notify>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry.release(self.id);
    }
}

/// The unit a per-source cap counts: an IPv4 address, or an IPv6 /64 (one host's share of
/// addresses).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Registry {
    fn new(max_total: usize, max_per_source: usize) -> Registry {
        Registry {
            max_total,
            max_per_source,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Every change under this lock is complete before it can panic.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, displacing an opening one if a cap is reached;
    /// `None` if it must be refused.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let source = source_of(ip);
        let mut counts = self.counts();
        let source_full =
            counts.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source;
        let total_full = counts.live.len() >= self.max_total;
        if source_full || total_full {
            // At the per-source cap only the same source's connections may go; at the total
            // cap anyone's.
            let victim = counts
                .opening
                .iter()
                .find(|(_, (from, _))| !source_full || *from == source)
                .map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    if let Some((_, signal)) = counts.opening.remove(&id) {
                        signal.notify_one();
                    }
                    counts.uncount(id);
                    counts.displaced += 1;
                }
                None => {
                    counts.refused += 1;
                    self.report(&mut counts, source_full);
                    return None;
                }
            }
            self.report(&mut counts, source_full);
        }
        let id = counts.next_id;
        counts.next_id += 1;
        counts.live.insert(id, source);
        *counts.per_source.entry(source).or_insert(0) += 1;
        let displaced = Arc::new(Notify::new());
        counts.opening.insert(id, (source, displaced.clone()));
        Some(Admission {
            registry: self.clone(),
            id,
            displaced,
        })
    }

    fn report(&self, counts: &mut Counts, source_full: bool) {
        let now = Instant::now();
        if counts
            .last_report
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            refused = counts.refused,
            displaced = counts.displaced,
            open = counts.live.len(),
            cap = if source_full { "per source" } else { "total" },
            "connection cap reached: connections refused or displaced since the last report"
        );
        counts.refused = 0;
        counts.displaced = 0;
        counts.last_report = Some(now);
    }

    /// The connection sent its first request: it is no longer displaced.
    fn established(&self, id: u64) {
        self.counts().opening.remove(&id);
    }

    fn release(&self, id: u64) {
        let mut counts = self.counts();
        counts.opening.remove(&id);
        counts.uncount(id);
    }
}

impl Counts {
    fn uncount(&mut self, id: u64) {
        if let Some(source) = self.live.remove(&id)
            && let Some(n) = self.per_source.get_mut(&source)
        {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_source_displaces_its_own_oldest_opening_connection_only() {
        let registry = Arc::new(Registry::new(10, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = registry.admit(a).unwrap();
        let second = registry.admit(a).unwrap();
        let other = registry.admit(b).unwrap();
        // A third from `a` displaces `a`'s oldest, not `b`'s.
        let third = registry.admit(a).unwrap();
        assert!(!registry.counts().opening.contains_key(&first.id));
        assert!(registry.counts().opening.contains_key(&other.id));
        // Once both of `a`'s are established, a new one from `a` is refused.
        registry.established(second.id);
        registry.established(third.id);
        assert!(registry.admit(a).is_none());
        // Releasing one makes room again; the displaced one's drop counts nothing twice.
        drop(first);
        assert!(registry.admit(a).is_none());
        drop(second);
        let fourth = registry.admit(a).unwrap();
        assert_eq!(registry.counts().per_source.get(&source_of(a)), Some(&2));
        drop((third, fourth, other));
        assert!(registry.counts().live.is_empty());
        assert!(registry.counts().per_source.is_empty());
    }

    #[test]
    fn the_total_cap_displaces_anyones_opening_connection() {
        let registry = Arc::new(Registry::new(2, 10));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = registry.admit(a).unwrap();
        let second = registry.admit(a).unwrap();
        registry.established(second.id);
        let _third = registry.admit(b).unwrap();
        assert!(!registry.counts().live.contains_key(&first.id));
        assert_eq!(registry.counts().live.len(), 2);
    }

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        let one: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_of(one), source_of(same));
        assert_ne!(source_of(one), source_of(other));
        assert_eq!(source_of(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn zero_limits_are_refused_at_start() {
        let limits = Limits {
            idle_timeout_secs: 0,
            ..Limits::default()
        };
        let err = Policy::new(&limits).err().unwrap();
        assert!(err.to_string().contains("idle_timeout_secs"), "{err}");
        let limits = Limits {
            max_header_bytes: 100,
            ..Limits::default()
        };
        assert!(Policy::new(&limits).is_err());
        // Files whose parts would outgrow 8 MiB buffers are not allowed.
        let limits = Limits {
            max_file_bytes: blobstore::MAX_OBJECT_WITH_SMALLEST_PARTS + 1,
            ..Limits::default()
        };
        let err = Policy::new(&limits).err().unwrap();
        assert!(err.to_string().contains("max_file_bytes"), "{err}");
        // The smallest download budget must hold the largest stream's read-ahead, or every
        // download would wait for room forever.
        let limits = Limits {
            max_download_buffer_bytes: (16 << 20) - 1,
            ..Limits::default()
        };
        let err = Policy::new(&limits).err().unwrap();
        assert!(
            err.to_string().contains("max_download_buffer_bytes"),
            "{err}"
        );
        assert!(blobstore::read_buffer_bytes(&(0..u64::MAX / 2)) <= 16 << 20);
        assert!(Policy::new(&Limits::default()).is_ok());
    }
}
