use std::time::Duration;

use super::*;
use crate::{Manifest, Param, Status, clock, http, kv, tcp};

/// Polls a URL until it answers 200, sleeping between tries; stores the try count.
struct Poller;

impl Plugin for Poller {
    fn manifest() -> Manifest {
        Manifest::check("poller", "0.1.0")
            .param(Param::text("url").required())
            .param(Param::duration("every").default(Duration::from_secs(1)))
            .param(Param::float("ratio").default(0.5))
            .capability("http")
            .capability("kv")
    }

    fn run(_ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let url = params.text("url")?;
        let every = params.duration("every")?;
        let mut tries = 0u32;
        loop {
            tries += 1;
            kv::set("tries", tries.to_string())?;
            match http::get(url).send() {
                Ok(r) if r.status == 200 => {
                    return Ok(Outcome::success(format!("200 after {tries} tries"))
                        .output("ratio", params.float("ratio")?));
                }
                Ok(_) | Err(http::HttpError::Connection(_)) => clock::sleep(every),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Uses tcp without declaring it.
struct Sneaky;

impl Plugin for Sneaky {
    fn manifest() -> Manifest {
        Manifest::action("sneaky", "0.1.0")
    }

    fn run(_ctx: &Context, _params: &Params) -> Result<Outcome, Error> {
        let _ = tcp::exchange("127.0.0.1:22", b"hello", None);
        Ok(Outcome::success("did nothing, honestly"))
    }
}

#[test]
fn replies_come_in_order_and_the_clock_moves_with_sleeps() {
    let url = "http://svc.internal/health";
    let mut h = Harness::new()
        .clock(1_000)
        .param("url", url)
        .param("ratio", 2i64)
        .http_replies(
            "GET",
            url,
            vec![
                Err(http::HttpError::Connection("refused".into())),
                Ok(response(503, "")),
                Ok(response(200, "ok")),
            ],
        );
    let call = h.run::<Poller>();
    assert_eq!(call.outcome().status, Status::Success);
    assert_eq!(call.outcome().summary, "200 after 3 tries");
    // An integer given for a float parameter is widened, as the engine does.
    assert_eq!(call.output("ratio"), Some(&Value::Float(2.0)));
    assert_eq!(call.http.len(), 3);
    assert_eq!(h.now_unix_ms(), 3_000);
    assert_eq!(h.kv_get("tries"), Some(&b"3"[..]));
}

#[test]
fn a_sleep_past_the_deadline_ends_the_call_as_timed_out() {
    let url = "http://svc.internal/health";
    let mut h = Harness::new()
        .timeout(Duration::from_secs(5))
        .param("url", url)
        .param("every", Duration::from_secs(2))
        .http("GET", url, response(503, ""));
    let call = h.run::<Poller>();
    assert!(
        matches!(call.error(), Error::Transient(m) if m.contains("deadline")),
        "{:?}",
        call.result
    );
    // Tries at 0 s, 2 s and 4 s; the sleep from 4 s reaches the deadline.
    assert_eq!(call.http.len(), 3);
}

#[test]
fn unanswered_requests_are_denied() {
    let mut h = Harness::new().param("url", "http://elsewhere.internal/");
    let call = h.run::<Poller>();
    assert!(matches!(call.error(), Error::Denied(m) if m.contains("no reply for GET")));
}

#[test]
fn an_undeclared_capability_ends_the_call_as_denied() {
    let mut h = Harness::new().tcp("127.0.0.1:22", "SSH-2.0");
    let call = h.run::<Sneaky>();
    assert!(matches!(call.error(), Error::Denied(m) if m.contains("`tcp`")));
    assert!(call.tcp.is_empty());
}

#[test]
fn kv_limits_are_the_engines() {
    let mut h = Harness::new();
    h.host().capabilities = vec!["kv".into()];
    CURRENT.with(|c| *c.borrow_mut() = h.host.take());
    assert!(fake::kv::set(&"k".repeat(300), b"v").is_err());
    assert!(fake::kv::set("big", &vec![0; MAX_VALUE_BYTES + 1]).is_err());
    // Keys count too: 15 full values fit in 1 MiB, a 16th does not.
    for i in 0..15 {
        assert!(fake::kv::set(&format!("k{i}"), &vec![0; MAX_VALUE_BYTES]).is_ok());
    }
    assert!(fake::kv::set("k15", &vec![0; MAX_VALUE_BYTES]).is_err());
    // Replacing an entry counts only the new value.
    assert!(fake::kv::set("k0", &vec![1; MAX_VALUE_BYTES]).is_ok());
    CURRENT.with(|c| c.borrow_mut().take());
}

#[test]
#[should_panic(expected = "parameter `url` of plugin `poller` is required")]
fn a_missing_required_parameter_is_a_mistake_in_the_test() {
    Harness::new().run::<Poller>();
}

#[test]
#[should_panic(expected = "parameter `colour` is not declared by plugin `poller`")]
fn an_unknown_parameter_is_a_mistake_in_the_test() {
    Harness::new()
        .param("url", "http://x/")
        .param("colour", "red")
        .run::<Poller>();
}
