use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use reqwest::Url;

use crate::host::bindings::medic::plugin::http::{Host, HttpError, Request, Response};
use crate::host::sandbox::StoreState;

use super::DeadlineExceeded;

type Client = std::sync::OnceLock<Result<reqwest::Client, String>>;

/// The HTTP clients plugins' requests go through, each made on first use: one for `https://`
/// (making it reads the system's CA certificates, several milliseconds, which every `medic
/// run` used to pay at start), one for plain `http://` that never needs them.
#[derive(Clone, Default)]
pub(crate) struct LazyHttp(std::sync::Arc<(Client, Client)>);

impl LazyHttp {
    pub(crate) fn get(&self, https: bool) -> Result<&reqwest::Client, String> {
        let (plain, tls) = &*self.0;
        let client = if https { tls } else { plain };
        client
            .get_or_init(|| {
                crate::host::install_crypto_provider();
                let builder = reqwest::Client::builder()
                    // A redirect could lead to a host that was not granted.
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .user_agent(concat!("medic/", env!("CARGO_PKG_VERSION")));
                // No certificate: this one is never used for TLS.
                let builder = if https {
                    builder
                } else {
                    builder.tls_certs_only([])
                };
                builder
                    .build()
                    .map_err(|e| format!("cannot create the http client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Responses larger than this are refused: plugins run in a few MiB of memory and results go
/// into the run record.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// A host (and optionally a port) a plugin may reach, e.g. `127.0.0.1:8080`,
/// `api.example.com` (any port) or `[::1]:9000`. HTTP grants match URLs with it; tcp grants
/// (which require a port) match `ip:port` addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGrant {
    host: String,
    port: Option<u16>,
}

impl FromStr for HostGrant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty host is not a grant".into());
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "`{s}` is a URL; grant a host such as `127.0.0.1:8080` or `api.example.com`"
            ));
        }
        if s.contains('*') {
            return Err(format!(
                "`{s}`: wildcards are not supported; list each host"
            ));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: unclosed `[` in an IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("`{s}`: unexpected text after `]`")),
            };
            (format!("[{h}]"), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (s.to_owned(), None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| format!("`{s}`: `{p}` is not a port number"))
            })
            .transpose()?;
        Ok(HostGrant {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for HostGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// Whether `grants` let a plugin request `url`; `None` when it is not an http(s) URL.
pub fn allows_url(grants: &[HostGrant], url: &str) -> Option<bool> {
    let url = Url::parse(url).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| grants.iter().any(|g| g.allows(&url)))
}

impl HostGrant {
    /// For tcp grants: an `ip:port` address, matched exactly (a port is required).
    pub fn allows_address(&self, address: &str) -> bool {
        let Some(port) = self.port else { return false };
        match address.parse::<std::net::SocketAddr>() {
            Ok(a) => {
                let host = match a.ip() {
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                };
                host == self.host && a.port() == port
            }
            Err(_) => false,
        }
    }

    pub fn has_port(&self) -> bool {
        self.port.is_some()
    }

    fn allows(&self, url: &Url) -> bool {
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            Some(h) => h.to_string().to_ascii_lowercase(),
            None => return false,
        };
        host == self.host
            && self
                .port
                .is_none_or(|p| url.port_or_known_default() == Some(p))
    }
}

/// What goes into the record: host and path, never the query (it may carry tokens).
fn describe(method: &str, url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{method} {host}:{p}{}", url.path()),
        None => format!("{method} {host}{}", url.path()),
    }
}

impl Host for StoreState {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let start = Instant::now();
        let method = request.method.to_ascii_uppercase();
        let url = match Url::parse(&request.url) {
            Ok(u) => u,
            Err(e) => {
                return Ok(Err(HttpError::InvalidRequest(format!(
                    "`{}` is not a URL: {e}",
                    request.url
                ))));
            }
        };
        let detail = describe(&method, &url);
        if url.scheme() != "http" && url.scheme() != "https" {
            let reason = format!(
                "scheme `{}` is not allowed (http and https only)",
                url.scheme()
            );
            return Ok(Err(HttpError::Denied(
                self.caps.deny("http", detail, reason),
            )));
        }
        if !self.caps.grants.http.iter().any(|g| g.allows(&url)) {
            let reason = if self.caps.grants.http.is_empty() {
                "http is not granted to this plugin".to_owned()
            } else {
                let granted: Vec<String> = self
                    .caps
                    .grants
                    .http
                    .iter()
                    .map(|g| g.to_string())
                    .collect();
                format!("host not granted (granted: {})", granted.join(", "))
            };
            return Ok(Err(HttpError::Denied(
                self.caps.deny("http", detail, reason),
            )));
        }
        let method = match reqwest::Method::from_bytes(method.as_bytes()) {
            Ok(m)
                if ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
                    .contains(&m.as_str()) =>
            {
                m
            }
            _ => {
                return Ok(Err(HttpError::InvalidRequest(format!(
                    "method `{method}` is not supported"
                ))));
            }
        };

