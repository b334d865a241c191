pub mod log {
    use super::super::{LogLine, with_host};
    pub use crate::bindings::medic::plugin::log::Level;

    pub fn log(level: Level, message: &str, fields: &[(String, String)]) {
        let level = match level {
            Level::Trace => crate::log::Level::Trace,
            Level::Debug => crate::log::Level::Debug,
            Level::Info => crate::log::Level::Info,
            Level::Warn => crate::log::Level::Warn,
            Level::Error => crate::log::Level::Error,
        };
        with_host(|h| {
            h.record.logs.push(LogLine {
                level,
                message: message.to_owned(),
                fields: fields.to_vec(),
            })
        });
    }
}

pub mod clock {
    use super::super::with_host;

    pub fn now_unix_ms() -> u64 {
        with_host(|h| h.now_unix_ms)
    }

    pub fn remaining_ms() -> u64 {
        with_host(|h| h.deadline_unix_ms.saturating_sub(h.now_unix_ms))
    }

    pub fn sleep_ms(ms: u64) {
        with_host(|h| {
            let until = h.now_unix_ms.saturating_add(ms);
            if until >= h.deadline_unix_ms {
                h.now_unix_ms = h.deadline_unix_ms;
                h.ended.get_or_insert_with(|| {
                    crate::Error::transient("the call ran past its deadline (a sleep)")
                });
            } else {
                h.now_unix_ms = until;
            }
        })
    }
}

pub mod kv {
    use super::super::{MAX_KEY_BYTES, MAX_TOTAL_BYTES, MAX_VALUE_BYTES, with_host};

    pub fn get(key: &str) -> Option<Vec<u8>> {
        with_host(|h| {
            if !h.allows("kv") {
                return None;
            }
            h.kv.get(key).cloned()
        })
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        with_host(|h| {
            if !h.allows("kv") {
                return Err("kv is not granted to this plugin".into());
            }
            if key.len() > MAX_KEY_BYTES {
                return Err(format!("key is longer than {MAX_KEY_BYTES} bytes"));
            }
            if value.len() > MAX_VALUE_BYTES {
                return Err(format!("value is larger than {MAX_VALUE_BYTES} bytes"));
            }
            let others: usize =
                h.kv.iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
            if others + key.len() + value.len() > MAX_TOTAL_BYTES {
                return Err(format!(
                    "the run's state would exceed {MAX_TOTAL_BYTES} bytes"
                ));
            }
            h.kv.insert(key.to_owned(), value.to_vec());
            Ok(())
        })
    }

    pub fn delete(key: &str) {
        with_host(|h| {
            if h.allows("kv") {
                h.kv.remove(key);
            }
        })
    }
}

pub mod http {
    use super::super::{HttpCall, with_host};
    pub use crate::bindings::medic::plugin::http::{HttpError, Request, Response};

    pub fn send(request: &Request) -> Result<Response, HttpError> {
        with_host(|h| {
            if !h.allows("http") {
                return Err(HttpError::Denied("http is not declared".into()));
            }
            if h.past_deadline() {
                return Err(HttpError::Timeout("the call's deadline has passed".into()));
            }
            let call = HttpCall {
                method: request.method.clone(),
                url: request.url.clone(),
                headers: request.headers.clone(),
                body: request.body.clone(),
            };
            h.record.http.push(call.clone());
            let answer = h.http.iter_mut().find_map(|f| f(&call));
            match answer {
                Some(Ok(r)) => Ok(Response {
                    status: r.status,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(n, v)| (n.to_ascii_lowercase(), v))
                        .collect(),
                    body: r.body,
                }),
                Some(Err(e)) => Err(match e {
                    crate::http::HttpError::Denied(m) => HttpError::Denied(m),
                    crate::http::HttpError::Timeout(m) => HttpError::Timeout(m),
                    crate::http::HttpError::InvalidRequest(m) => HttpError::InvalidRequest(m),
                    crate::http::HttpError::Connection(m) => HttpError::Connection(m),
                    crate::http::HttpError::TooLarge(m) => HttpError::TooLarge(m),
                }),
                None => Err(HttpError::Denied(format!(
                    "the test harness has no reply for {} {}",
                    call.method, call.url
                ))),
            }
        })
    }
}

pub mod tcp {
    use super::super::with_host;
    pub use crate::bindings::medic::plugin::tcp::TcpError;

    pub fn exchange(
        address: &str,
        request: &[u8],
        _timeout_ms: Option<u64>,
    ) -> Result<Vec<u8>, TcpError> {
        with_host(|h| {
            if !h.allows("tcp") {
                return Err(TcpError::Denied("tcp is not declared".into()));
            }
            if h.past_deadline() {
                return Err(TcpError::Timeout("the call's deadline has passed".into()));
            }
            h.record.tcp.push((address.to_owned(), request.to_vec()));
            match h.tcp.iter_mut().find_map(|f| f(address, request)) {
                Some(Ok(bytes)) => Ok(bytes),
                Some(Err(e)) => Err(match e {
                    crate::tcp::TcpError::Denied(m) => TcpError::Denied(m),
                    crate::tcp::TcpError::Timeout(m) => TcpError::Timeout(m),
                    crate::tcp::TcpError::Connection(m) => TcpError::Connection(m),
                    crate::tcp::TcpError::TooLarge(m) => TcpError::TooLarge(m),
                }),
                None => Err(TcpError::Denied(format!(
                    "the test harness has no reply for {address}"
                ))),
            }
        })
    }
}

pub mod command {
    use super::super::{CommandCall, with_host};
    pub use crate::bindings::medic::plugin::command::{CommandError, CommandOutput};

    pub fn run(
        program: &str,
        args: &[String],
        _timeout_ms: Option<u64>,
    ) -> Result<CommandOutput, CommandError> {
        with_host(|h| {
            if !h.allows("command") {
                return Err(CommandError::Denied("command is not declared".into()));
            }
            if h.past_deadline() {
                return Err(CommandError::Timeout(
                    "the call's deadline has passed".into(),
                ));
            }
            let call = CommandCall {
                program: program.to_owned(),
                args: args.to_vec(),
            };
            h.record.commands.push(call.clone());
            match h.commands.iter_mut().find_map(|f| f(&call)) {
                Some(Ok(o)) => Ok(CommandOutput {
                    exit_code: o.exit_code,
                    stdout: o.stdout,
                    stderr: o.stderr,
                    truncated: o.truncated,
                }),
                Some(Err(e)) => Err(match e {
                    crate::command::CommandError::Denied(m) => CommandError::Denied(m),
                    crate::command::CommandError::Timeout(m) => CommandError::Timeout(m),
                    crate::command::CommandError::Failed(m) => CommandError::Failed(m),
                }),
                None => Err(CommandError::Denied(format!(
                    "the test harness has no reply for {program} {}",
                    args.join(" ")
                ))),
            }
        })
    }
}
