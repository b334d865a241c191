//! The reference plugins against the real demo service on loopback.

use std::time::Duration;

use medic::demo::{DemoService, Faults};
use medic::host::{
    Call, Failure, Grants, HostGrant, KvSpace, Plugin, PluginHost, PluginSource, Sandbox, Status,
    Value,
};

use crate::support::*;

fn grants(addr: &str, kv: bool) -> Grants {
    Grants {
        http: vec![addr.parse::<HostGrant>().unwrap()],
        tcp: vec![],
        command: vec![],
        kv,
    }
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
        .collect()
}

async fn version(addr: &str) -> String {
    reqwest::get(format!("http://{addr}/version"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .trim()
        .to_owned()
}

async fn deploy_call(
    host: &PluginHost,
    plugin: &Plugin,
    addr: &str,
    version: &str,
    sandbox: &Sandbox,
    dry_run: bool,
) -> medic::host::Invocation {
    let p = params(&[
        ("url", &format!("http://{addr}/deploy")),
        ("version_url", &format!("http://{addr}/version")),
        ("version", version),
    ]);
    let mut c = ctx("deploy");
    c.dry_run = dry_run;
    host.invoke(plugin, Call::Run { params: p }, &c, sandbox)
        .await
}

#[test]
fn http_deploy_deploys_reverts_and_honours_dry_run() {
    let rt = runtime();
    rt.block_on(async {
        let svc = DemoService::start("127.0.0.1:0".parse().unwrap(), "v1", [])
            .await
            .unwrap();
        let addr = svc.addr.to_string();
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("http-deploy".into())).await;
        let sandbox = Sandbox {
            grants: grants(&addr, true).into(),
            kv: KvSpace::new(),
            ..sandbox(Duration::from_secs(5))
        };

        let dry = deploy_call(&host, &plugin, &addr, "v2", &sandbox, true).await;
        assert_eq!(dry.result.unwrap().summary, "would deploy v2 (now v1)");
        assert_eq!(version(&addr).await, "v1", "a dry run changed the service");

        let inv = deploy_call(&host, &plugin, &addr, "v2", &sandbox, false).await;
        let outcome = inv.result.unwrap();
        assert_eq!(outcome.summary, "deployed v2 (was v1)");
        assert_eq!(version(&addr).await, "v2");
        assert!(
            outcome
                .outputs
                .contains(&("previous_version".into(), Value::Text("v1".into())))
        );
        assert_eq!(
            sandbox
                .kv
                .snapshot()
                .get("previous_version@deploy")
                .map(|v| v.as_slice()),
            Some(&b"v1"[..]),
            "saved per change (step)"
        );
        let methods: Vec<&str> = inv
            .capability_uses
            .iter()
            .filter(|u| u.capability == "http")
            .map(|u| u.detail.split(' ').next().unwrap())
            .collect();
        assert_eq!(methods, ["GET", "POST", "GET"], "read, deploy, verify");

        let p = params(&[
            ("url", &format!("http://{addr}/deploy")),
            ("version_url", &format!("http://{addr}/version")),
            ("version", "v2"),
        ]);
        let revert = host
            .invoke(
                &plugin,
                Call::Revert {
                    params: p.clone(),
                    outputs: outcome.outputs.clone(),
                },
                &ctx("rollback"),
                &sandbox,
            )
            .await;
        assert_eq!(revert.result.unwrap().summary, "redeployed v1 (was v2)");
        assert_eq!(version(&addr).await, "v1");

        // Reverting again is a no-op, not an error: rollbacks must be safe to repeat.
        let again = host
            .invoke(
                &plugin,
                Call::Revert {
                    params: p,
                    outputs: outcome.outputs,
                },
                &ctx("rollback"),
                &sandbox,
            )
            .await;
        assert_eq!(again.result.unwrap().summary, "v1 is already deployed");

        // A bad version string is refused by the API: a permanent error with its answer.
        let bad = deploy_call(&host, &plugin, &addr, "v 2!", &sandbox, false).await;
        match bad.result.unwrap_err() {
            Failure::Permanent { message } => {
                assert!(message.contains("answered 400"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        svc.stop().await;
    });
}

#[test]
fn http_probe_judges_status_body_latency_and_reachability() {
    let rt = runtime();
    rt.block_on(async {
        let svc = DemoService::start("127.0.0.1:0".parse().unwrap(), "v1", ["v9".into()])
            .await
            .unwrap();
        let addr = svc.addr.to_string();
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("http-probe".into())).await;
        let sb = Sandbox {
            grants: grants(&addr, false).into(),
            ..sandbox(Duration::from_secs(5))
        };
        let probe = |extra: Vec<(String, Value)>| {
            let mut p = vec![
                (
                    "url".to_string(),
                    Value::Text(format!("http://{addr}/version")),
                ),
                ("method".into(), Value::Text("GET".into())),
                ("expect_status".into(), Value::Text("200".into())),
            ];
            for (k, v) in extra {
                p.retain(|(n, _)| *n != k);
                p.push((k, v));
            }
            let host = host.clone();
            let plugin = &plugin;
            let sb = sb.clone();
            async move {
                host.invoke(plugin, Call::Run { params: p }, &ctx("probe"), &sb)
                    .await
                    .result
            }
        };

        let ok = probe(vec![("body_contains".into(), Value::Text("v1".into()))])
            .await
            .unwrap();
        assert_eq!(ok.status, Status::Success);
        assert!(
            ok.metrics
                .iter()
                .any(|(n, v)| n == "latency_ms" && *v >= 0.0)
        );
        assert!(ok.outputs.contains(&("status".into(), Value::Integer(200))));

        let body = probe(vec![("body_contains".into(), Value::Text("v2".into()))])
            .await
            .unwrap();
        assert_eq!(body.status, Status::Failure);
        assert!(
            body.summary.contains("the body lacks \"v2\""),
            "{}",
            body.summary
        );

        let status = probe(vec![
            ("expect_status".into(), Value::Text("2xx,304".into())),
            ("url".into(), Value::Text(format!("http://{addr}/nope"))),
        ])
        .await
        .unwrap();
        assert_eq!(status.status, Status::Failure);
        assert!(
            status.summary.contains("answered 404 (expected 2xx,304)"),
            "{}",
            status.summary
        );

        let slow = probe(vec![(
            "max_latency".into(),
            Value::Duration(Duration::from_nanos(1)),
        )])
        .await
        .unwrap();
        assert_eq!(slow.status, Status::Failure);
        assert!(slow.summary.contains("(max 0 ms)"), "{}", slow.summary);

        let bad_spec = probe(vec![("expect_status".into(), Value::Text("20x0".into()))])
            .await
            .unwrap_err();
        assert!(
            matches!(bad_spec, Failure::InvalidParams { .. }),
            "{bad_spec:?}"
        );
        svc.stop().await;

        // The service is gone: an unreachable service is a failed check, not a plugin error.
        let down = probe(vec![]).await.unwrap();
        assert_eq!(down.status, Status::Failure);
        assert!(
            down.summary.contains("connection failed"),
            "{}",
            down.summary
        );
    });
}

#[test]
fn a_slow_version_is_caught_by_a_latency_bound() {
    let rt = runtime();
    rt.block_on(async {
        let faults = Faults {
            slow: ["v2".to_string()].into(),
            ..Faults::default()
        };
        let svc = DemoService::start_with("127.0.0.1:0".parse().unwrap(), "v1", faults)
            .await
            .unwrap();
        let addr = svc.addr.to_string();
        let host = host_with_cache(None);
        let deploy = load(&host, &PluginSource::Builtin("http-deploy".into())).await;
        let probe = load(&host, &PluginSource::Builtin("http-probe".into())).await;
        let sb = Sandbox {
            grants: grants(&addr, true).into(),
            ..sandbox(Duration::from_secs(5))
        };
        let check = || {
            let p = vec![
                (
                    "url".to_string(),
                    Value::Text(format!("http://{addr}/health")),
                ),
                ("method".into(), Value::Text("GET".into())),
                ("expect_status".into(), Value::Text("200".into())),
                (
                    "max_latency".into(),
                    Value::Duration(Duration::from_millis(150)),
                ),
            ];
            let (host, probe, sb) = (host.clone(), &probe, sb.clone());
            async move {
                host.invoke(probe, Call::Run { params: p }, &ctx("latency"), &sb)
                    .await
                    .result
                    .unwrap()
            }
        };
        assert_eq!(check().await.status, Status::Success);
        assert_eq!(
            deploy_call(&host, &deploy, &addr, "v2", &sb, false)
                .await
                .result
                .unwrap()
                .summary,
            "deployed v2 (was v1)"
        );
        let slow = check().await;
        assert_eq!(slow.status, Status::Failure, "{}", slow.summary);
        assert!(slow.summary.contains("(max 150 ms)"), "{}", slow.summary);
        svc.stop().await;
    });
}
