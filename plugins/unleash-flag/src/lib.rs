//! `unleash-flag`: turns a feature flag on or off in one environment of an Unleash project,
//! or sets its gradual rollout (the `flexibleRollout` strategy's percentage), and reverts to
//! exactly what was there before: whether it was on, and its strategies.
//!
//! Through Unleash's admin API (an admin token, or a project token allowed to change the
//! flag): `GET /api/admin/projects/P/features/F` for the flag's state per environment,
//! `POST .../environments/E/on|off`, and `POST|PUT|DELETE .../environments/E/strategies[/ID]`.
//! Unleash adds a 100% rollout when a flag with no strategy is turned on, so a rollout is set
//! before the flag is turned on, never after.

use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, http, kv, log};
use serde_json::{Value as Json, json};

struct UnleashFlag;

/// Where a flag lives, and how to reach it.
struct Flag<'a> {
    base: String,
    token: &'a str,
    project: &'a str,
    environment: &'a str,
    name: &'a str,
}

/// A flag's state in one environment: on or off, and its strategies as Unleash gives them.
#[derive(Debug, Clone, PartialEq)]
struct State {
    enabled: bool,
    strategies: Vec<Json>,
}

impl State {
    fn to_json(&self) -> Json {
        json!({ "enabled": self.enabled, "strategies": self.strategies })
    }

    fn from_json(v: &Json) -> Option<State> {
        Some(State {
            enabled: v.get("enabled")?.as_bool()?,
            strategies: v.get("strategies")?.as_array()?.clone(),
        })
    }

    fn rollouts(&self) -> Vec<&Json> {
        self.strategies
            .iter()
            .filter(|s| s["name"] == "flexibleRollout")
            .collect()
    }

    /// The percentage users get: the single flexibleRollout's, 100 for a flag on with another
    /// kind of strategy, 0 when off.
    fn describe(&self) -> String {
        if !self.enabled {
            return "off".into();
        }
        match self.rollouts().as_slice() {
            [one] => format!(
                "on at {}%",
                one["parameters"]["rollout"].as_str().unwrap_or("?")
            ),
            _ => format!("on ({} strategies)", self.strategies.len()),
        }
    }
}

/// What a strategy is, without what Unleash assigns (ids, order): to compare a restored
/// strategy with the one it replaces.
fn essence(s: &Json) -> Json {
    json!({
        "name": s["name"],
        "parameters": s["parameters"],
        "constraints": s.get("constraints").cloned().unwrap_or(json!([])),
        "segments": s.get("segments").cloned().unwrap_or(json!([])),
        "disabled": s.get("disabled").cloned().unwrap_or(json!(false)),
    })
}

/// The body that creates or replaces a strategy like `s`.
fn strategy_body(s: &Json) -> Json {
    let mut body = essence(s);
    if let Some(title) = s.get("title").filter(|t| !t.is_null()) {
        body["title"] = title.clone();
    }
    if let Some(v) = s.get("variants").filter(|v| v.is_array()) {
        body["variants"] = v.clone();
    }
    body
}

