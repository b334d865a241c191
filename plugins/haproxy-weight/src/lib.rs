//! `haproxy-weight`: sets a server's weight, or drains / readies it, through HAProxy's runtime
//! API (the `stats socket` on a TCP address, `level admin`); revert restores what was there.
//! Runtime changes do not survive an HAProxy reload, as HAProxy documents.

use std::time::Duration;

use medic_plugin_sdk::{
    Context, Error, Manifest, Outcome, Param, ParamProblem, Params, Plugin, Value, kv, log, tcp,
};

struct HaproxyWeight;

/// One runtime API command; HAProxy answers text and closes the connection. Error answers
/// are single lines such as "No such server." or "Require 'backend/server'.".
fn command(params: &Params, line: &str) -> Result<String, Error> {
    let admin = params.text("admin")?;
    let answer = tcp::exchange(
        admin,
        format!("{line}\n").as_bytes(),
        Some(Duration::from_secs(5)),
    )?;
    let text = String::from_utf8_lossy(&answer).trim().to_owned();
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("no such")
        || lower.starts_with("require")
        || lower.starts_with("unknown command")
        || lower.contains("permission denied")
        || lower.starts_with("invalid")
    {
        return Err(Error::permanent(format!(
            "HAProxy refused `{line}`: {text}"
        )));
    }
    Ok(text)
}

fn target(params: &Params) -> Result<String, Error> {
    Ok(format!(
        "{}/{}",
        params.text("backend")?,
        params.text("server")?
    ))
}

/// The current weight and admin state (ready, drain or maint) of the server.
fn current(params: &Params) -> Result<(i64, String), Error> {
    let t = target(params)?;
    let weight_line = command(params, &format!("get weight {t}"))?;
    let weight = weight_line
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| {
            Error::permanent(format!(
                "unexpected answer to `get weight {t}`: {weight_line}"
            ))
        })?;
    let backend = params.text("backend")?;
    let server = params.text("server")?;
    let dump = command(params, &format!("show servers state {backend}"))?;
    // Columns: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
    let admin = dump
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.len() > 6 && c[1] == backend && c[3] == server)
        .and_then(|c| c[6].parse::<u32>().ok())
        .ok_or_else(|| Error::permanent(format!("HAProxy's state dump has no server {t}")))?;
    // SRV_ADMF_*: 0x01 forced maint, 0x02/0x04/0x20 inherited/config/resolution maint, 0x08/0x10 drain.
    let state = if admin & (0x01 | 0x02 | 0x04 | 0x20) != 0 {
        "maint"
    } else if admin & (0x08 | 0x10) != 0 {
        "drain"
    } else {
        "ready"
    };
    Ok((weight, state.to_owned()))
}

fn apply(params: &Params, weight: Option<i64>, state: Option<&str>) -> Result<(), Error> {
    let t = target(params)?;
    if let Some(w) = weight {
        command(params, &format!("set server {t} weight {w}"))?;
    }
    if let Some(s) = state {
        command(params, &format!("set server {t} state {s}"))?;
    }
    Ok(())
}

/// `"{weight} {state}"`, as saved before a change.
fn parse_saved(saved: &str) -> Result<(i64, String), Error> {
    let (w, s) = saved
        .split_once(' ')
        .ok_or_else(|| Error::permanent("the recorded state is unreadable"))?;
    Ok((
        w.parse()
            .map_err(|_| Error::permanent("the recorded weight is unreadable"))?,
        s.to_owned(),
    ))
}

impl Plugin for HaproxyWeight {
    fn manifest() -> Manifest {
        Manifest::action("haproxy-weight", env!("CARGO_PKG_VERSION"))
            .describe("Sets an HAProxy server's weight or state (ready, drain, maint) at runtime; revert restores them")
            .param(Param::text("admin").required().describe("ip:port of HAProxy's stats socket (level admin)"))
            .param(Param::text("backend").required().describe("The backend name"))
            .param(Param::text("server").required().describe("The server name in the backend"))
            .param(Param::integer("weight").describe("The new weight, 0 to 256"))
            .param(Param::text("state").describe("ready, drain or maint"))
            .capability("tcp")
            .capability("kv")
            .revertible()
            .dry_run()
    }

