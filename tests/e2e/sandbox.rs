//! Hostile plugins: each misbehaviour ends as its own named failure, within the deadline plus
//! 20%, and the host keeps working for the next call.

use std::time::{Duration, Instant};

use medic::host::{Failure, HostGrant, Placement, Sandbox, Status, Value};

use crate::support::*;

const DEADLINE: Duration = Duration::from_millis(1500);

/// Runs the hostile plugin in `mode` on the caller's thread and on the host's call threads
/// (where a fleet's targets run): the same failure either way. Then proves the same host
/// still runs a healthy call. Returns the call on the caller's thread and the longer time.
fn hostile(
    mode: &str,
    extra: &[(&str, Value)],
    sandbox: Sandbox,
) -> (medic::host::Invocation, Duration) {
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let plugin = load(&host, &hostile_source()).await;
        let mut params = vec![("mode", text(mode))];
        params.extend(extra.iter().cloned());
        let mut took = Duration::ZERO;
        let mut made = Vec::new();
        for placement in [Placement::Workers, Placement::Here] {
            let started = Instant::now();
            let inv = host
                .invoke_on(
                    &plugin,
                    run_call(&params),
                    ctx(mode),
                    sandbox.clone(),
                    placement,
                )
                .await;
            took = took.max(started.elapsed());
            made.push(inv);
        }
        let (here, workers) = (made.pop().unwrap(), made.pop().unwrap());
        assert_eq!(
            format!("{:?}", here.result),
            format!("{:?}", workers.result),
            "{mode}: the call threads gave another result"
        );
        assert_eq!(
            here.logs.len(),
            workers.logs.len(),
            "{mode}: the call threads kept other logs"
        );
        let next = host
            .invoke(
                &plugin,
                run_call(&[("mode", text("ok"))]),
                &ctx("next"),
                &sandbox,
            )
            .await;
        assert_eq!(
            next.result.as_ref().map(|o| o.status).ok(),
            Some(Status::Success),
            "the next call failed after {mode}: {:?}",
            next.result
        );
        (here, took)
    })
}

fn assert_within(took: Duration, deadline: Duration) {
    let bound = deadline.mul_f64(1.2);
    assert!(
        took <= bound,
        "took {took:?}, more than the deadline {deadline:?} + 20%"
    );
}

#[test]
fn infinite_loop_times_out() {
    let (inv, took) = hostile("loop", &[], sandbox(DEADLINE));
    assert_eq!(
        inv.result.unwrap_err(),
        Failure::Timeout { after: DEADLINE }
    );
    assert!(took >= DEADLINE, "stopped before its deadline: {took:?}");
    assert_within(took, DEADLINE);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let sb = Sandbox {
        memory: 32 << 20,
        ..sandbox(DEADLINE)
    };
    let (inv, took) = hostile("memory", &[], sb);
    match inv.result.unwrap_err() {
        Failure::MemoryLimit { limit, requested } => {
            assert_eq!(limit, 32 << 20);
            assert!(requested > limit);
        }
        other => panic!("expected a memory limit failure, got {other:?}"),
    }
    assert_within(took, DEADLINE);
}

#[test]
fn runaway_recursion_overflows_the_stack() {
    let (inv, took) = hostile("recursion", &[], sandbox(DEADLINE));
    assert_eq!(inv.result.unwrap_err(), Failure::StackOverflow);
    assert_within(took, DEADLINE);
}

