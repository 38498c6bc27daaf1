//! A tiny HTTP/1 server for the in-repo fakes: each request goes to a
//! synchronous handler that sees the method, path, headers and body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub struct Incoming2 {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }
    pub fn xml(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "text/xml",
            body: body.into_bytes(),
            delay: Duration::ZERO,
        }
    }
}

pub type Handler = Arc<dyn Fn(Incoming2) -> Reply + Send + Sync>;

/// Requests being served right now, and the most ever served at once.
#[derive(Default)]
pub struct Concurrency {
    pub now: AtomicUsize,
    pub max: AtomicUsize,
}

/// Serves `handler` on `addr` (port 0 picks one) until the runtime ends.
pub async fn serve(addr: SocketAddr, handler: Handler) -> SocketAddr {
    serve_counted(addr, handler, Arc::new(Concurrency::default())).await
}

/// Like [`serve`], tracking concurrency in `stats`.
pub async fn serve_counted(addr: SocketAddr, handler: Handler, stats: Arc<Concurrency>) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.expect("bind fake server");
    let local = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    let stats = stats.clone();
                    async move {
                        let n = stats.now.fetch_add(1, Ordering::SeqCst) + 1;
                        stats.max.fetch_max(n, Ordering::SeqCst);
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        let reply = handler(Incoming2 {
                            method: parts.method.to_string(),
                            path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                            headers: parts.headers,
                            body,
                        });
                        if !reply.delay.is_zero() {
                            tokio::time::sleep(reply.delay).await;
                        }
                        stats.now.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(reply.status)
                                .header("content-type", reply.content_type)
                                .header("x-amzn-requestid", "00000000-0000-0000-0000-000000000000")
                                .body(Full::new(Bytes::from(reply.body)))
                                .expect("response"),
                        )
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    local
}