impl<'a> Flag<'a> {
    fn of(params: &'a Params) -> Result<Flag<'a>, Error> {
        Ok(Flag {
            base: params.text("url")?.trim_end_matches('/').to_owned(),
            token: params.text("token")?,
            project: params.text("project")?,
            environment: params.text("environment")?,
            name: params.text("flag")?,
        })
    }

    fn feature_url(&self) -> String {
        format!(
            "{}/api/admin/projects/{}/features/{}",
            self.base, self.project, self.name
        )
    }

    fn env_url(&self) -> String {
        format!("{}/environments/{}", self.feature_url(), self.environment)
    }

    /// Sends a request with the token; an answer other than 2xx is a named error.
    fn call(&self, request: http::Request, what: &str) -> Result<String, Error> {
        let response = request
            .header("authorization", self.token)
            .header("accept", "application/json")
            .send()?;
        let body = response.text();
        if (200..300).contains(&response.status) {
            return Ok(body);
        }
        // Unleash answers errors as {"name": ..., "message": ...}.
        let said = serde_json::from_str::<Json>(&body)
            .ok()
            .and_then(|j| j["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().chars().take(300).collect());
        let context = format!(
            "{what} flag `{}` in project `{}`, environment `{}`",
            self.name, self.project, self.environment
        );
        Err(match response.status {
            401 => Error::permanent(format!(
                "{context}: Unleash refused the token (401): {said}; give an admin API token (or a project token for `{}`)",
                self.project
            )),
            403 => Error::permanent(format!(
                "{context}: the token may not do this (403): {said}; it needs permission to change flags in project `{}`, environment `{}`",
                self.project, self.environment
            )),
            404 => Error::permanent(format!("{context}: not found (404): {said}")),
            429 | 500..=599 => Error::transient(format!(
                "{context}: Unleash answered {} ({said}); trying again may work",
                response.status
            )),
            s => Error::permanent(format!("{context}: Unleash answered {s}: {said}")),
        })
    }

    fn state(&self) -> Result<State, Error> {
        let body = self.call(http::get(self.feature_url()), "reading")?;
        let feature: Json = serde_json::from_str(&body)
            .map_err(|e| Error::permanent(format!("Unleash answered something not JSON: {e}")))?;
        let envs = feature["environments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let env = envs
            .iter()
            .find(|e| e["name"] == self.environment)
            .ok_or_else(|| {
                let names: Vec<&str> = envs.iter().filter_map(|e| e["name"].as_str()).collect();
                Error::permanent(format!(
                    "flag `{}` in project `{}` has no environment `{}` (it has: {})",
                    self.name,
                    self.project,
                    self.environment,
                    names.join(", ")
                ))
            })?;
        Ok(State {
            enabled: env["enabled"].as_bool().unwrap_or(false),
            strategies: env["strategies"].as_array().cloned().unwrap_or_default(),
        })
    }

    fn switch(&self, on: bool) -> Result<(), Error> {
        let url = format!("{}/{}", self.env_url(), if on { "on" } else { "off" });
        self.call(
            http::post(url),
            if on { "turning on" } else { "turning off" },
        )
        .map(|_| ())
    }

    fn add_strategy(&self, body: &Json) -> Result<(), Error> {
        self.call(
            http::post(format!("{}/strategies", self.env_url()))
                .header("content-type", "application/json")
                .body(body.to_string()),
            "adding a strategy to",
        )
        .map(|_| ())
    }

    fn replace_strategy(&self, id: &str, body: &Json) -> Result<(), Error> {
        self.call(
            http::put(format!("{}/strategies/{id}", self.env_url()))
                .header("content-type", "application/json")
                .body(body.to_string()),
            "changing a strategy of",
        )
        .map(|_| ())
    }

    fn delete_strategy(&self, id: &str) -> Result<(), Error> {
        self.call(
            http::delete(format!("{}/strategies/{id}", self.env_url())),
            "removing a strategy of",
        )
        .map(|_| ())
    }

    /// Sets the rollout percentage: the flag's one flexibleRollout strategy changed, or one
    /// added (with `stickiness`) when it has none.
    fn set_rollout(&self, now: &State, percent: i64, stickiness: &str) -> Result<(), Error> {
        match now.rollouts().as_slice() {
            [] => self.add_strategy(&json!({
                "name": "flexibleRollout",
                "parameters": {
                    "rollout": percent.to_string(),
                    "stickiness": stickiness,
                    "groupId": self.name,
                },
                "constraints": [],
            })),
            [one] => {
                let id = one["id"].as_str().unwrap_or_default();
                let mut body = strategy_body(one);
                body["parameters"]["rollout"] = json!(percent.to_string());
                self.replace_strategy(id, &body)
            }
            many => Err(Error::permanent(format!(
                "flag `{}` has {} flexibleRollout strategies in `{}`; Medic sets one: remove the others in Unleash",
                self.name,
                many.len(),
                self.environment
            ))),
        }
    }

    /// Puts back exactly `target`: strategies first when it was on (so no one gets Unleash's
    /// default 100% meanwhile), the switch first when it was off.
    fn restore(&self, target: &State) -> Result<(), Error> {
        let now = self.state()?;
        if !target.enabled && now.enabled {
            self.switch(false)?;
        }
        let ids = |s: &State| -> Vec<String> {
            s.strategies
                .iter()
                .filter_map(|x| x["id"].as_str().map(str::to_owned))
                .collect()
        };
        let wanted = ids(target);
        for s in &now.strategies {
            if let Some(id) = s["id"].as_str()
                && !wanted.iter().any(|w| w == id)
            {
                self.delete_strategy(id)?;
            }
        }
        for s in &target.strategies {
            let id = s["id"].as_str().unwrap_or_default();
            match now.strategies.iter().find(|c| c["id"].as_str() == Some(id)) {
                Some(current) if essence(current) == essence(s) => {}
                Some(_) => self.replace_strategy(id, &strategy_body(s))?,
                None => self.add_strategy(&strategy_body(s))?,
            }
        }
        if target.enabled && !now.enabled {
            self.switch(true)?;
        }
        let after = self.state()?;
        let same = after.enabled == target.enabled
            && after.strategies.iter().map(essence).collect::<Vec<_>>()
                == target.strategies.iter().map(essence).collect::<Vec<_>>();
        if !same {
            return Err(Error::permanent(format!(
                "restored flag `{}` in `{}`, but Unleash reads back {} where it was {}",
                self.name,
                self.environment,
                after.to_json(),
                target.to_json()
            )));
        }
        Ok(())
    }
}

impl Plugin for UnleashFlag {
    fn manifest() -> Manifest {
        Manifest::action("unleash-flag", env!("CARGO_PKG_VERSION"))
            .describe("Turns an Unleash feature flag on or off in an environment, or sets its gradual rollout; revert restores exactly what was there")
            .param(Param::text("url").required().describe("Unleash's base URL, e.g. http://unleash:4242"))
            .param(Param::text("token").required().secret().describe("An admin API token (or a project token allowed to change the flag)"))
            .param(Param::text("project").default("default").describe("The flag's project"))
            .param(Param::text("environment").required().describe("The environment to change, e.g. production"))
            .param(Param::text("flag").required().describe("The flag's name"))
            .param(Param::text("state").default("on").describe("on | off"))
            .param(Param::integer("rollout").describe("With state = on: the percentage of users who get the flag (its flexibleRollout strategy, added if missing)"))
            .param(Param::text("stickiness").default("default").describe("The stickiness of a flexibleRollout strategy this plugin adds"))
            .capability("http")
            .capability("kv")
            .revertible()
            .dry_run()
    }

    fn run(ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let flag = Flag::of(params)?;
        let on = match params.text("state")? {
            "on" => true,
            "off" => false,
            other => {
                return Err(Error::invalid_params(format!(
                    "state must be `on` or `off`, not `{other}`"
                )));
            }
        };
        let rollout = params.opt_integer("rollout")?;
        if let Some(p) = rollout {
            if !(0..=100).contains(&p) {
                return Err(Error::invalid_params(format!(
                    "rollout is a percentage, 0 to 100, not {p}"
                )));
            }
            if !on {
                return Err(Error::invalid_params(
                    "rollout goes with state = \"on\": a flag that is off reaches no one",
                ));
            }
        }
        let now = flag.state()?;
        // Saved (durably) before the change: a revert in another process, after a crash,
        // puts back exactly this. A retried call keeps what the first attempt saw.
        let saved = kv::save_original(ctx, "state", now.to_json().to_string())?;
        let before = serde_json::from_slice::<Json>(&saved)
            .ok()
            .and_then(|j| State::from_json(&j))
            .unwrap_or_else(|| now.clone());
        let wanted = match rollout {
            Some(p) => format!("on at {p}%"),
            None if on => "on".into(),
            None => "off".into(),
        };
        let done = |o: Outcome, after: &State| {
            o.output("previous", before.describe())
                .output("enabled", after.enabled)
                .output(
                    "rollout",
                    match after.rollouts().as_slice() {
                        [one] if after.enabled => one["parameters"]["rollout"]
                            .as_str()
                            .and_then(|r| r.parse::<i64>().ok())
                            .unwrap_or(0),
                        _ if after.enabled => 100,
                        _ => 0,
                    },
                )
        };
        if ctx.dry_run {
            return Ok(done(
                Outcome::success(format!(
                    "would set flag {} in {} {wanted} (now {})",
                    flag.name,
                    flag.environment,
                    now.describe()
                )),
                &now,
            ));
        }
        log::info(&format!(
            "flag {} in {}: {} -> {wanted}",
            flag.name,
            flag.environment,
            now.describe()
        ));
        if let Some(p) = rollout {
            flag.set_rollout(&now, p, params.text("stickiness")?)?;
        }
        if now.enabled != on {
            flag.switch(on)?;
        }
        let after = flag.state()?;
        let rolled = rollout.is_none_or(|p| {
            after
                .rollouts()
                .iter()
                .any(|s| s["parameters"]["rollout"].as_str() == Some(p.to_string().as_str()))
        });
        if after.enabled != on || !rolled {
            return Err(Error::permanent(format!(
                "set flag {} in {} {wanted}, but Unleash reads back {}",
                flag.name,
                flag.environment,
                after.describe()
            )));
        }
        Ok(done(
            Outcome::success(format!(
                "flag {} in {}: {} (was {})",
                flag.name,
                flag.environment,
                after.describe(),
                before.describe()
            )),
            &after,
        ))
    }

    fn revert(ctx: &Context, params: &Params, _outputs: &Params) -> Result<Outcome, Error> {
        let flag = Flag::of(params)?;
        let target = kv::original(ctx, "state")
            .and_then(|v| serde_json::from_slice::<Json>(&v).ok())
            .and_then(|j| State::from_json(&j))
            .ok_or_else(|| {
                Error::permanent("no earlier state of the flag recorded: nothing to revert to")
            })?;
        let now = flag.state()?;
        if ctx.dry_run {
            return Ok(Outcome::success(format!(
                "would put flag {} in {} back to {} (now {})",
                flag.name,
                flag.environment,
                target.describe(),
                now.describe()
            )));
        }
        log::info(&format!(
            "flag {} in {}: {} -> back to {}",
            flag.name,
            flag.environment,
            now.describe(),
            target.describe()
        ));
        flag.restore(&target)?;
        Ok(Outcome::success(format!(
            "flag {} in {} back to {} (was {})",
            flag.name,
            flag.environment,
            target.describe(),
            now.describe()
        ))
        .output("enabled", target.enabled))
    }
}

medic_plugin_sdk::export!(UnleashFlag);
