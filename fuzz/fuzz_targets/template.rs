//! Templates and conditions as runbooks write them, rendered against a context like a run's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic::runbook::template;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let env = template::environment();
    let ctx = minijinja::context! {
        params => minijinja::context! { host => "127.0.0.1:8080", hosts => vec!["a", "b"], n => 3 },
        vars => minijinja::context! { region => "eu" },
        env => minijinja::context! { name => "staging", protected => false },
        steps => minijinja::context! { deploy => minijinja::context! { status => "succeeded", outputs => minijinja::context! { version => "v2" } } },
    };
    let _ = template::references(&env, source);
    let _ = template::render(&env, source, &ctx);
    let _ = template::render_list(&env, source, &ctx);
    let _ = template::eval(&env, source, &ctx);
    if let Some(expr) = template::sole_expression(source) {
        let _ = template::eval_list(&env, expr, &ctx);
    }
});
