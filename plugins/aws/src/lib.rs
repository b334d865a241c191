//! What the AWS plugins share: credentials and region from the step's parameters, requests
//! signed with Signature Version 4 (AWS's `aws-sigv4` crate), and the Query protocol
//! (form-encoded `Action=...` POSTs answered with XML) that ELBv2 and CloudWatch speak.
//!
//! Credentials are secret parameters: the engine masks them in plans, terminals and records,
//! and nothing here logs them or puts them in an error.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use medic_plugin_sdk::http::{self, HttpError};
use medic_plugin_sdk::{Error, Manifest, Param, Params, clock, log};

/// One AWS service spoken to with the Query protocol.
pub struct Service {
    /// The signing name and endpoint prefix (`elasticloadbalancing`, `monitoring`).
    pub name: &'static str,
    /// The API version every request names (`2015-12-01`).
    pub version: &'static str,
    /// For people: `ELBv2`, `CloudWatch`.
    pub title: &'static str,
}

/// The parameters every AWS plugin takes, added to its manifest.
pub fn params(m: Manifest) -> Manifest {
    m.param(Param::text("region").required().describe("The AWS region, e.g. us-east-1"))
        .param(Param::text("endpoint").describe(
            "The service's endpoint URL (default: the region's public endpoint); e.g. a VPC endpoint or a local emulator",
        ))
        .param(Param::text("access_key_id").required().secret().describe("AWS access key id"))
        .param(Param::text("secret_access_key").required().secret().describe("AWS secret access key"))
        .param(Param::text("session_token").secret().describe("Session token of temporary credentials (STS)"))
}

/// A client for one service, from the step's parameters.
pub struct Client {
    service: &'static Service,
    region: String,
    endpoint: String,
    credentials: Credentials,
}

impl Client {
    pub fn new(service: &'static Service, params: &Params) -> Result<Client, Error> {
        let region = params.text("region")?.trim().to_owned();
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::invalid_params(format!(
                "parameter `region`: `{region}` is not a region name"
            )));
        }
        let endpoint = match params.opt_text("endpoint")? {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None => format!("https://{}.{region}.amazonaws.com", service.name),
        };
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(Error::invalid_params(format!(
                "parameter `endpoint`: `{endpoint}` is not an http(s) URL"
            )));
        }
        let credentials = Credentials::new(
            params.text("access_key_id")?,
            params.text("secret_access_key")?,
            params.opt_text("session_token")?.map(str::to_owned),
            None,
            "medic",
        );
        Ok(Client {
            service,
            region,
            endpoint,
            credentials,
        })
    }

    /// The headers that sign a POST of `body` to the endpoint at `time`.
    pub fn signed_headers(
        &self,
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, Error> {
        let identity = self.credentials.clone().into();
        let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service.name)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::invalid_params(format!("cannot sign the request: {e}")))?
            .into();
        let url = format!("{}/", self.endpoint);
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let request = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| Error::invalid_params(format!("cannot sign a request to {url}: {e}")))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| Error::invalid_params(format!("cannot sign the request: {e}")))?
            .into_parts();
        let mut out: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        out.extend(
            instructions
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        Ok(out)
    }

    /// Calls `action` with `args`; returns the response's XML. AWS's error codes become
    /// errors that name them; throttling and server errors are transient (worth a retry).
    pub fn call(&self, action: &str, args: &[(String, String)]) -> Result<String, Error> {
        let mut pairs: Vec<(&str, &str)> =
            vec![("Action", action), ("Version", self.service.version)];
        pairs.extend(args.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let body = http::query_string(&pairs);
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(clock::now_unix_ms());
        let mut request = http::post(format!("{}/", self.endpoint)).body(body.clone());
        for (k, v) in self.signed_headers(body.as_bytes(), now)? {
            request = request.header(k, v);
        }
        let what = format!("{} {action}", self.service.title);
        let response = request.send().map_err(|e| match e {
            HttpError::Connection(_) | HttpError::Timeout(_) => {
                Error::transient(format!("{what}: {e}"))
            }
            other => Error::from(other),
        })?;
        let text = response.text();
        if response.status == 200 {
            return Ok(text);
        }
        let code = first(&text, "Code").unwrap_or("");
        let message = first(&text, "Message").map(unescape).unwrap_or_default();
        let detail = if code.is_empty() {
            format!("{what} answered HTTP {}", response.status)
        } else {
            format!("{what}: {code}: {message}")
        };
        log::warn(&detail);
        let transient = response.status >= 500
            || response.status == 429
            || matches!(
                code,
                "Throttling"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "ServiceUnavailable"
                    | "InternalFailure"
            );
        Err(if transient {
            Error::transient(detail)
        } else {
            Error::permanent(detail)
        })
    }
}

