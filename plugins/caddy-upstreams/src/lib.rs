//! `caddy-upstreams`: sets the upstreams of a Caddy reverse proxy through its admin API, and
//! can put the previous set back.
//!
//! Caddy 2.6 has no weighted load-balancing policy, so weights are expressed by repeating an
//! upstream under round robin: `["green:9002*3", "blue:9001*1"]` sends 75% of requests to
//! green. The proxy handler is found by its `@id` in the Caddy config.

use medic_plugin_sdk::http::{self, HttpError};
use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, Value, kv, log};
use serde_json::{Value as Json, json};

struct CaddyUpstreams;

/// `host:port` or `host:port*weight` into the repeated dial list. Weights are reduced by
/// their greatest common divisor (90/10 is 9 entries and 1), and the entries interleaved
/// as smooth weighted round robin does (`a a b a a b`, not `a a a a b b`): Caddy's round
/// robin walks the list in order, so grouped entries would send a canary its share in
/// bursts, and a short analysis window could see none of it.
fn expand(spec: &[String]) -> Result<Vec<Json>, Error> {
    let mut weighted: Vec<(&str, u32)> = Vec::new();
    for s in spec {
        let (dial, weight) = match s.rsplit_once('*') {
            Some((d, w)) => (
                d.trim(),
                w.trim().parse::<u32>().map_err(|_| {
                    Error::invalid_params(format!(
                        "parameter `upstreams`: weight in `{s}` is not a whole number"
                    ))
                })?,
            ),
            None => (s.trim(), 1),
        };
        if dial.is_empty() || !dial.contains(':') {
            return Err(Error::invalid_params(format!(
                "parameter `upstreams`: `{s}` is not host:port or host:port*weight"
            )));
        }
        if weight > 100 {
            return Err(Error::invalid_params(format!(
                "parameter `upstreams`: weight {weight} in `{s}` is above 100"
            )));
        }
        if weight > 0 {
            weighted.push((dial, weight));
        }
    }
    if weighted.is_empty() {
        return Err(Error::invalid_params(
            "parameter `upstreams`: at least one upstream with a weight above 0",
        ));
    }
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let divisor = weighted.iter().fold(0, |g, (_, w)| gcd(g, *w));
    let weights: Vec<i64> = weighted
        .iter()
        .map(|(_, w)| i64::from(w / divisor))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::new();
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let pick = (0..current.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        current[pick] -= total;
        out.push(json!({ "dial": weighted[pick].0 }));
    }
    Ok(out)
}

