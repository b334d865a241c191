//! When a fleet's targets are told and started: a target is shown as it ends, not when the
//! others do, and the calls of the targets taking the places of those that ended run while
//! the ended ones are told (recorded and flushed).

use std::time::Duration;

use crate::fleet::{runbook, witness};
use crate::support::runtime;

#[test]
fn a_target_that_finished_is_shown_while_slower_targets_still_run() {
    use std::io::{BufRead, BufReader};
    // Targets that end close together are told (and flushed) together: a target must not
    // wait for the others to be shown. One quick target and three that sleep 3 s, all at
    // once: the quick one's line comes while the others still sleep.
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[runbook]\nname = \"fleet\"\n\n[plugins.h]\nsource = \"{}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
         [[steps]]\nid = \"fleet\"\nuses = \"h\"\ntimeout = \"30s\"\n\
         with = {{ mode = \"{{% if target == 'quick' %}}ok{{% else %}}sleep{{% endif %}}\", sleep = \"3s\" }}\n\
         [steps.fleet]\ntargets = [\"slow1\", \"quick\", \"slow2\", \"slow3\"]\nmax_concurrency = \"AllAtOnce\"\n",
        medic::host::fixtures::HOSTILE
    );
    let rb = dir.path().join("fleet.toml");
    std::fs::write(&rb, text).unwrap();
    let started = std::time::Instant::now();
    let mut child = crate::cli::medic_command(cache.path())
        .args(["run", rb.to_str().unwrap(), "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut shown = Vec::new();
    // Bounded: the run ends by itself after about 3 s.
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "target_finished" {
            let target = event["target"]["target"].as_str().unwrap().to_owned();
            shown.push((target, started.elapsed().as_secs_f64()));
        }
    }
    assert_eq!(child.wait().unwrap().code(), Some(0), "{shown:?}");
    assert_eq!(shown.len(), 4, "{shown:?}");
    assert_eq!(shown[0].0, "quick", "{shown:?}");
    // The sleepers end 3 s after they start; the quick target is shown well before that
    // (not when the others end).
    assert!(shown[1].1 - shown[0].1 > 1.5, "{shown:?}");
}

#[test]
fn the_next_targets_calls_run_while_the_targets_that_ended_are_told() {
    use medic::executor::{self, Event, RunOptions};
    use medic::runbook::{self, PlanOptions, Source};
    // Telling a group of targets that ended (recording it, and its flush) takes the run's
    // thread for a while: the calls of the targets that take their places must be running
    // by then, not wait for it. Two at a time, each call held 300 ms by the server: the
    // observer holds every telling until the server has seen every call the pace allows
    // (those told so far and two more) or 5 s have passed.
    let dir = tempfile::tempdir().unwrap();
    let w = witness(Duration::from_millis(300));
    let targets = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let rb = runbook(
        dir.path(),
        &w,
        &format!(
            "[[steps]]\nid = \"deploy\"\nuses = \"act\"\n\
             with = {{ record_url = \"@REC@\", echo = \"{{{{ target }}}}\" }}\n\
             [steps.fleet]\ntargets = {targets:?}\nmax_concurrency = 2\n"
        ),
    );
    let text = std::fs::read_to_string(&rb).unwrap();
    let host = crate::support::host_with_cache(None);
    let rt = runtime();
    let (told, waits) = rt.block_on(async {
        let path = std::path::PathBuf::from(&rb);
        let source = Source {
            path: &path,
            text: &text,
        };
        let Ok(plan) = runbook::plan(&host, &source, &PlanOptions::default()).await else {
            panic!("the runbook plans");
        };
        let mut told = 0usize;
        let mut waits = Vec::new();
        let mut observer = |e: &Event<'_>| {
            if let Event::TargetFinished { more, .. } = e {
                told += 1;
                if !more {
                    let expected = (told + 2).min(targets.len());
                    let begun = std::time::Instant::now();
                    while w.targets("run", "deploy").len() < expected
                        && begun.elapsed() < Duration::from_secs(5)
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    waits.push((told, w.targets("run", "deploy").len(), begun.elapsed()));
                }
            }
        };
        executor::execute(&host, &plan, RunOptions::default(), &mut observer).await;
        (told, waits)
    });
    assert_eq!(told, targets.len());
    for (told, seen, waited) in &waits {
        let expected = (told + 2).min(targets.len());
        assert_eq!(
            *seen, expected,
            "told {told}: the server saw {seen} calls, not {expected}, after {waited:?}: {waits:?}"
        );
    }
}