    fn check_params(params: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if let Ok(Some(w)) = params.opt_integer("weight")
            && !(0..=256).contains(&w)
        {
            problems.push(ParamProblem::new(
                "weight",
                format!("{w} is not between 0 and 256"),
            ));
        }
        if let Ok(Some(s)) = params.opt_text("state")
            && !["ready", "drain", "maint"].contains(&s)
        {
            problems.push(ParamProblem::new(
                "state",
                format!("`{s}` is not ready, drain or maint"),
            ));
        }
        problems
    }

    fn run(ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let weight = params.opt_integer("weight")?;
        let state = params.opt_text("state")?;
        if weight.is_none() && state.is_none() {
            return Err(Error::invalid_params("set `weight`, `state` or both"));
        }
        // Values rendered during the run were not seen by the check before it.
        if let Some(p) = Self::check_params(params).into_iter().next() {
            return Err(Error::invalid_params(format!(
                "parameter `{}`: {}",
                p.name, p.message
            )));
        }
        let t = target(params)?;
        let key = format!("previous:{t}");
        // A retried or resumed call restores what was there before the first attempt, not
        // what a half-made change left.
        let (old_weight, old_state) = match kv::original(ctx, &key) {
            Some(saved) if ctx.attempt > 1 => parse_saved(&String::from_utf8_lossy(&saved))?,
            _ => current(params)?,
        };
        let done = |o: Outcome| {
            o.output("previous_weight", old_weight)
                .output("previous_state", old_state.as_str())
        };
        let wanted = format!(
            "weight {}, {}",
            weight.unwrap_or(old_weight),
            state.unwrap_or(&old_state)
        );
        if ctx.dry_run {
            return Ok(done(Outcome::success(format!(
                "would set {t} to {wanted} (now weight {old_weight}, {old_state})"
            ))));
        }
        // Saved (durably) first: a revert after a crash mid-change still knows what to restore.
        kv::save_original(ctx, &key, format!("{old_weight} {old_state}"))?;
        log::info(&format!(
            "{t}: weight {old_weight}, {old_state} -> {wanted}"
        ));
        apply(params, weight, state)?;
        let (new_weight, new_state) = current(params)?;
        if weight.is_some_and(|w| w != new_weight) || state.is_some_and(|s| s != new_state) {
            return Err(Error::permanent(format!(
                "{t} reports weight {new_weight}, {new_state} after the change"
            )));
        }
        Ok(done(Outcome::success(format!(
            "{t}: weight {old_weight} -> {new_weight}, {old_state} -> {new_state}"
        ))))
    }

    fn revert(ctx: &Context, params: &Params, outputs: &Params) -> Result<Outcome, Error> {
        let t = target(params)?;
        let (weight, state) = match (
            outputs.get("previous_weight"),
            outputs.get("previous_state"),
        ) {
            (Some(Value::Integer(w)), Some(Value::Text(s))) => (*w, s.clone()),
            _ => {
                let saved = kv::original(ctx, &format!("previous:{t}"))
                    .and_then(|v| String::from_utf8(v).ok())
                    .ok_or_else(|| {
                        Error::permanent(format!("nothing recorded for {t}: nothing to restore"))
                    })?;
                parse_saved(&saved)?
            }
        };
        if ctx.dry_run {
            return Ok(Outcome::success(format!(
                "would restore {t} to weight {weight}, {state}"
            )));
        }
        apply(params, Some(weight), Some(&state))?;
        Ok(Outcome::success(format!(
            "restored {t} to weight {weight}, {state}"
        )))
    }
}

medic_plugin_sdk::export!(HaproxyWeight);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_plugin_sdk::testing::Harness;

    fn step() -> Harness {
        Harness::new()
            .param("admin", "127.0.0.1:9999")
            .param("backend", "web")
            .param("server", "canary")
    }

    #[test]
    fn parameters_are_refused_before_any_run() {
        let problems = step()
            .param("weight", 300)
            .param("state", "up")
            .check_params::<HaproxyWeight>();
        let names: Vec<&str> = problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["weight", "state"]);
        assert!(
            step()
                .param("weight", 256)
                .param("state", "drain")
                .check_params::<HaproxyWeight>()
                .is_empty()
        );
        // Absent (rendered only during the run): nothing to say yet.
        assert!(step().check_params::<HaproxyWeight>().is_empty());
    }

    #[test]
    fn run_refuses_what_the_check_refuses() {
        let call = step().param("weight", -1).run::<HaproxyWeight>();
        let e = call.result.unwrap_err();
        assert!(e.to_string().contains("-1 is not between 0 and 256"), "{e}");
    }
}
