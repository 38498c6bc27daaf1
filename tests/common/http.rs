//! A tiny HTTP/1 server for the in-repo fakes: each request goes to a
//! synchronous handler that sees the method, path, headers and body. A
//! reply can also be a fault of the transport: a connection reset with no
//! response, or a request held unanswered (a hang). A [`Server`] can be
//! stopped (its port then refuses connections) and started again on the
//! same address.
//!
//! Everything runs on the test's runtime: held requests and open
//! connections end with it, so a hang never keeps a test from finishing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Incoming2 {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// How a reply reaches the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    /// The response, after the reply's `delay`.
    #[default]
    Answer,
    /// No response: the connection is closed with a TCP reset (after the
    /// reply's `delay`).
    Reset,
    /// No response, ever: the request is held until the client closes the
    /// connection, the server is stopped, or the test's runtime ends.
    Hang,
}

pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub delay: Duration,
    pub delivery: Delivery,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
            delivery: Delivery::Answer,
        }
    }
    pub fn xml(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "text/xml",
            body: body.into_bytes(),
            delay: Duration::ZERO,
            delivery: Delivery::Answer,
        }
    }
    /// A connection reset instead of a response.
    pub fn reset() -> Self {
        Self {
            delivery: Delivery::Reset,
            ..Self::json(500, serde_json::Value::Null)
        }
    }
    /// A request never answered.
    pub fn hang() -> Self {
        Self {
            delivery: Delivery::Hang,
            ..Self::json(500, serde_json::Value::Null)
        }
    }
}

pub type Handler = Arc<dyn Fn(Incoming2) -> Reply + Send + Sync>;

/// Requests being served right now, and the most ever served at once;
/// `held`: requests held unanswered right now (hangs).
#[derive(Default)]
pub struct Concurrency {
    pub now: AtomicUsize,
    pub max: AtomicUsize,
    pub held: AtomicUsize,
}

/// Serves `handler` on `addr` (port 0 picks one) until the runtime ends.
pub async fn serve(addr: SocketAddr, handler: Handler) -> SocketAddr {
    Server::start(addr, handler, Arc::new(Concurrency::default()))
        .await
        .addr
}

/// Like [`serve`], tracking concurrency in `stats`.
pub async fn serve_counted(addr: SocketAddr, handler: Handler, stats: Arc<Concurrency>) -> SocketAddr {
    Server::start(addr, handler, stats).await.addr
}

/// A running fake server that can be taken down and brought back.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    handler: Handler,
    stats: Arc<Concurrency>,
    tasks: Arc<Mutex<Tasks>>,
}

#[derive(Default)]
struct Tasks {
    accept: Option<AbortHandle>,
    connections: Vec<AbortHandle>,
}

impl Server {
    /// Listens on `addr` (port 0 picks one) until stopped or the runtime ends.
    pub async fn start(addr: SocketAddr, handler: Handler, stats: Arc<Concurrency>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind fake server");
        let addr = listener.local_addr().expect("local addr");
        let server = Self {
            addr,
            handler,
            stats,
            tasks: Arc::default(),
        };
        server.accept(listener);
        server
    }

    /// Stops listening and drops every open connection (held requests
    /// included): until [`Server::restart`], connecting is refused.
    pub fn stop(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(accept) = tasks.accept.take() {
            accept.abort();
        }
        for c in tasks.connections.drain(..) {
            c.abort();
        }
    }

    /// Listens on the same address again (after [`Server::stop`]).
    pub async fn restart(&self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                // The stopped listener may not be dropped yet.
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        self.accept(listener);
    }

    /// What answers its requests, and its counts.
    pub fn handler(&self) -> (Handler, Arc<Concurrency>) {
        (self.handler.clone(), self.stats.clone())
    }

    pub fn is_listening(&self) -> bool {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).accept.is_some()
    }

    fn accept(&self, listener: TcpListener) {
        let (handler, stats, tasks) = (self.handler.clone(), self.stats.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let conn = tokio::spawn(connection(stream, handler.clone(), stats.clone()));
                let mut t = tasks.lock().unwrap_or_else(|e| e.into_inner());
                t.connections.retain(|c| !c.is_finished());
                t.connections.push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).accept = Some(accept.abort_handle());
    }
}

/// The error a service returns to make hyper drop the connection unanswered.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for ResetConnection {}

/// Counts a held request for as long as it is held.
struct Held(Arc<Concurrency>);

impl Held {
    fn new(stats: &Arc<Concurrency>) -> Self {
        stats.held.fetch_add(1, Ordering::SeqCst);
        Self(stats.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(stream: TcpStream, handler: Handler, stats: Arc<Concurrency>) {
    let reset = Arc::new(AtomicBool::new(false));
    let io = Resettable {
        stream,
        reset: reset.clone(),
    };
    let svc = service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let stats = stats.clone();
        let reset = reset.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
            let request = Incoming2 {
                method: parts.method.to_string(),
                path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                headers: parts.headers,
                body,
            };
            match answer(&handler, &stats, request).await {
                Some(reply) => Ok(Response::builder()
                    .status(reply.status)
                    .header("content-type", reply.content_type)
                    .header("x-amzn-requestid", "00000000-0000-0000-0000-000000000000")
                    .body(Full::new(Bytes::from(reply.body)))
                    .expect("response")),
                None => {
                    reset.store(true, Ordering::SeqCst);
                    Err(ResetConnection)
                }
            }
        }
    });
    let _ = http1::Builder::new().serve_connection(TokioIo::new(io), svc).await;
}

/// What `handler` answers to `request`, as a server delivers it: after
/// the reply's delay; `None` for a connection reset; never for a hang.
/// Counted in `stats` while it is in progress (and while held).
pub async fn answer(handler: &Handler, stats: &Arc<Concurrency>, request: Incoming2) -> Option<Reply> {
    let n = stats.now.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max.fetch_max(n, Ordering::SeqCst);
    let reply = handler(request);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    stats.now.fetch_sub(1, Ordering::SeqCst);
    match reply.delivery {
        Delivery::Answer => Some(reply),
        Delivery::Reset => None,
        Delivery::Hang => {
            let _held = Held::new(stats);
            std::future::pending::<Option<Reply>>().await
        }
    }
}

/// A TCP stream that is reset (SO_LINGER 0, so closing sends RST) instead
/// of closed gracefully once `reset` is set.
struct Resettable {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Resettable {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for Resettable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Resettable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
