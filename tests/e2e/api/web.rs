//! The web UI in a real headless Chromium, over WebDriver: log in with a token, follow a run
//! live, approve it from a second session with another token; a viewer gets no buttons and a
//! forged POST is refused; a `<script>` in a step summary is shown as text. Each test writes
//! screenshots of its pages to `target/ui-screenshots/` (not committed) for a reviewer.

use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::*;

/// A headless Chromium session on `driver` (chromedriver's address).
async fn browser(driver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"],
        }),
    );
    ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&format!("http://{driver}"))
        .await
        .expect("a WebDriver session")
}

fn screenshots() -> std::path::PathBuf {
    let dir = crate::cli::repo().join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn login(c: &Client, ui: &str, token: &str) {
    c.goto(&format!("{ui}/login")).await.unwrap();
    let field = match c.find(Locator::Css("#token")).await {
        Ok(f) => f,
        Err(e) => panic!(
            "no token field at {ui}/login ({e}):\n{}",
            c.source().await.unwrap_or_default()
        ),
    };
    field.send_keys(token).await.unwrap();
    click(c, Locator::Css("form button[type=submit]")).await;
    wait_until(c, "the runs page after logging in", |url, _| {
        url.ends_with("/ui/runs")
    })
    .await;
}

/// Waits (15 s at most) until `ok(url, page source)` holds.
async fn wait_until(c: &Client, what: &str, ok: impl Fn(&str, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = c
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let source = c.source().await.unwrap_or_default();
        if ok(&url, &source) {
            return source;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 15 s; at {url}:\n{source}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_responder_follows_a_run_live_and_an_approver_lets_it_go_from_another_session() {
    let _driver = crate::lab::chromedriver();
    let driver = _driver.addr.clone();
    let site = Site::new();
    site.runbook(
        "hold",
        "",
        "[[steps]]\nid = \"prepare\"\nuses = \"act\"\n\n[[steps]]\nid = \"go_live\"\nuses = \"act\"\n\
         approval = { timeout = \"60s\", prompt = \"switch traffic to the new version?\" }\n",
    );
    let responder = site.token("fix", &["--role", "responder"]);
    let approver = site.token("lead", &["--role", "approver"]);
    let (serve, api) = site.serve(false);
    let ui = api.base.replace("/api/v1", "/ui");
    let (status, started) = api.post("/runs", &responder, json!({ "runbook": "hold" }));
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    api.rt.block_on(async {
        let a = browser(&driver).await;
        login(&a, &ui, &responder).await;
        // Waited for, not read once: the list reloads itself every 3 s while a run is under
        // way, and a read during that reload sees a blank document.
        wait_until(&a, "the run in the list", |_, s| {
            s.contains(&id[..10]) && s.contains("running")
        })
        .await;
        shot(&a, "runs").await;
        // Filters: the last hour has it, another runbook's name does not.
        a.goto(&format!("{ui}/runs?since=1h")).await.unwrap();
        wait_until(&a, "the run in the last hour", |_, s| {
            s.contains(&id[..10]) && s.contains("value=\"1h\" selected")
        })
        .await;
        a.goto(&format!("{ui}/runs?since=1h&runbook=other"))
            .await
            .unwrap();
        assert!(a.source().await.unwrap().contains("No runs."));
        a.goto(&format!("{ui}/runs/{id}")).await.unwrap();
        wait_until(&a, "the live timeline", |_, s| {
            s.contains("waiting for approval - switch traffic")
        })
        .await;
        assert!(
            a.find(Locator::Css("form[action$='/cancel'] button"))
                .await
                .is_ok(),
            "a responder may cancel"
        );
        shot(&a, "run-waiting").await;

        // Another person, another token, another browser session.
        let b = browser(&driver).await;
        login(&b, &ui, &approver).await;
        b.goto(&format!("{ui}/approvals")).await.unwrap();
        let page = b.source().await.unwrap();
        assert!(
            page.contains("switch traffic to the new version?"),
            "{page}"
        );
        shot(&b, "approvals").await;
        b.find(Locator::Css("input[name=reason]"))
            .await
            .unwrap()
            .send_keys("INC-4: canary clean")
            .await
            .unwrap();
        click(&b, Locator::XPath("//button[text()='Approve']")).await;
        // The decision's answer has come back before this session goes elsewhere.
        wait_until(&b, "the approval's answer", |_, s| {
            s.contains("Approved so far: token:lead") || s.contains("Nothing waits for an approval")
        })
        .await;
        // Taken by the run within moments; the page says so once reloaded.
        let mut taken = false;
        for _ in 0..50 {
            b.goto(&format!("{ui}/approvals")).await.unwrap();
            if b.source()
                .await
                .unwrap()
                .contains("Nothing waits for an approval")
            {
                taken = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(taken, "{}", b.source().await.unwrap());

        // The first browser sees the run end without reloading by hand.
        wait_until(&a, "the run's end, live", |_, s| {
            s.contains("id=\"status\">succeeded")
        })
        .await;
        shot(&a, "run-succeeded").await;
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
    let (_, run) = api.get(&format!("/runs/{id}"), &responder);
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn a_viewer_gets_no_buttons_forged_posts_are_refused_and_markup_in_a_summary_is_text() {
    let _driver = crate::lab::chromedriver();
    let driver = _driver.addr.clone();
    let site = Site::new();
    // A plugin's summary that would be a script, were it markup.
    site.runbook(
        "xss",
        "",
        "[[steps]]\nid = \"evil\"\nuses = \"act\"\n\
         with = { echo = \"<script>document.title='pwned'</script><img src=x onerror=alert(1)>\" }\n",
    );
    let responder = site.token("fix", &["--role", "responder"]);
    let viewer = site.token("look", &["--role", "viewer"]);
    let (serve, api) = site.serve(false);
    let ui = api.base.replace("/api/v1", "/ui");
    let (_, started) = api.post("/runs", &responder, json!({ "runbook": "xss" }));
    let id = started["run_id"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        if api.get(&format!("/runs/{id}"), &viewer).1["run"]["status"] != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (cookie, csrf) = api.rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &ui, &viewer).await;
        c.goto(&format!("{ui}/runs/{id}")).await.unwrap();
        let summary = c
            .find(Locator::Css("td.summary"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            summary.contains("<script>document.title='pwned'</script>"),
            "shown as text: {summary}"
        );
        assert_ne!(c.title().await.unwrap(), "pwned");
        assert!(
            c.find_all(Locator::Css(".actions button"))
                .await
                .unwrap()
                .is_empty(),
            "a viewer gets no buttons"
        );
        shot(&c, "run-viewer").await;
        let cookie = c
            .get_named_cookie("medic_session")
            .await
            .unwrap()
            .value()
            .to_owned();
        let source = c.source().await.unwrap();
        let csrf = source
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_owned();
        c.close().await.unwrap();
        (cookie, csrf)
    });
    let post = |path: &str, cookie: Option<&str>, form: &[(&str, &str)]| -> (u16, String) {
        api.rt.block_on(async {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let body: Vec<String> = form
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.replace('%', "%25")
                            .replace('&', "%26")
                            .replace('=', "%3D")
                            .replace(' ', "+")
                    )
                })
                .collect();
            let mut r = client
                .post(format!("{ui}{path}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.join("&"));
            if let Some(c) = cookie {
                r = r.header("cookie", format!("medic_session={c}"));
            }
            let response = r.send().await.unwrap();
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        })
    };
    let rollback = format!("/runs/{id}/rollback");
    // No session: to the login page. A session without its CSRF token: refused. With it, as a
    // viewer: refused by role.
    assert_eq!(post(&rollback, None, &[("csrf", &csrf)]).0, 303);
    let (status, page) = post(&rollback, Some(&cookie), &[("csrf", "forged")]);
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("CSRF"), "{page}");
    let (status, page) = post(&rollback, Some(&cookie), &[("csrf", &csrf)]);
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("is a viewer"), "{page}");
    // Revoking the token ends its sessions.
    let o = site
        .medic()
        .args(["token", "revoke", "look"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(post(&rollback, Some(&cookie), &[("csrf", &csrf)]).0, 303);
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn a_responder_starts_a_runbook_from_its_form_after_previewing_the_plan() {
    let _driver = crate::lab::chromedriver();
    let driver = _driver.addr.clone();
    let site = Site::new();
    site.runbook(
        "greet",
        "description = \"Say something, then check\"\n\n\
         [params.words]\ntype = \"string\"\ndescription = \"What to say\"\n\n\
         [params.tone]\ntype = \"enum\"\nvalues = [\"calm\", \"loud\"]\ndefault = \"calm\"\n\n\
         [environments.staging]\n\n[environments.prod]\nprotected = true\n",
        "[[steps]]\nid = \"say\"\nuses = \"act\"\nwith = { echo = \"{{ params.words }} ({{ params.tone }})\" }\n\n\
         [[steps]]\nid = \"check\"\nuses = \"check\"\n",
    );
    let responder = site.token("fix", &["--role", "responder"]);
    let (serve, api) = site.serve(false);
    let ui = api.base.replace("/api/v1", "/ui");
    let id = api.rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &ui, &responder).await;
        open_form(&c, &ui, "greet").await;
        // No Run button before the plan is seen.
        assert!(c.find(Locator::Css("#run")).await.is_err());
        c.find(Locator::Css("#p-words"))
            .await
            .unwrap()
            .send_keys("hello <b>world</b>")
            .await
            .unwrap();
        click(&c, Locator::Css("#p-tone option[value=loud]")).await;
        click(&c, Locator::Css("#environment option[value=staging]")).await;
        click(&c, Locator::Css("button[value=preview]")).await;
        let page = wait_until(&c, "the plan", |_, s| s.contains("id=\"plan\"")).await;
        let plan = c
            .find(Locator::Css("#plan"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            plan.contains("say") && plan.contains("staging"),
            "{plan}\n{page}"
        );
        shot(&c, "start-preview").await;
        click(&c, Locator::Css("#run")).await;
        wait_until(&c, "the run's page", |url, _| url.contains("/ui/runs/01")).await;
        wait_until(&c, "the run's end", |_, s| {
            s.contains("id=\"status\">succeeded")
        })
        .await;
        let url = c.current_url().await.unwrap().to_string();
        c.close().await.unwrap();
        url.rsplit('/').next().unwrap().to_owned()
    });
    let (_, run) = api.get(&format!("/runs/{id}"), &responder);
    assert_eq!(run["run"]["environment"], "staging", "{run}");
    assert!(
        run["run"]["params"]
            .to_string()
            .contains("hello <b>world</b>")
            && run["run"]["params"].to_string().contains("loud"),
        "{run}"
    );
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn a_drills_chart_appears_after_two_runs_started_from_the_page() {
    let _driver = crate::lab::chromedriver();
    let driver = _driver.addr.clone();
    let site = Site::new();
    // A change whose check fails: rolled back and verified, as a drill expects.
    let rb = crate::cli::scripted_runbook(
        site.work.path(),
        "on_failure = \"rollback\"",
        "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
         [[steps]]\nid = \"check\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n\n\
         [[verify]]\nid = \"fine\"\nuses = \"check\"\n",
    );
    std::fs::write(
        site.drills.join("d.toml"),
        format!(
            "[[drill]]\nname = \"undo\"\nrunbook = {:?}\nschedule = \"0 3 1 1 *\"\n",
            rb.display().to_string()
        ),
    )
    .unwrap();
    let admin = site.token("ops", &["--role", "admin"]);
    let (serve, api) = site.serve(false);
    let ui = api.base.replace("/api/v1", "/ui");
    api.rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &ui, &admin).await;
        c.goto(&format!("{ui}/drills")).await.unwrap();
        let page = c.source().await.unwrap();
        assert!(
            page.contains("drill-undo") && !page.contains("<svg"),
            "{page}"
        );
        for n in 1..=2 {
            // The page asks for a confirmation first.
            c.execute("window.confirm = () => true;", vec![])
                .await
                .unwrap();
            click(&c, Locator::Css("#drill-undo form[action$='/run'] button")).await;
            let mut seen = false;
            for _ in 0..75 {
                c.goto(&format!("{ui}/drills")).await.unwrap();
                if c.source().await.unwrap().contains(&format!("of {n} runs")) {
                    seen = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(seen, "run {n}: {}", c.source().await.unwrap());
        }
        let svg = c
            .find(Locator::Css("#drill-undo svg.trend"))
            .await
            .expect("the chart");
        assert_eq!(svg.attr("data-points").await.unwrap().as_deref(), Some("2"));
        let page = c.source().await.unwrap();
        assert!(page.contains("100%") && !page.contains("failing"), "{page}");
        shot(&c, "drills").await;
        // The drills' runs in the figures, week by week and per runbook.
        c.goto(&format!("{ui}/stats")).await.unwrap();
        let table = c
            .find(Locator::Css("#per-runbook"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(table.contains("scripted"), "{table}");
        assert_eq!(
            c.find_all(Locator::Css("svg.trend")).await.unwrap().len(),
            5,
            "five charts: runs, change failure rate, time to recover, rollback success, time to detect"
        );
        shot(&c, "stats").await;
        c.goto(&format!("{ui}/triggers")).await.unwrap();
        assert!(c.source().await.unwrap().contains("No triggers"));
        // A phone-sized screen.
        c.set_window_size(390, 844).await.unwrap();
        c.goto(&format!("{ui}/runs")).await.unwrap();
        shot(&c, "runs-phone").await;
        c.close().await.unwrap();
    });
    assert_eq!(serve.stop(), Some(0));
}

/// Clicks the element `at` finds (failing the test when there is none).
async fn click(c: &Client, at: Locator<'_>) {
    c.find(at)
        .await
        .expect("an element to click")
        .click()
        .await
        .unwrap();
}

/// From the catalogue to a runbook's start form.
async fn open_form(c: &Client, ui: &str, runbook: &str) {
    c.goto(&format!("{ui}/runbooks")).await.unwrap();
    click(c, Locator::LinkText(runbook)).await;
    wait_until(c, "the runbook's form", |_, s| s.contains("start-form")).await;
}

/// Loads `url` until its page contains `text` (15 s at most).
async fn reload_until(c: &Client, url: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        c.goto(url).await.unwrap();
        let page = c.source().await.unwrap_or_default();
        if page.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{text}` not at {url} within 15 s:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Presses Tab (30 times at most) until the focused element matches `css`.
async fn tab_to(c: &Client, css: &str) -> fantoccini::elements::Element {
    let target = c.find(Locator::Css(css)).await.expect(css);
    for _ in 0..30 {
        let focused = c.active_element().await.unwrap();
        if focused.element_id() == target.element_id() {
            return focused;
        }
        focused.send_keys(&fantoccini::key::Key::Tab).await.unwrap();
    }
    panic!(
        "{css}: not reached with Tab in 30 presses:\n{}",
        c.source().await.unwrap_or_default()
    );
}

#[test]
fn an_approver_rejects_with_the_keyboard_alone_and_the_run_rolls_back_without_the_change() {
    let _driver = crate::lab::chromedriver();
    let driver = _driver.addr.clone();
    let site = Site::new();
    site.runbook(
        "hold",
        "on_failure = \"rollback\"",
        "[[steps]]\nid = \"prepare\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
         [[steps]]\nid = \"go_live\"\nuses = \"act\"\n\
         approval = { timeout = \"60s\", prompt = \"switch traffic to the new version?\" }\n\n\
         [[verify]]\nid = \"fine\"\nuses = \"check\"\n",
    );
    let responder = site.token("fix", &["--role", "responder"]);
    let approver = site.token("lead", &["--role", "approver"]);
    let (serve, api) = site.serve(false);
    let ui = api.base.replace("/api/v1", "/ui");
    let (status, started) = api.post("/runs", &responder, json!({ "runbook": "hold" }));
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    api.rt.block_on(async {
        let c = browser(&driver).await;
        // Log in: the token field has the focus, Enter submits.
        c.goto(&format!("{ui}/login")).await.unwrap();
        let field = c.active_element().await.unwrap();
        assert_eq!(field.attr("id").await.unwrap().as_deref(), Some("token"));
        field
            .send_keys(&format!("{approver}{}", &*fantoccini::key::Key::Enter))
            .await
            .unwrap();
        wait_until(&c, "the runs page", |url, _| url.ends_with("/ui/runs")).await;
        reload_until(&c, &format!("{ui}/approvals"), "switch traffic").await;
        // From the top of the page to the reason, then to Reject, by Tab alone.
        tab_to(&c, "input[name=reason]")
            .await
            .send_keys("INC-5: error budget spent")
            .await
            .unwrap();
        let reject = tab_to(&c, "button[formaction$='/reject']").await;
        assert_eq!(reject.text().await.unwrap(), "Reject");
        reject
            .send_keys(&fantoccini::key::Key::Enter)
            .await
            .unwrap();
        // Taken by the run within moments; the page says so once reloaded.
        reload_until(
            &c,
            &format!("{ui}/approvals"),
            "Nothing waits for an approval",
        )
        .await;
        c.goto(&format!("{ui}/runs/{id}")).await.unwrap();
        wait_until(&c, "the run rolled back", |_, s| {
            s.contains("id=\"status\">rolled_back")
        })
        .await;
        let steps = c
            .find(Locator::Css("#steps"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            steps.contains("rejected by token:lead: INC-5: error budget spent"),
            "{steps}"
        );
        shot(&c, "run-rejected").await;
        c.close().await.unwrap();
    });
    let (_, run) = api.get(&format!("/runs/{id}"), &responder);
    assert_eq!(run["run"]["status"], "rolled_back", "{run}");
    assert_eq!(run["run"]["failed_step"], "go_live", "{run}");
    let steps = run["steps"].as_array().unwrap();
    let go_live = steps.iter().find(|s| s["id"] == "go_live").unwrap();
    assert!(
        go_live["calls"].as_array().is_none_or(|c| c.is_empty()),
        "a rejected step never calls its plugin: {go_live}"
    );
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn a_failed_run_is_resumed_then_rolled_back_from_its_page_and_its_timeline_shows_detection_and_recovery()
 {
    let _driver = crate::lab::chromedriver();
    let driver = _driver.addr.clone();
    let site = Site::new();
    // The check fails every time: stopped (nothing undone), resumed (fails again), rolled back.
    site.runbook(
        "change",
        "",
        "[[steps]]\nid = \"change\"\nuses = \"act\"\nrollback = \"revert\"\n\n\
         [[steps]]\nid = \"check\"\nuses = \"check\"\nwith = { mode = \"fail\" }\n\n\
         [[verify]]\nid = \"fine\"\nuses = \"check\"\n",
    );
    let responder = site.token("fix", &["--role", "responder"]);
    let (serve, api) = site.serve(false);
    let ui = api.base.replace("/api/v1", "/ui");
    let (status, started) = api.post("/runs", &responder, json!({ "runbook": "change" }));
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    api.rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &ui, &responder).await;
        c.goto(&format!("{ui}/runs/{id}")).await.unwrap();
        wait_until(&c, "the run failed", |_, s| {
            s.contains("id=\"status\">failed")
        })
        .await;
        // The timeline: a bar per step, the failure marked, no recovery yet.
        let svg = c
            .find(Locator::Css("#timeline-chart svg"))
            .await
            .expect("the timeline chart");
        assert_eq!(svg.attr("data-rows").await.unwrap().as_deref(), Some("2"));
        let labels = svg.text().await.unwrap();
        assert!(
            labels.contains("failure detected") && !labels.contains("recovered"),
            "{labels}"
        );

        for (button, confirm, after) in [
            ("resume", "Resume run", "failed"),
            ("rollback", "Roll back run", "rolled_back"),
        ] {
            click(
                &c,
                Locator::Css(&format!("form[action$='/{button}'] button")),
            )
            .await;
            // The browser's own confirmation, read and accepted.
            let text = c.get_alert_text().await.expect("a confirmation");
            assert!(text.starts_with(&format!("{confirm} {id}?")), "{text}");
            c.accept_alert().await.unwrap();
            wait_until(&c, &format!("the run {after} after {button}"), |url, s| {
                url.ends_with(&id) && s.contains(&format!("id=\"status\">{after}<"))
            })
            .await;
        }
        let svg = c.find(Locator::Css("#timeline-chart svg")).await.unwrap();
        let labels = svg.text().await.unwrap();
        assert!(
            ["failure detected", "resumed", "rollback asked", "recovered"]
                .iter()
                .all(|m| labels.contains(m)),
            "{labels}"
        );
        // change, check (twice: the resume ran it again), the undo of change, the verify.
        assert_eq!(svg.attr("data-rows").await.unwrap().as_deref(), Some("5"));
        let caption = c
            .find(Locator::Css("#timeline-caption"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(caption.contains("time to recover:"), "{caption}");
        shot(&c, "run-rolled-back").await;
        c.close().await.unwrap();
    });
    let (_, run) = api.get(&format!("/runs/{id}"), &responder);
    assert_eq!(run["run"]["status"], "rolled_back", "{run}");
    assert!(run["run"]["recovered_ms"].as_u64().is_some(), "{run}");
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn a_bad_version_started_from_the_form_against_the_demo_service_is_rolled_back_and_users_get_v1() {
    let _driver = crate::lab::chromedriver();
    let driver = _driver.addr.clone();
    let service = crate::cli::service(&["v3"]);
    let site = Site::new();
    std::fs::copy(
        crate::cli::repo().join("runbooks/demo.toml"),
        site.runbooks.join("demo.toml"),
    )
    .unwrap();
    let responder = site.token("fix", &["--role", "responder"]);
    let (serve, api) = site.serve(false);
    let ui = api.base.replace("/api/v1", "/ui");
    let id = api.rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &ui, &responder).await;
        open_form(&c, &ui, "demo").await;
        for (field, value) in [("#p-host", service.addr.as_str()), ("#p-version", "v3")] {
            let input = c.find(Locator::Css(field)).await.unwrap();
            input.clear().await.unwrap();
            input.send_keys(value).await.unwrap();
        }
        click(&c, Locator::Css("button[value=preview]")).await;
        wait_until(&c, "the plan", |_, s| s.contains("id=\"plan\"")).await;
        click(&c, Locator::Css("#run")).await;
        wait_until(&c, "the run's page", |url, _| url.contains("/ui/runs/01")).await;
        // The deploy of v3 passes its health check; the version check after it fails
        // (v3 is a bad build), and the run rolls back to v1 and verifies.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let page = c.source().await.unwrap_or_default();
            if page.contains("id=\"status\">rolled_back") {
                break;
            }
            assert!(
                Instant::now() < deadline && !page.contains("id=\"status\">succeeded"),
                "not rolled back within 60 s:\n{page}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let labels = c
            .find(Locator::Css("#timeline-chart svg"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            labels.contains("failure detected") && labels.contains("recovered"),
            "{labels}"
        );
        shot(&c, "run-demo-rolled-back").await;
        let url = c.current_url().await.unwrap().to_string();
        c.close().await.unwrap();
        url.rsplit('/').next().unwrap().to_owned()
    });
    assert_eq!(crate::serve::version_of(&service.addr), "v1");
    let (_, run) = api.get(&format!("/runs/{id}"), &responder);
    assert_eq!(run["run"]["status"], "rolled_back", "{run}");
    assert_eq!(serve.stop(), Some(0));
}