#[test]
fn panic_message_is_captured() {
    let (inv, took) = hostile("panic", &[], sandbox(DEADLINE));
    match inv.result.unwrap_err() {
        Failure::Panic { message } => {
            assert!(
                message.starts_with("hostile plugin panics on purpose (at "),
                "{message}"
            );
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert!(inv.stderr.contains("panicked at"), "stderr: {}", inv.stderr);
    assert_within(took, DEADLINE);
}

#[test]
fn log_flood_is_bounded() {
    let (inv, took) = hostile("log-flood", &[], sandbox(DEADLINE));
    assert_eq!(
        inv.result.unwrap_err(),
        Failure::Timeout { after: DEADLINE }
    );
    // Bounded by count and by bytes: 10 KB lines cut to 4 KiB reach the 1 MiB budget first.
    let kept: usize = inv.logs.iter().map(|l| l.message.len()).sum();
    assert!(inv.logs.len() <= medic::host::caps::MAX_LOG_LINES);
    assert!(
        kept <= medic::host::caps::MAX_LOG_BYTES_PER_CALL
            + medic::host::caps::MAX_LOG_LINE_BYTES
            + 20,
        "{kept} bytes of log kept"
    );
    assert!(inv.logs.len() >= 200, "only {} lines kept", inv.logs.len());
    assert!(inv.logs_dropped > 0, "the flood was not counted");
    let longest = inv.logs.iter().map(|l| l.message.len()).max().unwrap();
    assert!(
        longest <= medic::host::caps::MAX_LOG_LINE_BYTES + 20,
        "a line of {longest} bytes was kept"
    );
    assert!(inv.logs[0].message.ends_with("[truncated]"));
    assert_within(took, DEADLINE);
}

#[test]
fn stderr_flood_is_bounded_and_harmless() {
    let (inv, took) = hostile("stderr-flood", &[], sandbox(DEADLINE));
    assert_eq!(
        inv.result.unwrap_err(),
        Failure::Timeout { after: DEADLINE }
    );
    assert!(
        inv.stderr.len() <= 2 * 16 * 1024,
        "kept {} bytes of stderr",
        inv.stderr.len()
    );
    assert!(inv.stderr.contains("yyyy"));
    assert_within(took, DEADLINE);
}

#[test]
fn request_to_an_ungranted_host_is_denied_without_traffic() {
    let rt = runtime();
    rt.block_on(async {
        let granted = tiny_server(200, "ok").await;
        let other = tiny_server(200, "secret").await;
        let host = host_with_cache(None);
        let plugin = load(&host, &hostile_source()).await;
        let sb = Sandbox {
            grants: medic::host::Grants {
                http: vec![granted.addr.to_string().parse::<HostGrant>().unwrap()],
                tcp: vec![],
                command: vec![],
                kv: false,
            }
            .into(),
            ..sandbox(DEADLINE)
        };
        let url = format!("http://{}/steal", other.addr);
        let started = Instant::now();
        let inv = host
            .invoke(
                &plugin,
                run_call(&[("mode", text("http")), ("url", text(&url))]),
                &ctx("denied"),
                &sb,
            )
            .await;
        assert_within(started.elapsed(), DEADLINE);
        match inv.result.unwrap_err() {
            Failure::Denied { message } => {
                assert!(message.contains("host not granted"), "{message}");
                assert!(message.contains(&granted.addr.to_string()), "{message}");
            }
            other => panic!("expected denied, got {other:?}"),
        }
        assert_eq!(
            other.hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the ungranted host was contacted"
        );
        let used = &inv.capability_uses[0];
        assert!(!used.allowed);
        assert_eq!(used.detail, format!("GET {}/steal", other.addr));

        // The same plugin with the granted host works, and the use is recorded.
        let url = format!("http://{}/ok?token=hidden", granted.addr);
        let inv = host
            .invoke(
                &plugin,
                run_call(&[("mode", text("http")), ("url", text(&url))]),
                &ctx("granted"),
                &sb,
            )
            .await;
        assert_eq!(inv.result.unwrap().summary, "got 200");
        assert_eq!(inv.capability_uses[0].result, "200");
        assert!(
            !inv.capability_uses[0].detail.contains("hidden"),
            "the query string was recorded"
        );
    });
}

#[test]
fn http_without_any_grant_is_denied() {
    let (inv, _) = hostile(
        "http",
        &[("url", text("http://127.0.0.1:1/"))],
        sandbox(DEADLINE),
    );
    match inv.result.unwrap_err() {
        Failure::Denied { message } => {
            assert!(message.contains("http is not granted"), "{message}")
        }
        other => panic!("expected denied, got {other:?}"),
    }
}

#[test]
fn kv_without_grant_is_denied_and_with_grant_persists_across_calls() {
    let (inv, _) = hostile("kv", &[], sandbox(DEADLINE));
    match inv.result.unwrap_err() {
        Failure::Denied { message } => assert!(message.contains("kv is not granted"), "{message}"),
        other => panic!("expected denied, got {other:?}"),
    }
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let plugin = load(&host, &hostile_source()).await;
        let sb = Sandbox {
            grants: medic::host::Grants {
                http: vec![],
                tcp: vec![],
                command: vec![],
                kv: true,
            }
            .into(),
            ..sandbox(DEADLINE)
        };
        for expected in 0..3i64 {
            let inv = host
                .invoke(&plugin, run_call(&[("mode", text("kv"))]), &ctx("kv"), &sb)
                .await;
            let outcome = inv.result.unwrap();
            assert_eq!(
                outcome.outputs,
                vec![("seen".to_string(), Value::Integer(expected))]
            );
        }
    });
}

