//! The operations endpoint (`--http-addr`, default `0.0.0.0:8989`):
//! `/healthz` (the process is alive), `/readyz` (the provider socket is
//! bound and a `Version` call through it succeeds), `/metrics` (Prometheus).
//!
//! Every pod can reach this port, so it is served (an axum router, over
//! HTTP/1.1 only) with bounds of its own: at most `--http-max-connections`
//! connections; at the cap a new client is served in place of the oldest
//! connection that has not sent its request's headers (then of the one idle
//! longest), so a flood of connections that never finish their headers
//! cannot keep a well-behaved client out; a connection with bytes the
//! server has not read yet is never the one shed, and only when every
//! connection is in a request (or has just connected) does a new one wait.
//! A client must send a request's headers within `--http-header-timeout`
//! (of connecting, for the first request), and is disconnected after
//! `--http-idle-timeout` without traffic, and accept errors (out of file
//! descriptors) back off instead of spinning (axum's listener sleeps
//! before accepting again).
//!
//! HTTP/1.1 only: `axum::serve` would also speak HTTP/2 (prior knowledge)
//! whenever hyper-util is built with `http2`, as it is for tonic, and one
//! HTTP/2 connection carries up to 200 concurrent requests past the
//! connection cap, with frames the header scan below does not understand.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::task::AtomicWaker;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::telemetry::Metrics;

const READY_TIMEOUT: Duration = Duration::from_secs(2);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bounds of the endpoint.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 32,
        }
    }
}

#[derive(Clone)]
struct Endpoint {
    socket: Arc<PathBuf>,
    metrics: Arc<Metrics>,
}

/// Connections the kernel queues for the endpoint before it accepts them
/// (capped by `net.core.somaxconn`): a flood of connections must not crowd
/// a probe's out of the queue while they are accepted and shed.
pub const BACKLOG: u32 = 1024;

/// Binds `addr` (`host:port`, every address it resolves to tried in turn)
/// with a listen queue of [`BACKLOG`].
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "the address resolves to nothing");
    for a in tokio::net::lookup_host(addr).await? {
        let socket = match a {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, settings: HttpSettings, socket: PathBuf, metrics: Arc<Metrics>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    }
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(Endpoint {
            socket: Arc::new(socket),
            metrics,
        });
    let mut listener = BoundedListener {
        inner: listener,
        slots: Arc::new(Semaphore::new(settings.max_connections.max(1))),
        open: Arc::default(),
        next_id: 0,
        settings,
    };
    loop {
        let (io, peer) = axum::serve::Listener::accept(&mut listener).await;
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(io), service).await {
                tracing::debug!(%peer, error = %e, "HTTP connection closed");
            }
        });
    }
}

async fn readyz(State(ep): State<Endpoint>) -> Response {
    match crate::client::answers_version(&ep.socket, READY_TIMEOUT).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}

async fn metrics_text(State(ep): State<Endpoint>) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], ep.metrics.encode()).into_response()
}

// === impl BoundedListener ===

/// What the listener knows of an open connection.
#[derive(Debug)]
struct ConnState {
    /// When it connected (for the first request) or when the headers of
    /// its current request began; meaningful while `waiting`.
    since: Mutex<Instant>,
    /// Its current request's headers are not complete yet.
    waiting: AtomicBool,
    /// ... and some of them have been read: a client that is not stalled
    /// sends its headers whole.
    partial: AtomicBool,
    /// Milliseconds since `epoch` of its last read or write.
    last_io: AtomicU64,
    epoch: Instant,
    /// Set to close it (shed for a new client).
    shed: AtomicBool,
    waker: AtomicWaker,
    /// Its slot of `--http-max-connections`, until it is shed (the new
    /// client takes it over) or closed.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// A second handle on its socket (non-blocking, like the first), to
    /// look for bytes the server has not read yet: a connection whose
    /// client has sent something is never taken for a stalled or idle one
    /// just because its task has not run yet (under load it may not for
    /// longer than `SHED_WAITING_AFTER`). `None` if it could not be made.
    peek: Option<std::net::TcpStream>,
}

