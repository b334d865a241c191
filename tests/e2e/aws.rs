//! `elbv2-weights` and `cloudwatch-alarm` against moto_server (AWS emulation) on loopback:
//! `runbooks/elbv2-canary.toml` shifts an ALB listener from blue to green in stages, judged by
//! a CloudWatch alarm. Every request is SigV4-signed inside the plugins with credentials that
//! are secret parameters.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::cli::{medic, medic_command, repo, stderr, stdout};
use crate::lab::{self, Aws};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";

/// The example runbook with stage timings a test can wait for (the shipped one bakes 5
/// minutes per stage, as CodeDeploy's Canary10Percent5Minutes does). A stage passes after
/// `successes` quiet checks 300 ms apart.
fn quick_runbook(dir: &Path, analysis_extra: &str, successes: u32) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("runbooks/elbv2-canary.toml")).unwrap();
    let text = text
        .replace(
            "strategy = \"Canary10Percent5Minutes\"",
            "strategy = \"canary\"\nweights = [10, 50, 100]\nbake = \"300ms\"",
        )
        .replace("interval = \"30s\"", "interval = \"300ms\"")
        .replace("timeout = \"2m\"", "timeout = \"20s\"")
        .replace("timeout = \"15m\"", "timeout = \"20s\"")
        .replace(
            "consecutive_successes = 2",
            &format!("consecutive_successes = {successes}"),
        );
    let text = match analysis_extra {
        "" => text,
        extra => {
            let at = text.find("[[rollout.analysis]]").unwrap();
            let line = text[at..].find("\nwith = {").unwrap() + at + "\nwith = {".len();
            format!("{} {extra},{}", &text[..line], &text[line..])
        }
    };
    assert!(
        text.contains("bake = \"300ms\""),
        "the example runbook changed"
    );
    let path = dir.join("elbv2-canary.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_command(cache: &Path, rb: &Path, aws: &Aws) -> Command {
    let mut cmd = medic_command(cache);
    let host = aws.server.addr.clone();
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDMEDICTEST")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .args(["run", rb.to_str().unwrap()])
        .args(["--param", "scheme=http"])
        .args(["--param", &format!("elb_host={host}")])
        .args(["--param", &format!("cloudwatch_host={host}")])
        .args(["--param", &format!("listener={}", aws.listener)])
        .args(["--param", &format!("blue={}", aws.blue)])
        .args(["--param", &format!("green={}", aws.green)]);
    cmd
}

fn weights(aws: &Aws) -> Vec<(String, i64)> {
    aws.weights()
}

fn pair(blue: i64, green: i64) -> Vec<(String, i64)> {
    vec![("blue".into(), blue), ("green".into(), green)]
}

/// Everything the store keeps about the newest run.
fn newest_record(cache: &Path) -> String {
    let o = medic(cache, &["runs", "list", "--output", "json"]);
    let newest = stdout(&o).lines().next().expect("a run").to_owned();
    let run: serde_json::Value = serde_json::from_str(&newest).unwrap();
    let o = medic(cache, &["runs", "export", run["run_id"].as_str().unwrap()]);
    stdout(&o)
}

#[test]
fn a_healthy_candidate_is_promoted_to_all_traffic_on_the_load_balancer() {
    let aws = lab::aws();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = quick_runbook(dir.path(), "", 2);
    assert_eq!(weights(&aws), pair(100, 0));
    let o = run_command(cache.path(), &rb, &aws).output().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    for line in [
        "rollout_10 ",
        "weights now blue 90%, green 10% (were blue 100%, green 0%)",
        "weights now blue 50%, green 50% (were blue 90%, green 10%)",
        "weights now blue 0%, green 100% (were blue 50%, green 50%)",
        "1 alarm not in ALARM",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert_eq!(weights(&aws), pair(0, 100));
    // The secret key signed every request and appears nowhere: not on the terminal, not in
    // the record.
    let record = newest_record(cache.path());
    assert!(record.contains("elasticloadbalancing"), "{record}");
    for text in [&out, &stderr(&o), &record] {
        assert!(
            !text.contains(SECRET) && !text.contains("K7MDENG"),
            "{text}"
        );
    }
}

/// Reads `medic run --output json` until a step finishes as `status`; returns the event.
fn wait_for_step(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    id: &str,
    status: &str,
    seen: &mut Vec<String>,
) -> serde_json::Value {
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["event"] == "step_finished"
            && event["step"]["id"] == id
            && event["step"]["status"]["status"] == status
        {
            return event;
        }
    }
    panic!("{id} never {status}:\n{}", seen.join("\n"));
}

