//! The API under load: a real `medic serve --listen` process, runs started through the API
//! while many clients read, as a team mid-incident would (dashboards polling, responders
//! following runs). Reports read latency (p50, p99), errors, and the server's resident
//! memory; every request must succeed.
//!
//! `cargo bench -p medic --bench api_load`: 100 runs and 200 readers. Without `--bench` (as
//! `cargo test -p medic --bench api_load` runs it) a small version proves it works; its
//! figures mean nothing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MEDIC: &str = env!("CARGO_BIN_EXE_medic");

fn medic(data: &Path, args: &[&str]) -> String {
    let o = Command::new(MEDIC)
        .env("MEDIC_DATA_DIR", data)
        .env("MEDIC_CACHE_DIR", data.join("cache"))
        .args(args)
        .output()
        .expect("run medic");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// VmRSS and VmHWM (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (runs, readers) = if full { (100, 200) } else { (10, 20) };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let drills = work.path().join("drills");
    let runbooks = work.path().join("runbooks");
    std::fs::create_dir_all(&drills).unwrap();
    std::fs::create_dir_all(&runbooks).unwrap();
    // Three actions and a check per run: plugin calls, journal writes, no network.
    std::fs::write(
        runbooks.join("remediate.toml"),
        format!(
            "[runbook]\nname = \"remediate\"\n\n[plugins.act]\nsource = \"{act}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [plugins.check]\nsource = \"{check}\"\ngrants = {{ http = [\"127.0.0.1:9\"], kv = true }}\n\n\
             [[steps]]\nid = \"drain\"\nuses = \"act\"\n\n[[steps]]\nid = \"restart\"\nuses = \"act\"\n\n\
             [[steps]]\nid = \"ready\"\nuses = \"act\"\n\n[[steps]]\nid = \"healthy\"\nuses = \"check\"\n",
            act = medic::host::fixtures::SCRIPTED_ACTION,
            check = medic::host::fixtures::SCRIPTED_CHECK,
        ),
    )
    .unwrap();
    let token = medic(&data, &["token", "create", "load", "--role", "admin"]);
    let mut serve = Command::new(MEDIC)
        .env("MEDIC_DATA_DIR", &data)
        .env("MEDIC_CACHE_DIR", data.join("cache"))
        .args(["serve", "--drills", drills.to_str().unwrap()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--runbooks",
            runbooks.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start medic serve");
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("API on ").map(|(_, u)| u.trim().to_owned()))
        .expect("medic serve printed its API address");
    // Keep reading its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let (rss_idle, _) = memory_kib(serve.id());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    medic::host::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(readers)
        .build()
        .unwrap();
    let errors = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let note = {
        let errors = errors.clone();
        let first_error = first_error.clone();
        move |what: String| {
            errors.fetch_add(1, Ordering::Relaxed);
            first_error.lock().unwrap().get_or_insert(what);
        }
    };
    let started = Instant::now();
    let (latencies, run_ids, peak) = rt.block_on(async {
        let done = Arc::new(AtomicBool::new(false));
        // Readers: the run list and a run's record, over and over, until the runs are done.
        let mut reading = Vec::new();
        for i in 0..readers {
            let (client, base, token, done, note) = (
                client.clone(),
                base.clone(),
                token.clone(),
                done.clone(),
                note.clone(),
            );
            reading.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut last_id: Option<String> = None;
                while !done.load(Ordering::Relaxed) {
                    let path = match (&last_id, i % 2) {
                        (Some(id), 1) => format!("{base}/runs/{id}"),
                        _ => format!("{base}/runs?limit=20"),
                    };
                    let t = Instant::now();
                    match client.get(&path).bearer_auth(&token).send().await {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            samples.push(t.elapsed());
                            if let Some(id) = v["runs"][0]["run_id"].as_str() {
                                last_id = Some(id.to_owned());
                            }
                        }
                        Ok(r) => note(format!("GET {path}: {}", r.status())),
                        Err(e) => note(format!("GET {path}: {e}")),
                    }
                }
                samples
            }));
        }
        // Runs, all started at once through the API.
        let mut starting = Vec::new();
        for _ in 0..runs {
            let (client, base, token, note) =
                (client.clone(), base.clone(), token.clone(), note.clone());
            starting.push(tokio::spawn(async move {
                let r = client
                    .post(format!("{base}/runs"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "runbook": "remediate" }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        v["run_id"].as_str().map(str::to_owned)
                    }
                    Ok(r) => {
                        note(format!("POST /runs: {}", r.status()));
                        None
                    }
                    Err(e) => {
                        note(format!("POST /runs: {e}"));
                        None
                    }
                }
            }));
        }
        let mut ids = Vec::new();
        for s in starting {
            ids.extend(s.await.unwrap());
        }
        // Until every run has ended (bounded), sampling the server's memory.
        let mut peak = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            peak = peak.max(memory_kib(serve.id()).0);
            let r = client
                .get(format!("{base}/runs?status=running&limit=500"))
                .bearer_auth(&token)
                .send()
                .await;
            let running = match r {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["runs"].as_array().map(Vec::len)),
                Err(_) => None,
            };
            if running == Some(0) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for r in reading {
            latencies.extend(r.await.unwrap());
        }
        (latencies, ids, peak)
    });
    let took = started.elapsed();
    // Every run ended as it should.
    let outcomes = rt.block_on(async {
        let mut failed = 0;
        for id in &run_ids {
            let v: serde_json::Value = client
                .get(format!("{base}/runs/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["run"]["status"] != "succeeded" {
                failed += 1;
            }
        }
        failed
    });
    let (_, hwm) = memory_kib(serve.id());
    let _ = serve.kill();
    let _ = serve.wait();

    let mut sorted = latencies;
    sorted.sort();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "API load: {runs} runs started through the API while {readers} clients read ({} reads in {:.1} s)",
        sorted.len(),
        took.as_secs_f64()
    );
    println!(
        "  read latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        quantile(&sorted, 0.5).as_secs_f64() * 1000.0,
        quantile(&sorted, 0.99).as_secs_f64() * 1000.0,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    println!(
        "  medic serve RSS: {:.1} MiB idle, {:.1} MiB under load (peak {:.1} MiB)",
        rss_idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  errors: {errors}; runs started {} of {runs}, not succeeded {outcomes}",
        run_ids.len()
    );
    // Correctness, not timing: every request answered, every run done.
    assert_eq!(
        errors,
        0,
        "first error: {:?}",
        first_error.lock().unwrap().clone()
    );
    assert_eq!(run_ids.len(), runs);
    assert_eq!(outcomes, 0);
}