#[test]
fn sleep_past_the_deadline_is_cut() {
    let an_hour = Value::Duration(Duration::from_secs(3600));
    let (inv, took) = hostile("sleep", &[("sleep", an_hour)], sandbox(DEADLINE));
    assert_eq!(
        inv.result.unwrap_err(),
        Failure::Timeout { after: DEADLINE }
    );
    assert!(took >= DEADLINE);
    assert_within(took, DEADLINE);
}

#[test]
fn sleep_within_the_deadline_completes() {
    let (inv, took) = hostile(
        "sleep",
        &[("sleep", Value::Duration(Duration::from_millis(100)))],
        sandbox(DEADLINE),
    );
    assert_eq!(inv.result.unwrap().summary, "woke up");
    assert!(took >= Duration::from_millis(100));
}

#[test]
fn plugin_errors_keep_their_kind() {
    let (inv, _) = hostile("error", &[], sandbox(DEADLINE));
    assert_eq!(
        inv.result.unwrap_err(),
        Failure::Permanent {
            message: "erroring on request".into()
        }
    );
    let (inv, _) = hostile("nonsense", &[], sandbox(DEADLINE));
    assert_eq!(
        inv.result.unwrap_err(),
        Failure::InvalidParams {
            message: "unknown mode nonsense".into()
        }
    );
}

#[test]
fn calls_share_nothing_but_kv() {
    // A fresh instance per call: a plugin that trapped leaves nothing behind for the next.
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let plugin = load(&host, &hostile_source()).await;
        for mode in ["panic", "memory", "ok", "recursion", "ok"] {
            let sb = Sandbox {
                memory: 16 << 20,
                ..sandbox(DEADLINE)
            };
            let inv = host
                .invoke(&plugin, run_call(&[("mode", text(mode))]), &ctx(mode), &sb)
                .await;
            assert_eq!(inv.result.is_ok(), mode == "ok", "{mode}: {:?}", inv.result);
        }
    });
}

