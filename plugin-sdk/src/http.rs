//! Outgoing HTTP, to the hosts the runbook grants only.
//!
//! Redirects are not followed (a redirect could lead to a host that was not granted). The
//! engine caps the response size and cuts a request at the call's deadline.
//!
//! ```no_run
//! use std::time::Duration;
//! use medic_plugin_sdk::http;
//!
//! # fn main() -> Result<(), medic_plugin_sdk::Error> {
//! let response = http::post("http://127.0.0.1:8080/deploy")
//!     .header("content-type", "text/plain")
//!     .body("v2")
//!     .timeout(Duration::from_secs(5))
//!     .send()?;
//! println!("{} {}", response.status, response.text());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use crate::Error;
use crate::host::http as wit;

/// Percent-encodes `pairs` as a URL query string (without the leading `?`).
///
/// ```
/// use medic_plugin_sdk::http::query_string;
///
/// let q = query_string(&[("query", "rate(errors_total[1m]) > 0.01")]);
/// assert_eq!(q, "query=rate%28errors_total%5B1m%5D%29%20%3E%200.01");
/// ```
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    fn encode(s: &str, out: &mut String) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(k, &mut out);
        out.push('=');
        encode(v, &mut out);
    }
    out
}

/// The value of an `Authorization` header for HTTP basic authentication.
///
/// ```
/// use medic_plugin_sdk::http::basic_auth;
///
/// assert_eq!(basic_auth("user", "123"), "Basic dXNlcjoxMjM=");
/// ```
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A request being built. Send it with [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

/// A request with the given method (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS`).
pub fn request(method: impl Into<String>, url: impl Into<String>) -> Request {
    Request {
        method: method.into(),
        url: url.into(),
        headers: Vec::new(),
        body: None,
        timeout: None,
    }
}

/// A GET request.
pub fn get(url: impl Into<String>) -> Request {
    request("GET", url)
}

/// A POST request.
pub fn post(url: impl Into<String>) -> Request {
    request("POST", url)
}

/// A PUT request.
pub fn put(url: impl Into<String>) -> Request {
    request("PUT", url)
}

/// A PATCH request.
pub fn patch(url: impl Into<String>) -> Request {
    request("PATCH", url)
}

/// A DELETE request.
pub fn delete(url: impl Into<String>) -> Request {
    request("DELETE", url)
}

impl Request {
    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a timeout for this request. The call's deadline applies in any case.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let request = wit::Request {
            method: self.method,
            url: self.url,
            headers: self.headers,
            body: self.body,
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        wit::send(&request)
            .map(|r| Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(HttpError::from_wit)
    }
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host or scheme is not granted to this plugin.
    Denied(String),
    /// The request's own timeout passed.
    Timeout(String),
    /// The request is malformed (bad URL, method or header).
    InvalidRequest(String),
    /// The connection failed (refused, reset, TLS).
    Connection(String),
    /// The response body exceeded the engine's cap.
    TooLarge(String),
}

impl HttpError {
    fn from_wit(e: wit::HttpError) -> Self {
        match e {
            wit::HttpError::Denied(m) => HttpError::Denied(m),
            wit::HttpError::Timeout(m) => HttpError::Timeout(m),
            wit::HttpError::InvalidRequest(m) => HttpError::InvalidRequest(m),
            wit::HttpError::Connection(m) => HttpError::Connection(m),
            wit::HttpError::TooLarge(m) => HttpError::TooLarge(m),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "http denied: {m}"),
            HttpError::Timeout(m) => write!(f, "http timeout: {m}"),
            HttpError::InvalidRequest(m) => write!(f, "invalid http request: {m}"),
            HttpError::Connection(m) => write!(f, "http connection failed: {m}"),
            HttpError::TooLarge(m) => write!(f, "http response too large: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Maps each kind to what a retry can do: timeouts and connection failures are transient.
impl From<HttpError> for Error {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(_) => Error::Denied(e.to_string()),
            HttpError::Timeout(_) | HttpError::Connection(_) => Error::Transient(e.to_string()),
            HttpError::InvalidRequest(_) | HttpError::TooLarge(_) => {
                Error::Permanent(e.to_string())
            }
        }
    }
}
