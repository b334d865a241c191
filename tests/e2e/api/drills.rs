//! Drills through the API: paused (each scheduled run recorded as skipped, with who and
//! why, across the pause) and resumed, by an admin only; and the CLI's own pause when no
//! server runs, which checks the name against the drill files.

use std::time::{Duration, Instant};

use super::*;
use crate::cli::stderr;

#[test]
fn a_paused_drill_is_skipped_on_schedule_saying_why_until_resumed() {
    let site = Site::new();
    let rb = crate::cli::scripted_runbook(
        site.work.path(),
        "",
        "[[steps]]\nid = \"tick\"\nuses = \"act\"\n",
    );
    std::fs::write(
        site.drills.join("d.toml"),
        format!(
            "[[drill]]\nname = \"tick\"\nrunbook = {:?}\nschedule = \"* * * * * *\"\nexpect = {{ outcome = \"succeeded\" }}\n",
            rb.display().to_string()
        ),
    )
    .unwrap();
    let ops = site.token("ops", &["--role", "admin"]);
    let look = site.token("look", &["--role", "viewer"]);
    let (serve, api) = site.serve(false);
    let records = |since: u64| -> Vec<serde_json::Value> {
        api.get(
            &format!("/drills/records?drill=tick&since_ms={since}"),
            &look,
        )
        .1["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let now_ms = || medic::store::now_ms();

    let (status, e) = api.post(
        "/drills/tick/pause",
        &look,
        serde_json::json!({ "reason": "x" }),
    );
    assert_eq!(status, 403, "{e}");
    let (status, e) = api.post(
        "/drills/nope/pause",
        &ops,
        serde_json::json!({ "reason": "x" }),
    );
    assert_eq!(status, 404, "{e}");
    let (status, p) = api.post(
        "/drills/tick/pause",
        &ops,
        serde_json::json!({ "reason": "CHG-12: database maintenance" }),
    );
    assert_eq!(
        (status, p["paused"]["by"].as_str()),
        (200, Some("token:ops")),
        "{p}"
    );
    let paused_at = now_ms();
    let (_, list) = api.get("/drills", &look);
    assert_eq!(
        list["drills"][0]["paused"]["reason"].as_str(),
        Some("CHG-12: database maintenance")
    );

    // Scheduled runs come round and are recorded as skipped, saying who paused and why.
    let deadline = Instant::now() + Duration::from_secs(20);
    let skipped = loop {
        // A run that started just before the pause may still end after it.
        let after: Vec<_> = records(paused_at + 1500);
        if !after.is_empty() {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run came round while paused"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        skipped.iter().all(|r| r["result"] == "skipped"
            && r["reasons"][0]
                .as_str()
                .unwrap()
                .contains("paused by token:ops: CHG-12")),
        "{skipped:?}"
    );

    let (status, r) = api.post("/drills/tick/resume", &ops, serde_json::Value::Null);
    assert_eq!((status, r["paused"].is_null()), (200, true), "{r}");
    let resumed_at = now_ms();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if records(resumed_at + 1500)
            .iter()
            .any(|r| r["result"] == "passed")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the resumed drill never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(serve.stop(), Some(0));

    // No server: the CLI pauses in the store itself, checking the name first.
    let o = site
        .medic()
        .args([
            "drill",
            "pause",
            "tik",
            "--reason",
            "x",
            "--drills",
            site.drills.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("did you mean `tick`?"),
        "{}",
        stderr(&o)
    );
    let o = site
        .medic()
        .args([
            "drill",
            "pause",
            "tick",
            "--reason",
            "CHG-13",
            "--drills",
            site.drills.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let store = medic::store::Store::open(&site.data, "test").unwrap();
    assert_eq!(
        store.drill_paused("tick").unwrap().unwrap().reason,
        "CHG-13"
    );
}
