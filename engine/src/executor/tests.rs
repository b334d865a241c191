//! The executor's own tests; helpers here serve its modules' tests too.

use super::*;

/// A host without a cache and the plan of one step probing a closed port, with `more`
/// added to the step's table.
pub(in crate::executor) async fn one_probe(more: &str) -> (PluginHost, Plan) {
    let host = PluginHost::new(crate::host::HostConfig {
        cache_dir: None,
        max_instances: 1,
        ..crate::host::HostConfig::default()
    })
    .unwrap();
    let text = format!(
        "[runbook]\nname = \"one\"\n\n[plugins.probe]\nsource = \"builtin:http-probe\"\n\
         grants = {{ http = [\"127.0.0.1:9\"] }}\n\n[[steps]]\nid = \"probe\"\n\
         uses = \"probe\"\nwith = {{ url = \"http://127.0.0.1:9/\" }}\n{more}"
    );
    let source = crate::runbook::Source {
        path: std::path::Path::new("one.toml"),
        text: &text,
    };
    let plan = crate::runbook::plan(&host, &source, &crate::runbook::PlanOptions::default())
        .await
        .unwrap();
    (host, plan)
}

#[tokio::test]
async fn a_runs_future_holds_its_plan_once_and_no_calls() {
    let (host, plan) = one_probe("").await;
    let mut quiet = |_: &Event<'_>| {};
    let inner = std::mem::size_of_val(&run_plan(&host, &plan, RunOptions::default(), &mut quiet));
    let outer = std::mem::size_of_val(&execute(&host, &plan, RunOptions::default(), &mut quiet));
    let ctx = crate::host::CallContext {
        run_id: String::new(),
        step_id: String::new(),
        attempt: 1,
        environment: String::new(),
        dry_run: false,
    };
    let whole = std::mem::size_of_val(&host.whole_call(
        &plan.plugins[0].plugin,
        crate::host::Call::Run { params: Vec::new() },
        ctx.clone(),
        crate::host::Sandbox::default(),
        Default::default(),
        std::time::Instant::now(),
        true,
    ));
    let placed = std::mem::size_of_val(&host.invoke_on(
        &plan.plugins[0].plugin,
        crate::host::Call::Run { params: Vec::new() },
        ctx,
        crate::host::Sandbox::default(),
        crate::host::Placement::Here,
    ));
    // A run waiting (a gate, a backoff, an approval) holds its future, whose size is its
    // largest state's: a call's future (wasmtime's, most of it) held inline made every
    // run in flight 2.6 KiB larger, fleets' another 0.7 KiB. What a run awaits is the
    // call placed: boxed, or a task on the call threads.
    assert!(
        placed * 8 < whole,
        "a placed call's future is {placed} bytes, the whole call's {whole}: is it held inline?"
    );
    assert!(
        inner < whole + 1024,
        "a run's future is {inner} bytes, a call's {whole}"
    );
    // Every run in flight is one of these (1,000 in `medic serve`): a wrapper that held
    // the run's future twice made each 4 KiB larger.
    assert!(
        outer < inner + 256,
        "a run's future is {outer} bytes, the run inside it {inner}"
    );
}
