//! `elbv2-weights`: moves traffic between two target groups behind an AWS Application Load
//! Balancer listener, by setting the weights of the listener's weighted forward action
//! (`ModifyListener`), then reading them back (`DescribeListeners`) to prove the change.
//! Revert puts back the weights the listener had before.
//!
//! In a `[rollout]`: `candidate_weight = "{{ rollout.weight }}"`.

use medic_aws::{Client, Service, all, first, unescape};
use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, Value, kv, log};

struct Elbv2Weights;

static ELBV2: Service = Service {
    name: "elasticloadbalancing",
    version: "2015-12-01",
    title: "ELBv2",
};

/// The listener's forward action as it matters here: target groups with their weights, and
/// the stickiness setting (kept as it is on every change).
#[derive(Debug, Clone, PartialEq)]
struct Forward {
    groups: Vec<(String, i64)>,
    stickiness: Option<(bool, Option<i64>)>,
}

impl Forward {
    /// `arn=weight,arn=weight`: what the outputs keep for a revert.
    fn encode(&self) -> String {
        self.groups
            .iter()
            .map(|(arn, w)| format!("{arn}={w}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn decode(s: &str) -> Result<Vec<(String, i64)>, Error> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let (arn, w) = p.trim().rsplit_once('=').ok_or_else(|| {
                    Error::permanent(format!("the recorded weights `{p}` are not arn=weight"))
                })?;
                let w = w.parse::<i64>().map_err(|_| {
                    Error::permanent(format!("the recorded weight in `{p}` is not a number"))
                })?;
                Ok((arn.to_owned(), w))
            })
            .collect()
    }

    /// `blue 90%, green 10%` for people: the target group names from their ARNs.
    fn describe(&self) -> String {
        let total: i64 = self.groups.iter().map(|(_, w)| w).sum();
        self.groups
            .iter()
            .map(|(arn, w)| {
                let name = arn.split('/').nth(1).unwrap_or(arn);
                if total > 0 {
                    format!("{name} {}%", w * 100 / total)
                } else {
                    format!("{name} 0")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn weight_of(&self, arn: &str) -> Option<i64> {
        self.groups.iter().find(|(a, _)| a == arn).map(|(_, w)| *w)
    }
}

fn read(client: &Client, listener: &str) -> Result<Forward, Error> {
    let xml = client.call(
        "DescribeListeners",
        &[("ListenerArns.member.1".into(), listener.into())],
    )?;
    let listeners = first(&xml, "Listeners").unwrap_or("");
    let Some(found) = all(listeners, "member").into_iter().next() else {
        return Err(Error::permanent(format!("listener {listener} not found")));
    };
    let actions = first(found, "DefaultActions").unwrap_or("");
    let forward = all(actions, "member")
        .into_iter()
        .find(|a| first(a, "Type") == Some("forward"))
        .ok_or_else(|| {
            Error::permanent(format!(
                "listener {listener} does not forward to target groups (its default action is {})",
                all(actions, "member")
                    .first()
                    .and_then(|a| first(a, "Type"))
                    .unwrap_or("missing")
            ))
        })?;
    let mut groups = Vec::new();
    let stickiness = match first(forward, "ForwardConfig") {
        Some(config) => {
            for g in all(first(config, "TargetGroups").unwrap_or(""), "member") {
                let arn = first(g, "TargetGroupArn").map(unescape).unwrap_or_default();
                // A group listed without a weight has weight 1 (the API's default).
                let w = first(g, "Weight")
                    .and_then(|w| w.trim().parse().ok())
                    .unwrap_or(1);
                groups.push((arn, w));
            }
            first(config, "TargetGroupStickinessConfig").map(|s| {
                (
                    first(s, "Enabled") == Some("true"),
                    first(s, "DurationSeconds").and_then(|d| d.trim().parse().ok()),
                )
            })
        }
        None => None,
    };
    // The older form: one target group on the action itself.
    if groups.is_empty()
        && let Some(arn) = first(forward, "TargetGroupArn")
    {
        groups.push((unescape(arn), 1));
    }
    Ok(Forward { groups, stickiness })
}

fn write(client: &Client, listener: &str, wanted: &Forward) -> Result<(), Error> {
    let p = "DefaultActions.member.1";
    let mut args: Vec<(String, String)> = vec![
        ("ListenerArn".into(), listener.into()),
        (format!("{p}.Type"), "forward".into()),
    ];
    for (i, (arn, w)) in wanted.groups.iter().enumerate() {
        let m = format!("{p}.ForwardConfig.TargetGroups.member.{}", i + 1);
        args.push((format!("{m}.TargetGroupArn"), arn.clone()));
        args.push((format!("{m}.Weight"), w.to_string()));
    }
    if let Some((enabled, duration)) = wanted.stickiness {
        let s = format!("{p}.ForwardConfig.TargetGroupStickinessConfig");
        args.push((format!("{s}.Enabled"), enabled.to_string()));
        if let Some(d) = duration {
            args.push((format!("{s}.DurationSeconds"), d.to_string()));
        }
    }
    client.call("ModifyListener", &args)?;
    let now = read(client, listener)?;
    let mut got = now.groups.clone();
    let mut want = wanted.groups.clone();
    got.sort();
    want.sort();
    if got != want {
        return Err(Error::permanent(format!(
            "the listener reports {} after the change to {}",
            now.describe(),
            wanted.describe()
        )));
    }
    Ok(())
}

impl Plugin for Elbv2Weights {
    fn manifest() -> Manifest {
        medic_aws::params(
            Manifest::action("elbv2-weights", env!("CARGO_PKG_VERSION"))
                .describe("Sets the weights of an ALB listener's forward action between a stable and a candidate target group; revert restores the previous weights"),
        )
        .param(Param::text("listener_arn").required().describe("The listener whose default action forwards to both target groups"))
        .param(Param::text("stable_target_group").required().describe("ARN of the target group serving the current version"))
        .param(Param::text("candidate_target_group").required().describe("ARN of the target group serving the new version"))
        .param(Param::integer("candidate_weight").required().describe("Percent of requests for the candidate (0-100); the stable group gets the rest"))
        .capability("http")
        .capability("kv")
        .revertible()
        .dry_run()
    }

    fn run(ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let client = Client::new(&ELBV2, params)?;
        let listener = params.text("listener_arn")?;
        let (stable, candidate) = (
            params.text("stable_target_group")?,
            params.text("candidate_target_group")?,
        );
        if stable == candidate {
            return Err(Error::invalid_params(
                "stable_target_group and candidate_target_group are the same group",
            ));
        }
        let weight = params.integer("candidate_weight")?;
        if !(0..=100).contains(&weight) {
            return Err(Error::invalid_params(format!(
                "parameter `candidate_weight`: {weight} is not a percent (0-100)"
            )));
        }
        let now = read(&client, listener)?;
        // A retried or resumed call restores what was there before the first attempt, not
        // what a half-made change left.
        let previous = match kv::original(ctx, "previous_weights") {
            Some(saved) if ctx.attempt > 1 => Forward {
                groups: Forward::decode(&String::from_utf8_lossy(&saved))?,
                stickiness: now.stickiness,
            },
            _ => now,
        };
        let wanted = Forward {
            groups: vec![
                (stable.to_owned(), 100 - weight),
                (candidate.to_owned(), weight),
            ],
            stickiness: previous.stickiness,
        };
        let done = |o: Outcome| {
            o.output("previous_weights", previous.encode())
                .output("weights", wanted.encode())
                .output("candidate_weight", weight)
        };
        let same = previous.groups.len() == 2
            && previous.weight_of(stable) == Some(100 - weight)
            && previous.weight_of(candidate) == Some(weight);
        if same {
            return Ok(done(Outcome::success(format!(
                "weights already {}",
                wanted.describe()
            ))));
        }
        if ctx.dry_run {
            return Ok(done(Outcome::success(format!(
                "would set weights to {} (now {})",
                wanted.describe(),
                previous.describe()
            ))));
        }
        // Saved (durably) first: a revert after a crash mid-change still knows what to restore.
        kv::save_original(ctx, "previous_weights", previous.encode())?;
        log::info(&format!(
            "listener weights {} -> {}",
            previous.describe(),
            wanted.describe()
        ));
        write(&client, listener, &wanted)?;
        Ok(done(Outcome::success(format!(
            "weights now {} (were {})",
            wanted.describe(),
            previous.describe()
        ))))
    }

    fn revert(ctx: &Context, params: &Params, outputs: &Params) -> Result<Outcome, Error> {
        let client = Client::new(&ELBV2, params)?;
        let listener = params.text("listener_arn")?;
        let saved = match outputs.get("previous_weights") {
            Some(Value::Text(t)) => t.clone(),
            _ => kv::original(ctx, "previous_weights")
                .and_then(|v| String::from_utf8(v).ok())
                .ok_or_else(|| {
                    Error::permanent("no previous weights recorded: nothing to restore")
                })?,
        };
        let now = read(&client, listener)?;
        let previous = Forward {
            groups: Forward::decode(&saved)?,
            stickiness: now.stickiness,
        };
        if previous.groups.is_empty() {
            return Err(Error::permanent("the recorded weights are empty"));
        }
        let mut a = now.groups.clone();
        let mut b = previous.groups.clone();
        a.sort();
        b.sort();
        if a == b {
            return Ok(Outcome::success(format!(
                "weights already {}",
                previous.describe()
            )));
        }
        if ctx.dry_run {
            return Ok(Outcome::success(format!(
                "would restore weights {}",
                previous.describe()
            )));
        }
        write(&client, listener, &previous)?;
        Ok(Outcome::success(format!(
            "restored weights {} (were {})",
            previous.describe(),
            now.describe()
        )))
    }
}

medic_plugin_sdk::export!(Elbv2Weights);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use medic_plugin_sdk::testing::{Harness, response};
    use medic_plugin_sdk::{Error, Status};

    use super::Elbv2Weights;

    const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/web/1/2";
    const BLUE: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/blue/3";
    const GREEN: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/green/4";

    fn describe(weights: &[(String, i64)]) -> String {
        let groups: String = weights
            .iter()
            .map(|(a, w)| {
                format!("<member><TargetGroupArn>{a}</TargetGroupArn><Weight>{w}</Weight></member>")
            })
            .collect();
        format!(
            "<DescribeListenersResponse><DescribeListenersResult><Listeners><member><ListenerArn>{LISTENER}</ListenerArn><DefaultActions><member><Type>forward</Type><ForwardConfig><TargetGroups>{groups}</TargetGroups><TargetGroupStickinessConfig><Enabled>true</Enabled><DurationSeconds>300</DurationSeconds></TargetGroupStickinessConfig></ForwardConfig></member></DefaultActions></member></Listeners></DescribeListenersResult></DescribeListenersResponse>"
        )
    }

    /// A step's parameters, against a fake endpoint.
    fn step() -> Harness {
        Harness::new()
            .param("region", "us-east-1")
            .param("endpoint", "http://elb.test")
            .param("access_key_id", "AKID")
            .param("secret_access_key", "SECRET")
            .param("listener_arn", LISTENER)
            .param("stable_target_group", BLUE)
            .param("candidate_target_group", GREEN)
    }

    /// An ELBv2 API in memory: one listener whose weights ModifyListener sets.
    fn elb(state: &Rc<RefCell<Vec<(String, i64)>>>) -> Harness {
        let s = state.clone();
        step().http_handler(move |call| {
            let body = call.body_text();
            let decoded = body.replace("%3A", ":").replace("%2F", "/");
            if decoded.contains("Action=ModifyListener") {
                assert!(
                    decoded.contains("TargetGroupStickinessConfig.Enabled=true"),
                    "{decoded}"
                );
                assert!(
                    decoded.contains("TargetGroupStickinessConfig.DurationSeconds=300"),
                    "{decoded}"
                );
                let mut groups = Vec::new();
                for i in 1.. {
                    let key = format!("TargetGroups.member.{i}.TargetGroupArn=");
                    let Some(at) = decoded.find(&key) else { break };
                    let arn = decoded[at + key.len()..]
                        .split('&')
                        .next()
                        .unwrap()
                        .to_owned();
                    let wkey = format!("TargetGroups.member.{i}.Weight=");
                    let wat = decoded.find(&wkey).unwrap();
                    let w = decoded[wat + wkey.len()..]
                        .split('&')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    groups.push((arn, w));
                }
                *s.borrow_mut() = groups;
                return Some(Ok(response(200, "<ModifyListenerResponse/>")));
            }
            Some(Ok(response(200, describe(&s.borrow()))))
        })
    }

    #[test]
    fn shifts_weights_reads_them_back_and_reverts() {
        let state = Rc::new(RefCell::new(vec![
            (BLUE.to_owned(), 100),
            (GREEN.to_owned(), 0),
        ]));
        let mut h = elb(&state).param("candidate_weight", 10i64);
        let run = h.run::<Elbv2Weights>();
        assert_eq!(run.outcome().status, Status::Success, "{:?}", run.outcome());
        assert_eq!(
            run.outcome().summary,
            "weights now blue 90%, green 10% (were blue 100%, green 0%)"
        );
        assert_eq!(
            *state.borrow(),
            [(BLUE.to_owned(), 90), (GREEN.to_owned(), 10)]
        );
        // Every call is signed; the secret is never sent.
        for call in &run.http {
            let auth = call
                .headers
                .iter()
                .find(|(k, _)| k == "authorization")
                .map(|(_, v)| v.as_str())
                .unwrap();
            assert!(
                auth.contains("/us-east-1/elasticloadbalancing/aws4_request"),
                "{auth}"
            );
            assert!(!auth.contains("SECRET") && !call.body_text().contains("SECRET"));
        }
        let revert = h.revert::<Elbv2Weights>(run.outputs());
        assert_eq!(
            revert.outcome().summary,
            "restored weights blue 100%, green 0% (were blue 90%, green 10%)"
        );
        assert_eq!(
            *state.borrow(),
            [(BLUE.to_owned(), 100), (GREEN.to_owned(), 0)]
        );
    }

    #[test]
    fn refuses_bad_weights_and_reports_aws_errors_by_code() {
        let state = Rc::new(RefCell::new(vec![(BLUE.to_owned(), 100)]));
        let mut h = elb(&state).param("candidate_weight", 120i64);
        assert!(
            matches!(h.run::<Elbv2Weights>().error(), Error::InvalidParams(m) if m.contains("120"))
        );

        let canned = |status: u16, body: &str| {
            step().param("candidate_weight", 10i64).http(
                "POST",
                "http://elb.test/",
                response(status, body.to_owned()),
            )
        };
        let mut h = canned(
            400,
            "<ErrorResponse><Error><Type>Sender</Type><Code>ListenerNotFound</Code><Message>The specified listener does not exist.</Message></Error></ErrorResponse>",
        );
        let call = h.run::<Elbv2Weights>();
        assert!(
            matches!(call.error(), Error::Permanent(m) if m == "ELBv2 DescribeListeners: ListenerNotFound: The specified listener does not exist."),
            "{:?}",
            call.error()
        );
        let mut h = canned(
            400,
            "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>",
        );
        assert!(matches!(
            h.run::<Elbv2Weights>().error(),
            Error::Transient(_)
        ));
        let mut h = canned(503, "");
        assert!(
            matches!(h.run::<Elbv2Weights>().error(), Error::Transient(m) if m == "ELBv2 DescribeListeners answered HTTP 503")
        );
    }
}
