//! Raw TCP exchanges with granted `ip:port` addresses, for line protocols such as HAProxy's
//! runtime API: connect, send the request, close the sending side, read the whole answer.
//!
//! ```no_run
//! use std::time::Duration;
//! use medic_plugin_sdk::tcp;
//!
//! # fn main() -> Result<(), medic_plugin_sdk::Error> {
//! let answer = tcp::exchange("127.0.0.1:9999", b"get weight be/blue\n", Some(Duration::from_secs(2)))?;
//! println!("{}", String::from_utf8_lossy(&answer));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use crate::Error;
use crate::host::tcp as wit;

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpError {
    /// The address is not granted to this plugin.
    Denied(String),
    /// The exchange's own timeout passed.
    Timeout(String),
    /// The connection failed (refused, reset).
    Connection(String),
    /// The answer exceeded the engine's cap.
    TooLarge(String),
}

impl fmt::Display for TcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpError::Denied(m) => write!(f, "tcp denied: {m}"),
            TcpError::Timeout(m) => write!(f, "tcp timeout: {m}"),
            TcpError::Connection(m) => write!(f, "tcp connection failed: {m}"),
            TcpError::TooLarge(m) => write!(f, "tcp answer too large: {m}"),
        }
    }
}

impl std::error::Error for TcpError {}

/// Timeouts and connection failures are transient; the rest are not.
impl From<TcpError> for Error {
    fn from(e: TcpError) -> Self {
        match e {
            TcpError::Denied(_) => Error::Denied(e.to_string()),
            TcpError::Timeout(_) | TcpError::Connection(_) => Error::Transient(e.to_string()),
            TcpError::TooLarge(_) => Error::Permanent(e.to_string()),
        }
    }
}

/// Sends `request` to `address` (`ip:port`) and returns everything the peer sends back
/// before closing. The call's deadline applies in any case.
pub fn exchange(
    address: &str,
    request: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<u8>, TcpError> {
    let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    wit::exchange(address, request, timeout_ms).map_err(|e| match e {
        wit::TcpError::Denied(m) => TcpError::Denied(m),
        wit::TcpError::Timeout(m) => TcpError::Timeout(m),
        wit::TcpError::Connection(m) => TcpError::Connection(m),
        wit::TcpError::TooLarge(m) => TcpError::TooLarge(m),
    })
}
