//! The operations endpoint (`--http-addr`, default `0.0.0.0:8989`):
//! `/healthz` (the process is alive), `/readyz` (the provider socket is
//! bound and a `Version` call through it succeeds), `/metrics` (Prometheus).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::proto::v1alpha1::VersionRequest;
use crate::telemetry::Metrics;

const READY_TIMEOUT: Duration = Duration::from_secs(2);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, socket: PathBuf, metrics: Arc<Metrics>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (socket, metrics) = (socket.clone(), metrics.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (socket, metrics) = (socket.clone(), metrics.clone());
                async move { Ok::<_, Infallible>(route(req.uri().path(), &socket, &metrics).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn route(path: &str, socket: &std::path::Path, metrics: &Metrics) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match ready(socket).await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        },
        "/metrics" => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, OPENMETRICS)
            .body(Full::new(Bytes::from(metrics.encode())))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Ready when a `Version` call through the provider socket succeeds.
async fn ready(socket: &std::path::Path) -> Result<(), String> {
    let call = async {
        let mut client = crate::client::connect(socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        client
            .version(VersionRequest {
                version: crate::server::API_VERSION.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("Version failed: {}", s.message()))
    };
    tokio::time::timeout(READY_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err("Version timed out".to_string()))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
