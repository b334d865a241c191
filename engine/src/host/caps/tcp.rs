use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::host::bindings::medic::plugin::tcp::{Host, TcpError};
use crate::host::sandbox::StoreState;

use super::DeadlineExceeded;

/// Answers larger than this are refused (a runtime API's state dump is a few KiB).
pub const MAX_TCP_RESPONSE: usize = 1 << 20;
const MAX_TCP_REQUEST: usize = 64 << 10;

/// Connects, writes, half-closes and reads to the end.
async fn tcp_exchange(address: &str, request: &[u8]) -> Result<Vec<u8>, TcpError> {
    let addr: SocketAddr = address
        .parse()
        .map_err(|_| TcpError::Connection(format!("`{address}` is not an ip:port address")))?;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| TcpError::Connection(format!("connect {address}: {e}")))?;
    stream
        .write_all(request)
        .await
        .map_err(|e| TcpError::Connection(format!("write to {address}: {e}")))?;
    // Closing our side tells line protocols like HAProxy's that the command is complete.
    stream
        .shutdown()
        .await
        .map_err(|e| TcpError::Connection(format!("shutdown {address}: {e}")))?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| TcpError::Connection(format!("read from {address}: {e}")))?;
        if n == 0 {
            return Ok(answer);
        }
        if answer.len() + n > MAX_TCP_RESPONSE {
            return Err(TcpError::TooLarge(format!(
                "the answer exceeds {MAX_TCP_RESPONSE} bytes"
            )));
        }
        answer.extend_from_slice(&chunk[..n]);
    }
}

impl Host for StoreState {
    async fn exchange(
        &mut self,
        address: String,
        request: Vec<u8>,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<Result<Vec<u8>, TcpError>> {
        let start = Instant::now();
        let detail = format!("{address} ({} bytes)", request.len());
        if !self
            .caps
            .grants
            .tcp
            .iter()
            .any(|g| g.allows_address(&address))
        {
            let reason = if self.caps.grants.tcp.is_empty() {
                "tcp is not granted to this plugin".to_owned()
            } else {
                let granted: Vec<String> =
                    self.caps.grants.tcp.iter().map(|g| g.to_string()).collect();
                format!("address not granted (granted: {})", granted.join(", "))
            };
            return Ok(Err(TcpError::Denied(self.caps.deny("tcp", detail, reason))));
        }
        if request.len() > MAX_TCP_REQUEST {
            return Ok(Err(TcpError::TooLarge(format!(
                "the request exceeds {MAX_TCP_REQUEST} bytes"
            ))));
        }
        let start = self.caps.before_acting(start)?;
        let remaining = self.caps.remaining();
        let own = timeout_ms.map(Duration::from_millis);
        let limit = own.map_or(remaining, |t| t.min(remaining));
        let cut_by_deadline = own.is_none_or(|t| t >= remaining);
        match tokio::time::timeout(limit, tcp_exchange(&address, &request)).await {
            Err(_) if cut_by_deadline => {
                self.caps.record(
                    "tcp",
                    detail,
                    true,
                    "cut at the call's deadline".into(),
                    start,
                );
                Err(wasmtime::Error::new(DeadlineExceeded))
            }
            Err(_) => {
                self.caps
                    .record("tcp", detail, true, "timeout".into(), start);
                Ok(Err(TcpError::Timeout(format!(
                    "no answer within {}",
                    humantime::format_duration(limit)
                ))))
            }
            Ok(Ok(answer)) => {
                self.caps.record(
                    "tcp",
                    detail,
                    true,
                    format!("{} bytes back", answer.len()),
                    start,
                );
                Ok(Ok(answer))
            }
            Ok(Err(e)) => {
                let shown = match &e {
                    TcpError::Denied(m)
                    | TcpError::Timeout(m)
                    | TcpError::Connection(m)
                    | TcpError::TooLarge(m) => m.clone(),
                };
                self.caps
                    .record("tcp", detail, true, format!("error: {shown}"), start);
                Ok(Err(e))
            }
        }
    }
}