impl ConnState {
    fn new(slot: OwnedSemaphorePermit, peek: Option<std::net::TcpStream>) -> Self {
        let now = Instant::now();
        Self {
            since: Mutex::new(now),
            waiting: AtomicBool::new(true),
            partial: AtomicBool::new(false),
            last_io: AtomicU64::new(0),
            epoch: now,
            shed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            slot: Mutex::new(Some(slot)),
            peek,
        }
    }

    /// Whether its client sent bytes the server has not read yet. The end
    /// of the stream or an error count as nothing to serve.
    fn unread(&self) -> bool {
        let Some(s) = &self.peek else { return false };
        matches!(s.peek(&mut [0u8; 1]), Ok(n) if n > 0)
    }

    fn touch(&self) {
        self.last_io
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_io.load(Ordering::Relaxed)))
    }
}

/// The open connections, by id.
type Open = Arc<Mutex<HashMap<u64, Arc<ConnState>>>>;

/// How long a connection between requests must have been quiet to be
/// shed for a new client (a scraper's keep-alive connection reconnects).
const SHED_IDLE_AFTER: Duration = Duration::from_secs(1);
/// How long a new connection may take to send its first bytes before it
/// counts as stalled (a client writes its request right after connecting).
const SHED_WAITING_AFTER: Duration = Duration::from_millis(20);

/// A TCP listener that holds one of a fixed number of slots per open
/// connection, and wraps each in [`Bounded`]. At the cap it sheds a
/// connection that is not in a request for the new client.
struct BoundedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    open: Open,
    next_id: u64,
    settings: HttpSettings,
}

impl BoundedListener {
    /// Closes the connection to shed for a new client (the one waiting
    /// longest for its request's headers, else the one idle longest
    /// between requests) and hands over its slot at once, so that a queue
    /// of new clients is served as fast as they are accepted. `None` if
    /// every connection is in a request.
    fn shed_one(&self) -> Option<OwnedSemaphorePermit> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let since = |c: &ConnState| *c.since.lock().unwrap_or_else(|e| e.into_inner());
        // Every candidate below must also have nothing unread, checked last
        // in each filter (a system call).
        let live = |c: &&Arc<ConnState>| !c.shed.load(Ordering::Relaxed) && c.waiting.load(Ordering::Relaxed);
        // Part of its headers read and the rest not: stalled, whatever its
        // age. Nothing read yet: stalled once it had time to send.
        let partial = open
            .values()
            .filter(|c| live(c) && c.partial.load(Ordering::Relaxed) && !c.unread())
            .min_by_key(|c| since(c));
        let silent = || {
            open.values()
                .filter(|c| live(c) && since(c).elapsed() >= SHED_WAITING_AFTER && !c.unread())
                .min_by_key(|c| since(c))
        };
        let victim = partial.or_else(silent).or_else(|| {
            open.values()
                .filter(|c| !c.shed.load(Ordering::Relaxed) && c.idle_for() >= SHED_IDLE_AFTER && !c.unread())
                .max_by_key(|c| c.idle_for())
        });
        let c = victim?;
        c.shed.store(true, Ordering::Relaxed);
        c.waker.wake();
        c.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Accept errors are retried after a pause (axum's listener).
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => loop {
                // At the cap: a connection not in a request gives its slot;
                // while every one is in a request (or only just connected),
                // the new client waits for one, looking again as they age.
                if let Some(slot) = self.shed_one() {
                    break slot;
                }
                // The semaphore is never closed.
                if let Ok(Ok(slot)) = tokio::time::timeout(SHED_WAITING_AFTER, self.slots.clone().acquire_owned()).await
                {
                    break slot;
                }
            },
        };
        let _ = io.set_nodelay(true);
        let state = Arc::new(ConnState::new(slot, peek_handle(&io)));
        self.next_id += 1;
        let id = self.next_id;
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, state.clone());
        let registered = Registered {
            id,
            open: self.open.clone(),
        };
        (Bounded::new(io, registered, state, self.settings), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A duplicate handle on a connection's socket for [`ConnState::unread`]
/// (it shares the socket's non-blocking mode); `None` if it could not be
/// made, and the connection is served without one.
fn peek_handle(io: &TcpStream) -> Option<std::net::TcpStream> {
    #[cfg(unix)]
    let dup = std::os::fd::AsFd::as_fd(io).try_clone_to_owned();
    #[cfg(windows)]
    let dup = std::os::windows::io::AsSocket::as_socket(io).try_clone_to_owned();
    dup.ok().map(std::net::TcpStream::from)
}

/// A connection's place among the open connections (with its slot, unless
/// it was shed), given up when it closes.
struct Registered {
    id: u64,
    open: Open,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let state = self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
        // The slot returns here, not later with the last reference.
        if let Some(state) = state {
            drop(state.slot.lock().unwrap_or_else(|e| e.into_inner()).take());
        }
    }
}

