//! The HTTP load generator's pieces shared by the benches: keep-alive connections over hyper's
//! low-level client, one exchange with a deadline, ~100-byte JSON values, a cheap per-task RNG,
//! and bulk writes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Length of each PUT value, bytes.
pub const VALUE_BYTES: usize = 100;
/// Longest a request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A ~[`VALUE_BYTES`]-byte JSON document for key `n`.
pub fn json_value(n: u64) -> Bytes {
    let head = format!("{{\"id\":{n},\"kind\":\"bench\",\"payload\":\"");
    let tail = "\"}";
    let pad = VALUE_BYTES.saturating_sub(head.len() + tail.len());
    Bytes::from(format!("{head}{}{tail}", "x".repeat(pad)))
}

/// xorshift64*: fast, deterministic per task, plenty for picking keys.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

pub type Sender = http1::SendRequest<Full<Bytes>>;

pub async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole response; `Err` if it failed or was not a 2xx.
pub async fn exchange(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<(), String> {
    let work = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("no response within {REQUEST_TIMEOUT:?}")),
    }
}

/// PUTs `prefix/{n}` for every `n` of `keys`, over `connections` connections; panics on a failure.
pub async fn put_keys(
    addr: SocketAddr,
    prefix: &'static str,
    keys: std::ops::Range<u64>,
    connections: usize,
) {
    let tasks: Vec<_> = (0..connections as u64)
        .map(|task| {
            let keys = keys.clone();
            tokio::spawn(async move {
                let mut sender = connect(addr).await.expect("bulk write connection");
                for n in (keys.start + task..keys.end).step_by(connections) {
                    let req = put_request(addr, &format!("{prefix}/{n}"), json_value(n));
                    exchange(&mut sender, req)
                        .await
                        .unwrap_or_else(|e| panic!("writing {prefix}/{n}: {e}"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bulk write task");
    }
}

/// `PUT /kv/{key}` of `body`.
pub fn put_request(addr: SocketAddr, key: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::PUT)
        .uri(format!("/kv/{key}"))
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("valid request")
}