/// `a×3, b×1` for people.
fn describe(list: &Json) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for u in list.as_array().into_iter().flatten() {
        let dial = u["dial"].as_str().unwrap_or("?").to_owned();
        match counts.iter_mut().find(|(d, _)| *d == dial) {
            Some((_, n)) => *n += 1,
            None => counts.push((dial, 1)),
        }
    }
    counts
        .iter()
        .map(|(d, n)| format!("{d}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn endpoint(params: &Params) -> Result<String, Error> {
    Ok(format!(
        "{}/id/{}/upstreams",
        params.text("admin_url")?.trim_end_matches('/'),
        params.text("handler_id")?
    ))
}

fn fail(e: HttpError) -> Error {
    match e {
        HttpError::Connection(_) | HttpError::Timeout(_) => Error::transient(e.to_string()),
        other => other.into(),
    }
}

fn read(params: &Params) -> Result<Json, Error> {
    let url = endpoint(params)?;
    let r = http::get(&url).send().map_err(fail)?;
    match r.status {
        200 => serde_json::from_slice(&r.body).map_err(|e| {
            Error::permanent(format!("Caddy answered with a body that is not JSON: {e}"))
        }),
        404 => Err(Error::permanent(format!(
            "Caddy has no handler with @id `{}` ({url} answered 404)",
            params.text("handler_id")?
        ))),
        s => Err(Error::permanent(format!(
            "GET {url} answered {s}: {}",
            r.text().trim()
        ))),
    }
}

fn write(params: &Params, list: &Json) -> Result<(), Error> {
    let url = endpoint(params)?;
    let r = http::patch(&url)
        .header("content-type", "application/json")
        .body(list.to_string())
        .send()
        .map_err(fail)?;
    if r.status != 200 {
        // Caddy keeps serving the old config when it refuses a new one.
        return Err(Error::permanent(format!(
            "Caddy refused the upstreams ({}): {}",
            r.status,
            r.text().trim()
        )));
    }
    let now = read(params)?;
    if now != *list {
        return Err(Error::permanent(format!(
            "Caddy reports {} after the change",
            describe(&now)
        )));
    }
    Ok(())
}

impl Plugin for CaddyUpstreams {
    fn manifest() -> Manifest {
        Manifest::action("caddy-upstreams", env!("CARGO_PKG_VERSION"))
            .describe("Sets the upstreams (and weights) of a Caddy reverse proxy; revert restores the previous set")
            .param(Param::text("admin_url").default("http://127.0.0.1:2019").describe("Caddy's admin API"))
            .param(Param::text("handler_id").default("lb_proxy").describe("The @id of the reverse_proxy handler"))
            .param(Param::text_list("upstreams").required().describe("host:port, or host:port*weight (weights by repetition)"))
            .capability("http")
            .capability("kv")
            .revertible()
            .dry_run()
    }

    fn run(ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let wanted = Json::Array(expand(params.text_list("upstreams")?)?);
        // A retried or resumed call restores what was there before the first attempt, not
        // what a half-made change left.
        let previous = match kv::original(ctx, "previous_upstreams") {
            Some(saved) if ctx.attempt > 1 => serde_json::from_slice(&saved).map_err(|e| {
                Error::permanent(format!("the recorded upstreams are not JSON: {e}"))
            })?,
            _ => read(params)?,
        };
        let done = |o: Outcome| {
            o.output("previous_upstreams", previous.to_string())
                .output("upstreams", describe(&wanted))
        };
        if previous == wanted {
            return Ok(done(Outcome::success(format!(
                "upstreams already {}",
                describe(&wanted)
            ))));
        }
        if ctx.dry_run {
            return Ok(done(Outcome::success(format!(
                "would set upstreams to {} (now {})",
                describe(&wanted),
                describe(&previous)
            ))));
        }
        // Saved (durably) first: a revert after a crash mid-change still knows what to restore.
        kv::save_original(ctx, "previous_upstreams", previous.to_string())?;
        log::info(&format!(
            "upstreams {} -> {}",
            describe(&previous),
            describe(&wanted)
        ));
        write(params, &wanted)?;
        Ok(done(Outcome::success(format!(
            "upstreams now {} (were {})",
            describe(&wanted),
            describe(&previous)
        ))))
    }

    fn revert(ctx: &Context, params: &Params, outputs: &Params) -> Result<Outcome, Error> {
        let saved = match outputs.get("previous_upstreams") {
            Some(Value::Text(t)) => t.clone(),
            _ => kv::original(ctx, "previous_upstreams")
                .and_then(|v| String::from_utf8(v).ok())
                .ok_or_else(|| {
                    Error::permanent("no previous upstreams recorded: nothing to restore")
                })?,
        };
        let previous: Json = serde_json::from_str(&saved)
            .map_err(|e| Error::permanent(format!("the recorded upstreams are not JSON: {e}")))?;
        let now = read(params)?;
        if now == previous {
            return Ok(Outcome::success(format!(
                "upstreams already {}",
                describe(&previous)
            )));
        }
        if ctx.dry_run {
            return Ok(Outcome::success(format!(
                "would restore upstreams {}",
                describe(&previous)
            )));
        }
        write(params, &previous)?;
        Ok(Outcome::success(format!(
            "restored upstreams {} (were {})",
            describe(&previous),
            describe(&now)
        )))
    }
}

medic_plugin_sdk::export!(CaddyUpstreams);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_become_repetitions() {
        let list = Json::Array(expand(&["a:1*3".into(), "b:2".into()]).unwrap());
        assert_eq!(list.as_array().unwrap().len(), 4);
        assert_eq!(describe(&list), "a:1×3, b:2×1");
        // Reduced, and spread out rather than grouped.
        let dials = |spec: &[&str]| -> Vec<String> {
            let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
            expand(&spec)
                .unwrap()
                .iter()
                .map(|u| u["dial"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(dials(&["s:1*90", "c:2*10"]).len(), 10);
        assert_eq!(dials(&["s:1*50", "c:2*50"]), ["s:1", "c:2"]);
        assert_eq!(dials(&["s:1*2", "c:2*1"]), ["s:1", "c:2", "s:1"]);
        assert_eq!(dials(&["s:1*0", "c:2*100"]), ["c:2"]);
        assert!(expand(&["a:1*0".into()]).is_err());
        assert!(expand(&["nohost".into()]).is_err());
        assert!(expand(&["a:1*x".into()]).is_err());
    }
}