// === impl Bounded ===

/// A connection with a header-read deadline and an idle deadline. The end
/// of a request's headers is the first blank line (`\r\n\r\n`): the
/// endpoint only serves bodiless GETs, so anything after it starts the next
/// request. The first request's headers are due from the accept: a client
/// that connects and sends nothing holds its slot no longer than one that
/// sends half a request. A connection shed for a new client fails its
/// pending I/O, and hyper closes it.
struct Bounded {
    io: TcpStream,
    _registered: Registered,
    state: Arc<ConnState>,
    settings: HttpSettings,
    /// When the current request's headers must be complete.
    headers_due: Option<Instant>,
    /// The last bytes read, to find a blank line split across reads.
    tail: [u8; 3],
    timer: Pin<Box<Sleep>>,
}

impl Bounded {
    fn new(io: TcpStream, registered: Registered, state: Arc<ConnState>, settings: HttpSettings) -> Self {
        Self {
            io,
            _registered: registered,
            state,
            settings,
            headers_due: Some(Instant::now() + settings.header_timeout),
            tail: [0; 3],
            timer: Box::pin(tokio::time::sleep(settings.header_timeout)),
        }
    }

    /// Traffic happened: the idle deadline moves, unless headers are due.
    fn active(&mut self) {
        self.state.touch();
        let due = self
            .headers_due
            .unwrap_or_else(|| Instant::now() + self.settings.idle_timeout);
        self.timer.as_mut().reset(due);
    }

    /// Tracks request boundaries in bytes just read.
    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.headers_due.is_none() {
                self.headers_due = Some(Instant::now() + self.settings.header_timeout);
                *self.state.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                self.state.waiting.store(true, Ordering::Relaxed);
            }
            let end = self.tail == *b"\r\n\r" && b == b'\n';
            self.tail = [self.tail[1], self.tail[2], b];
            if end {
                self.headers_due = None;
                self.tail = [0; 3];
                self.state.waiting.store(false, Ordering::Relaxed);
                self.state.partial.store(false, Ordering::Relaxed);
            }
        }
        if self.headers_due.is_some() && !bytes.is_empty() {
            self.state.partial.store(true, Ordering::Relaxed);
        }
        self.active();
    }

    /// Pending I/O: fails once the deadline passes, or the connection is
    /// shed.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.state.waker.register(cx.waker());
        if self.state.shed.load(Ordering::Relaxed) {
            return Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed for a new client at --http-max-connections",
            ));
        }
        ready!(self.timer.as_mut().poll(cx));
        let what = if self.headers_due.is_some() {
            "request headers not received within --http-header-timeout"
        } else {
            "connection idle for longer than --http-idle-timeout"
        };
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what))
    }
}

impl AsyncRead for Bounded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.scan(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.expired(cx).map(Err),
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.active();
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.expired(cx).map(Err),
            r => r,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.active();
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