/// The text of the first `<tag>...</tag>` in `xml`.
pub fn first<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    all(xml, tag).into_iter().next()
}

/// The texts of every `<tag>...</tag>` in `xml`, in order (not nested in each other).
pub fn all<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = xml[at..].find(&open).map(|i| at + i + open.len()) {
        // Members nest (`<member>` inside `<member>`): find the matching close.
        let mut depth = 1;
        let mut i = start;
        loop {
            let next_open = xml[i..].find(&open).map(|j| i + j);
            let Some(next_close) = xml[i..].find(&close).map(|j| i + j) else {
                return out;
            };
            match next_open {
                Some(o) if o < next_close => {
                    depth += 1;
                    i = o + open.len();
                }
                _ => {
                    depth -= 1;
                    if depth == 0 {
                        out.push(&xml[start..next_close]);
                        at = next_close + close.len();
                        break;
                    }
                    i = next_close + close.len();
                }
            }
        }
    }
    out
}

/// XML's five entities back into text.
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_plugin_sdk::Value;

    const ELB: Service = Service {
        name: "elasticloadbalancing",
        version: "2015-12-01",
        title: "ELBv2",
    };

    fn params() -> Params {
        Params::new()
            .with("region", "eu-west-1")
            .with("access_key_id", "AKIDEXAMPLE")
            .with(
                "secret_access_key",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            )
    }

    #[test]
    fn requests_are_signed_for_the_service_region_and_day() {
        static SVC: Service = ELB;
        let c = Client::new(&SVC, &params()).unwrap();
        assert_eq!(
            c.endpoint,
            "https://elasticloadbalancing.eu-west-1.amazonaws.com"
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        let headers = c.signed_headers(b"Action=DescribeListeners", at).unwrap();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("x-amz-date").unwrap(), "20150830T123600Z");
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/elasticloadbalancing/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="),
            "{auth}"
        );
        assert!(!auth.contains("wJalr"), "the secret never appears");
        // The same request signs the same way; another body does not.
        let again = c.signed_headers(b"Action=DescribeListeners", at).unwrap();
        assert_eq!(headers, again);
        let other = c.signed_headers(b"Action=ModifyListener", at).unwrap();
        assert_ne!(headers, other);
    }

    #[test]
    fn session_tokens_are_sent_and_bad_regions_refused() {
        static SVC: Service = ELB;
        let p = params().with("session_token", "tok");
        let c = Client::new(&SVC, &p).unwrap();
        let h = c.signed_headers(b"", SystemTime::UNIX_EPOCH).unwrap();
        assert!(
            h.iter()
                .any(|(k, v)| k == "x-amz-security-token" && v == "tok"),
            "{h:?}"
        );
        let bad = params().with("region", Value::Text("eu west".into()));
        assert!(Client::new(&SVC, &bad).is_err());
    }

    #[test]
    fn nested_members_are_found_whole() {
        let xml =
            "<a><member><x>1</x><member><y>2</y></member></member><member><x>3</x></member></a>";
        assert_eq!(
            all(xml, "member"),
            ["<x>1</x><member><y>2</y></member>", "<x>3</x>"]
        );
        assert_eq!(first(xml, "x"), Some("1"));
        assert_eq!(unescape("a &amp;lt; &lt;b&gt;"), "a &lt; <b>");
    }
}