        let start = self.caps.before_acting(start)?;
        let remaining = self.caps.remaining();
        let own = request.timeout_ms.map(Duration::from_millis);
        let limit = own.map_or(remaining, |t| t.min(remaining));
        let cut_by_deadline = own.is_none_or(|t| t >= remaining);

        let client = match self.caps.http.get(url.scheme() == "https") {
            Ok(c) => c.clone(),
            Err(e) => return Ok(Err(HttpError::Connection(e))),
        };
        let mut builder = client.request(method, url.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let built = match builder.build() {
            Ok(r) => r,
            Err(e) => {
                return Ok(Err(HttpError::InvalidRequest(format!("{e}"))));
            }
        };
        let exchange = async move {
            let mut response = client.execute(built).await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect::<Vec<_>>();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Ok(Err(HttpError::TooLarge(format!(
                        "the response exceeds {MAX_RESPONSE_BYTES} bytes"
                    ))));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok(Response {
                status,
                headers,
                body,
            }))
        };

        match tokio::time::timeout(limit, exchange).await {
            Err(_elapsed) if cut_by_deadline => {
                self.caps.record(
                    "http",
                    detail,
                    true,
                    "cut at the call's deadline".into(),
                    start,
                );
                Err(wasmtime::Error::new(DeadlineExceeded))
            }
            Err(_elapsed) => {
                self.caps
                    .record("http", detail, true, "timeout".into(), start);
                Ok(Err(HttpError::Timeout(format!(
                    "no response within {}",
                    humantime::format_duration(limit)
                ))))
            }
            Ok(Ok(Ok(response))) => {
                self.caps
                    .record("http", detail, true, response.status.to_string(), start);
                Ok(Ok(response))
            }
            Ok(Ok(Err(too_large))) => {
                self.caps
                    .record("http", detail, true, "response too large".into(), start);
                Ok(Err(too_large))
            }
            Ok(Err(e)) => {
                // reqwest's Display hides the cause ("error sending request"); the chain says
                // "connection refused".
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    message = format!("{message}: {s}");
                    source = s.source();
                }
                self.caps
                    .record("http", detail, true, format!("error: {message}"), start);
                Ok(Err(if e.is_timeout() {
                    HttpError::Timeout(message)
                } else if e.is_builder() {
                    HttpError::InvalidRequest(message)
                } else {
                    HttpError::Connection(message)
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(grant: &str, url: &str) -> bool {
        grant
            .parse::<HostGrant>()
            .unwrap()
            .allows(&Url::parse(url).unwrap())
    }

    #[test]
    fn grants_match_host_and_port() {
        assert!(allows("127.0.0.1:8080", "http://127.0.0.1:8080/health"));
        assert!(!allows("127.0.0.1:8080", "http://127.0.0.1:8081/health"));
        assert!(!allows("127.0.0.1:8080", "http://localhost:8080/"));
        assert!(allows("Example.com", "https://example.com:8443/x"));
        assert!(allows("example.com:80", "http://example.com/"));
        assert!(!allows("example.com:80", "https://example.com/"));
        assert!(!allows("example.com", "http://example.com.evil.net/"));
        assert!(allows("[::1]:9000", "http://[::1]:9000/"));
        assert!(!allows("[::1]:9000", "http://[::1]:9001/"));
    }

    #[test]
    fn bad_grants_are_explained() {
        assert!(
            "http://x"
                .parse::<HostGrant>()
                .unwrap_err()
                .contains("is a URL")
        );
        assert!(
            "x:port"
                .parse::<HostGrant>()
                .unwrap_err()
                .contains("not a port")
        );
        assert!(
            "*.x.com"
                .parse::<HostGrant>()
                .unwrap_err()
                .contains("wildcards")
        );
    }
}
