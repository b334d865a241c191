//! A runbook's shape alone (syntax, unknown keys, types, missing fields, placeholders), much
//! faster per input than the full plan, with every diagnostic rendered. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medic::runbook::Report;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = medic::runbook::plan::parse(text);
    let _ = Report {
        path: "fuzz.toml",
        text,
        diagnostics: &parsed.diags,
    }
    .to_string();
    // What the shape check let through deserialised: its names are usable.
    if let Some(doc) = parsed.doc {
        let _ = doc.steps.len() + doc.params.len();
    }
});
