//! `supervisor-restart`: restarts a program managed by supervisord through its XML-RPC
//! interface (HTTP), waits until it is RUNNING, and reports the pid change. supervisord has no
//! restart call: this stops (if running) then starts. Faults surface by name (BAD_NAME,
//! SPAWN_ERROR, ...).

use medic_plugin_sdk::http::{self, HttpError, basic_auth};
use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, log};

struct SupervisorRestart;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

enum Arg<'a> {
    Str(&'a str),
    Bool(bool),
}

/// The text of the first `<tag>...</tag>` after `from`.
fn element<'a>(xml: &'a str, from: usize, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml[from..].find(&open)? + from + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// The value of a struct member, e.g. `pid` or `statename`.
fn member(xml: &str, name: &str) -> Option<String> {
    let at = xml.find(&format!("<name>{name}</name>"))?;
    let value = element(xml, at, "value")?;
    for tag in ["string", "int", "i4", "boolean"] {
        if let Some(v) = element(value, 0, tag) {
            return Some(unescape(v));
        }
    }
    Some(unescape(value))
}

/// Calls a method; a fault becomes a permanent error naming it.
fn call(params: &Params, method: &str, args: &[Arg<'_>]) -> Result<String, Error> {
    let url = params.text("url")?;
    let mut body =
        format!("<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>");
    for a in args {
        match a {
            Arg::Str(s) => body.push_str(&format!(
                "<param><value><string>{}</string></value></param>",
                escape(s)
            )),
            Arg::Bool(b) => body.push_str(&format!(
                "<param><value><boolean>{}</boolean></value></param>",
                u8::from(*b)
            )),
        }
    }
    body.push_str("</params></methodCall>");
    let mut request = http::post(url)
        .header("content-type", "text/xml")
        .body(body);
    if let Some(user) = params.opt_text("username")? {
        request = request.header(
            "authorization",
            basic_auth(user, params.opt_text("password")?.unwrap_or("")),
        );
    }
    let response = request.send().map_err(|e| match e {
        HttpError::Connection(_) | HttpError::Timeout(_) => Error::transient(e.to_string()),
        other => other.into(),
    })?;
    match response.status {
        200 => {}
        401 => {
            return Err(Error::permanent(
                "supervisord refused the credentials (401): check `username` and `password`",
            ));
        }
        s => {
            return Err(Error::permanent(format!(
                "supervisord answered {s} to {method}"
            )));
        }
    }
    let xml = response.text();
    if xml.contains("<fault>") {
        let name = member(&xml, "faultString").unwrap_or_else(|| "unknown fault".into());
        return Err(Error::permanent(format!(
            "supervisord: {method} failed: {name}"
        )));
    }
    Ok(xml)
}

impl Plugin for SupervisorRestart {
    fn manifest() -> Manifest {
        Manifest::action("supervisor-restart", env!("CARGO_PKG_VERSION"))
            .describe("Restarts a supervisord program over XML-RPC and waits until it runs again")
            .param(
                Param::text("url")
                    .required()
                    .describe("supervisord's XML-RPC endpoint, e.g. http://127.0.0.1:9001/RPC2"),
            )
            .param(
                Param::text("program")
                    .required()
                    .describe("The program name (group:name for groups)"),
            )
            .param(Param::text("username").describe("For the inet_http_server's basic auth"))
            .param(
                Param::text("password")
                    .secret()
                    .describe("For the inet_http_server's basic auth"),
            )
            .capability("http")
            .dry_run()
    }

    fn run(ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let program = params.text("program")?;
        let info = call(params, "supervisor.getProcessInfo", &[Arg::Str(program)])?;
        let state = member(&info, "statename").unwrap_or_default();
        let pid_before: i64 = member(&info, "pid")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ctx.dry_run {
            return Ok(Outcome::success(format!(
                "would restart {program} ({state}, pid {pid_before})"
            )));
        }
        if state == "RUNNING" || state == "STARTING" || state == "BACKOFF" {
            log::info(&format!("stopping {program} (pid {pid_before})"));
            call(
                params,
                "supervisor.stopProcess",
                &[Arg::Str(program), Arg::Bool(true)],
            )?;
        }
        log::info(&format!("starting {program}"));
        call(
            params,
            "supervisor.startProcess",
            &[Arg::Str(program), Arg::Bool(true)],
        )?;
        let after = call(params, "supervisor.getProcessInfo", &[Arg::Str(program)])?;
        let state_after = member(&after, "statename").unwrap_or_default();
        let pid_after: i64 = member(&after, "pid")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let outcome = if state_after == "RUNNING" {
            Outcome::success(format!(
                "restarted {program}: pid {pid_before} -> {pid_after}"
            ))
        } else {
            Outcome::failure(format!("{program} is {state_after} after the restart"))
        };
        Ok(outcome
            .output("pid_before", pid_before)
            .output("pid_after", pid_after)
            .output("state", state_after))
    }
}

medic_plugin_sdk::export!(SupervisorRestart);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_members_and_faults() {
        let info = "<methodResponse><params><param><value><struct><member><name>pid</name><value><int>4242</int></value></member><member><name>statename</name><value><string>RUNNING</string></value></member></struct></value></param></params></methodResponse>";
        assert_eq!(member(info, "pid").unwrap(), "4242");
        assert_eq!(member(info, "statename").unwrap(), "RUNNING");
        let fault = "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>10</int></value></member><member><name>faultString</name><value><string>BAD_NAME: nope</string></value></member></struct></value></fault></methodResponse>";
        assert_eq!(member(fault, "faultString").unwrap(), "BAD_NAME: nope");
        assert_eq!(escape("a<b&c"), "a&lt;b&amp;c");
    }
}
