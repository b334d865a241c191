//! `cloudwatch-alarm`: fails while any of the named CloudWatch alarms is in ALARM, the way
//! CodeDeploy stops a deployment on an alarm. A name that matches no alarm is an error (a
//! typo must not pass for "no alarm"). INSUFFICIENT_DATA counts as `insufficient_data` says.

use medic_aws::{Client, Service, all, first, unescape};
use medic_plugin_sdk::{Context, Error, Manifest, Outcome, Param, Params, Plugin, log};

struct CloudwatchAlarm;

static CLOUDWATCH: Service = Service {
    name: "monitoring",
    version: "2010-08-01",
    title: "CloudWatch",
};

struct Alarm {
    name: String,
    state: String,
    reason: String,
}

fn describe(client: &Client, names: &[String]) -> Result<Vec<Alarm>, Error> {
    let mut args: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("AlarmNames.member.{}", i + 1), n.clone()))
        .collect();
    // Without AlarmTypes only metric alarms are returned.
    args.push(("AlarmTypes.member.1".into(), "MetricAlarm".into()));
    args.push(("AlarmTypes.member.2".into(), "CompositeAlarm".into()));
    args.push(("MaxRecords".into(), "100".into()));
    let xml = client.call("DescribeAlarms", &args)?;
    let mut out = Vec::new();
    for section in ["MetricAlarms", "CompositeAlarms"] {
        for a in all(first(&xml, section).unwrap_or(""), "member") {
            out.push(Alarm {
                name: first(a, "AlarmName").map(unescape).unwrap_or_default(),
                state: first(a, "StateValue").unwrap_or("").to_owned(),
                reason: first(a, "StateReason").map(unescape).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

impl Plugin for CloudwatchAlarm {
    fn manifest() -> Manifest {
        medic_aws::params(
            Manifest::check("cloudwatch-alarm", env!("CARGO_PKG_VERSION")).describe(
                "Fails while any of the named CloudWatch alarms (metric or composite) is in ALARM",
            ),
        )
        .param(
            Param::text_list("alarms")
                .required()
                .describe("Alarm names (up to 100)"),
        )
        .param(
            Param::text("insufficient_data").default("ok").describe(
                "What INSUFFICIENT_DATA means: ok (as CodeDeploy), inconclusive, or fail",
            ),
        )
        .capability("http")
    }

    fn run(_ctx: &Context, params: &Params) -> Result<Outcome, Error> {
        let names = params.text_list("alarms")?;
        if names.is_empty() || names.len() > 100 {
            return Err(Error::invalid_params(format!(
                "parameter `alarms`: between 1 and 100 names, not {}",
                names.len()
            )));
        }
        let insufficient = params.text("insufficient_data")?;
        if !matches!(insufficient, "ok" | "inconclusive" | "fail") {
            return Err(Error::invalid_params(format!(
                "parameter `insufficient_data`: `{insufficient}` is not ok, inconclusive or fail"
            )));
        }
        let client = Client::new(&CLOUDWATCH, params)?;
        let alarms = describe(&client, names)?;
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !alarms.iter().any(|a| &a.name == *n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Error::permanent(format!(
                "no such alarm{}: {}",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            )));
        }
        let in_state =
            |s: &str| -> Vec<&Alarm> { alarms.iter().filter(|a| a.state == s).collect() };
        let alarming = in_state("ALARM");
        let unknown = in_state("INSUFFICIENT_DATA");
        for a in &alarms {
            log::info(&format!("{}: {} ({})", a.name, a.state, a.reason));
        }
        let states = alarms
            .iter()
            .map(|a| format!("{}={}", a.name, a.state))
            .collect::<Vec<_>>()
            .join(",");
        let list = |v: &[&Alarm]| v.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
        let outcome = if !alarming.is_empty() {
            Outcome::failure(format!(
                "in ALARM: {}",
                alarming
                    .iter()
                    .map(|a| format!("{} ({})", a.name, a.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        } else if !unknown.is_empty() && insufficient != "ok" {
            let summary = format!("insufficient data: {}", list(&unknown).join(", "));
            if insufficient == "fail" {
                Outcome::failure(summary)
            } else {
                Outcome::inconclusive(summary)
            }
        } else {
            Outcome::success(format!(
                "{} alarm{} not in ALARM{}",
                alarms.len(),
                if alarms.len() == 1 { "" } else { "s" },
                if unknown.is_empty() {
                    String::new()
                } else {
                    format!(" ({} without data)", unknown.len())
                }
            ))
        };
        Ok(outcome
            .output("alarming", list(&alarming))
            .output("states", states)
            .metric("alarms_in_alarm", alarming.len() as f64))
    }
}

medic_plugin_sdk::export!(CloudwatchAlarm);

#[cfg(test)]
mod tests {
    use medic_plugin_sdk::testing::{Harness, response};
    use medic_plugin_sdk::{Error, Status};

    use super::CloudwatchAlarm;

    fn alarm(name: &str, state: &str) -> String {
        format!(
            "<member><AlarmName>{name}</AlarmName><StateValue>{state}</StateValue><StateReason>Threshold Crossed: 7 &gt; 5</StateReason></member>"
        )
    }

    fn cw(alarms: &[String], names: &[&str]) -> Harness {
        Harness::new()
            .param("region", "eu-west-1")
            .param("endpoint", "http://cw.test")
            .param("access_key_id", "AKID")
            .param("secret_access_key", "SECRET")
            .param("alarms", names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .http(
                "POST",
                "http://cw.test/",
                response(200, format!("<DescribeAlarmsResponse><DescribeAlarmsResult><CompositeAlarms/><MetricAlarms>{}</MetricAlarms></DescribeAlarmsResult></DescribeAlarmsResponse>", alarms.concat())),
            )
    }

    #[test]
    fn an_alarm_in_alarm_fails_the_check_and_says_why() {
        let mut h = cw(
            &[alarm("web-5xx", "ALARM"), alarm("latency", "OK")],
            &["web-5xx", "latency"],
        );
        let call = h.run::<CloudwatchAlarm>();
        assert_eq!(call.outcome().status, Status::Failure);
        assert_eq!(
            call.outcome().summary,
            "in ALARM: web-5xx (Threshold Crossed: 7 > 5)"
        );
        let body = call.http[0].body_text();
        assert!(
            body.contains("Action=DescribeAlarms") && body.contains("AlarmNames.member.2=latency"),
            "{body}"
        );

        let mut h = cw(&[alarm("latency", "OK")], &["latency"]);
        assert_eq!(h.run::<CloudwatchAlarm>().outcome().status, Status::Success);
    }

    #[test]
    fn unknown_names_are_errors_and_missing_data_is_configurable() {
        let mut h = cw(&[alarm("latency", "OK")], &["latency", "lantecy"]);
        assert!(
            matches!(h.run::<CloudwatchAlarm>().error(), Error::Permanent(m) if m == "no such alarm: lantecy")
        );

        let mut h = cw(&[alarm("latency", "INSUFFICIENT_DATA")], &["latency"]);
        assert_eq!(
            h.run::<CloudwatchAlarm>().outcome().summary,
            "1 alarm not in ALARM (1 without data)"
        );
        let mut h = cw(&[alarm("latency", "INSUFFICIENT_DATA")], &["latency"])
            .param("insufficient_data", "inconclusive");
        assert_eq!(
            h.run::<CloudwatchAlarm>().outcome().status,
            Status::Inconclusive
        );
    }
}
