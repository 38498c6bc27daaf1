//! A forward proxy that records the hosts clients ask it to CONNECT to and
//! refuses every tunnel: enough to prove which endpoint a client chose and
//! that it honoured the proxy settings.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct RecordingProxy {
    pub url: String,
    hosts: Arc<Mutex<Vec<String>>>,
}

impl RecordingProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let h = hosts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let h = h.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    if let Some(target) = head.strip_prefix("CONNECT ").and_then(|r| r.split_whitespace().next()) {
                        h.lock().unwrap_or_else(|e| e.into_inner()).push(target.to_string());
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        Self { url, hosts }
    }

    pub fn hosts(&self) -> Vec<String> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