/// A `medic run` in the background, killed if the test fails before it ends.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    fn finish(mut self) -> std::process::Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn an_alarm_during_the_canary_sends_traffic_back_to_blue_first() {
    let aws = lab::aws();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Stages long enough (30 quiet checks) for the test to trip the alarm during the first.
    let rb = quick_runbook(dir.path(), "", 30);
    let mut child = Running(Some(
        run_command(cache.path(), &rb, &aws)
            .args(["--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let mut lines = BufReader::new(child.child().stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    wait_for_step(&mut lines, "rollout_10", "succeeded", &mut seen);
    assert_eq!(weights(&aws), pair(90, 10));
    // The candidate's errors trip the alarm while the 10% stage bakes.
    aws.set_alarm("ALARM");
    let alarm_in_place_ms = unix_ms();
    let failed = wait_for_step(&mut lines, "rollout_10_alarms", "failed", &mut seen);
    assert!(
        failed["step"]["summary"]
            .as_str()
            .unwrap()
            .contains("in ALARM: web-5xx"),
        "{failed}"
    );
    // Traffic back to stable is the first thing the rollback does.
    let undone = wait_for_step(&mut lines, "rollout_10.rollback", "succeeded", &mut seen);
    assert_eq!(weights(&aws), pair(100, 0));
    let rollback_steps: Vec<String> = seen
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "step_finished" && e["step"]["phase"] == "rollback")
        .map(|e| e["step"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rollback_steps, ["rollout_10.rollback"]);
    // The figure the README quotes (reported, never asserted): from the check that saw the
    // alarm to the listener read back with all traffic on blue, in the run's own clock.
    let attempt = |e: &serde_json::Value| {
        let a = e["step"]["attempts"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        (
            a["started_ms"].as_u64().unwrap(),
            a["invocation"]["duration_us"].as_u64().unwrap() / 1000,
        )
    };
    let (seen_at, _) = attempt(&failed);
    let (undo_at, undo_took) = attempt(&undone);
    eprintln!(
        "elbv2 canary: detection to all traffic on blue: {} ms (analysis interval 300 ms)",
        undo_at + undo_took - seen_at
    );
    // Blue serves everything again; the alarm clears and the verify gate sees it.
    aws.set_alarm("OK");
    for line in lines.by_ref() {
        seen.push(line.unwrap());
    }
    let status = child.child().wait().unwrap();
    assert_eq!(status.code(), Some(4), "{}", seen.join("\n"));
    assert!(
        seen.last().unwrap().contains("\"rolled_back\""),
        "{}",
        seen.join("\n")
    );
    // Detected by the first check that began once the alarm was in place (so within one
    // analysis interval): every check that passed had begun before it. The run's clock is
    // placed on the wall clock by the journal's first entry; 100 ms of slack is a third of
    // the interval, so a second check after the alarm could not hide in it.
    let run_id = serde_json::from_str::<serde_json::Value>(&seen[0]).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = medic(cache.path(), &["runs", "export", &run_id]);
    let record: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let run_start_ms = record["journal"][0]["at_ms"].as_u64().unwrap();
    let attempts = failed["step"]["attempts"].as_array().unwrap();
    for a in &attempts[..attempts.len() - 1] {
        let began = run_start_ms + a["started_ms"].as_u64().unwrap();
        assert!(
            began < alarm_in_place_ms + 100,
            "a check that began {} ms after the alarm was in place passed: {failed}",
            began - alarm_in_place_ms
        );
    }
    assert_eq!(
        attempts.last().unwrap()["invocation"]["result"]["Ok"]["status"],
        "failure"
    );
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn an_alarm_without_data_pauses_the_rollout_until_a_person_approves() {
    let aws = lab::aws();
    aws.set_alarm("INSUFFICIENT_DATA");
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = quick_runbook(dir.path(), "insufficient_data = \"inconclusive\"", 2);
    let child = Running(Some(
        run_command(cache.path(), &rb, &aws)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let approvals = cache.path().join("data/approvals");
    let waiting = crate::support::pending_approvals(&approvals);
    assert_eq!(waiting.len(), 1, "the rollout never paused");
    assert_eq!(waiting[0].step, "rollout_10_alarms");
    assert!(
        waiting[0].prompt.contains("insufficient data: web-5xx"),
        "{}",
        waiting[0].prompt
    );
    // Paused: the stage's traffic stays where it is while a person looks.
    assert_eq!(weights(&aws), pair(90, 10));
    aws.set_alarm("OK");
    crate::cli::decide(
        cache.path(),
        true,
        &waiting[0].run_id,
        "the metric was not reporting; dashboards look fine",
    );
    let out = child.finish();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("inconclusive, passed by"), "{text}");
    assert_eq!(weights(&aws), pair(0, 100));
}