#[test]
fn commands_run_only_as_granted_with_an_empty_environment_and_die_at_their_timeout() {
    use medic::host::{CommandGrant, PluginSource};
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("command".into())).await;
        let grants = medic::host::Grants {
            command: vec![
                CommandGrant::new("/bin/echo", &["hello".into(), "[a-z]+".into()]).unwrap(),
                CommandGrant::new("/usr/bin/env", &[]).unwrap(),
                CommandGrant::new("/bin/false", &[]).unwrap(),
                CommandGrant::new("/bin/sleep", &["[0-9]+".into()]).unwrap(),
            ],
            ..Default::default()
        };
        let sb = Sandbox { grants: grants.into(), ..sandbox(Duration::from_secs(5)) };
        // On the caller's thread, and on the call threads (a fleet's targets).
        for placement in [Placement::Here, Placement::Workers] {
            let run = |program: &str, args: &[&str], extra: Vec<(&str, Value)>| {
                let mut params = vec![("program", text(program)), ("args", Value::TextList(args.iter().map(|a| a.to_string()).collect())), ("expect_exit", Value::Integer(0))];
                params.extend(extra);
                let call = run_call(&params);
                let (host, plugin, sb) = (host.clone(), &plugin, sb.clone());
                async move { host.invoke_on(plugin, call, ctx("cmd"), sb, placement).await }
            };
            let ok = run("/bin/echo", &["hello", "world"], vec![]).await;
            let outcome = ok.result.unwrap();
            assert_eq!(outcome.summary, "/bin/echo hello world: exit 0");
            assert!(outcome.outputs.contains(&("stdout".into(), Value::Text("hello world".into()))));
            assert_eq!(ok.capability_uses[0].detail, "/bin/echo hello world");

            for (program, args) in [("/bin/echo", vec!["hello", "WORLD"]), ("/bin/echo", vec!["hello"]), ("/bin/rm", vec!["-rf", "x"])] {
                match run(program, &args, vec![]).await.result.unwrap_err() {
                    Failure::Denied { message } => assert!(message.contains("not an allowed program"), "{message}"),
                    other => panic!("{program} {args:?}: {other:?}"),
                }
            }
            // No ambient environment reaches the program.
            let env = run("/usr/bin/env", &[], vec![]).await.result.unwrap();
            assert!(env.outputs.contains(&("stdout".into(), Value::Text("PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()))), "{:?}", env.outputs);
            let failed = run("/bin/false", &[], vec![]).await.result.unwrap();
            assert_eq!(failed.status, Status::Failure);
            assert!(failed.summary.contains("exit 1 (expected 0)"), "{}", failed.summary);

            let started = Instant::now();
            let slow = run("/bin/sleep", &["30"], vec![("timeout", Value::Duration(Duration::from_millis(300)))]).await;
            assert!(matches!(slow.result, Err(Failure::Transient { ref message }) if message.contains("killed")), "{:?}", slow.result);
            assert!(started.elapsed() < Duration::from_secs(3), "the command was not killed: {:?}", started.elapsed());
        }
    });
}

#[test]
fn a_granted_shell_leaves_no_process_behind_at_its_deadline_or_its_end() {
    use medic::host::{CommandGrant, PluginSource};
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let plugin = load(&host, &PluginSource::Builtin("command".into())).await;
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let grants = medic::host::Grants {
            command: vec![CommandGrant::new("/bin/sh", &["-c".into(), ".*".into()]).unwrap()],
            ..Default::default()
        };
        let sb = Sandbox {
            grants: grants.into(),
            ..sandbox(Duration::from_secs(5))
        };
        // One shell ends at once, one is cut by its timeout; each leaves a background sleep.
        // On the caller's thread, and on the call threads (a fleet's targets).
        let shells = [
            (format!("sleep 60 & echo $! >> {}", pids.display()), None),
            (
                format!("sleep 60 & echo $! >> {}; sleep 30", pids.display()),
                Some(Duration::from_millis(300)),
            ),
        ];
        let placed = [Placement::Here, Placement::Workers]
            .into_iter()
            .flat_map(|p| shells.iter().cloned().map(move |s| (p, s)));
        for (placement, (script, timeout)) in placed {
            let mut params = vec![
                ("program", text("/bin/sh")),
                ("args", Value::TextList(vec!["-c".into(), script])),
                ("expect_exit", Value::Integer(0)),
            ];
            if let Some(t) = timeout {
                params.push(("timeout", Value::Duration(t)));
            }
            let inv = host
                .invoke_on(&plugin, run_call(&params), ctx("sh"), sb.clone(), placement)
                .await;
            assert_eq!(inv.capability_uses.len(), 1, "{:?}", inv.result);
            if timeout.is_none() {
                // Had the call waited for what the shell left behind (holding its output
                // open), it would have ended at the call's deadline, as a timeout.
                let outcome = inv.result.expect("the shell's own exit ends the call");
                assert_eq!(outcome.status, Status::Success, "{}", outcome.summary);
            }
        }
        let text = std::fs::read_to_string(&pids).unwrap();
        let pids: Vec<i32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(pids.len(), 4, "{text}");
        for pid in pids {
            // Killed and reaped (or a zombie of init's): no longer running.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
                    .flatten();
                if matches!(state, None | Some('Z') | Some('X')) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the shell's background process {pid} outlived the call"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
}

/// The optional parameter check (`validate`) is as untrusted as `run`: a loop ends at the
/// check's deadline, a panic is an error naming it, a flood of problems is cut, and the host
/// keeps working.
#[test]
fn a_hostile_parameter_check_is_contained() {
    let rt = runtime();
    rt.block_on(async {
        let host = host_with_cache(None);
        let plugin = load(&host, &hostile_source()).await;
        assert!(plugin.validates());
        let mode = |m: &str| vec![("mode".to_owned(), text(m))];

        let started = Instant::now();
        let looped = host.check_params(&plugin, &mode("validate-loop")).await;
        let took = started.elapsed();
        let why = looped.unwrap_err();
        assert!(why.contains("timed out") || why.contains("within"), "{why}");
        assert_within(took, Duration::from_secs(5));

        let why = host
            .check_params(&plugin, &mode("validate-panic"))
            .await
            .unwrap_err();
        assert!(why.contains("panics in check_params"), "{why}");

        let flood = host
            .check_params(&plugin, &mode("validate-flood"))
            .await
            .unwrap();
        assert_eq!(flood.len(), 32);
        assert!(
            flood
                .iter()
                .all(|p| p.message.len() < 600 && p.message.ends_with("[truncated]")),
            "uncut messages"
        );

        assert_eq!(
            host.check_params(&plugin, &mode("ok")).await,
            Ok(Vec::new())
        );
    });
}
