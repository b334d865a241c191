//! Drill files and their cron schedules: parsed and checked (runbooks named in them are
//! not read), and a schedule's next times computed.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use medic::drill::Schedule;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A schedule alone: `EXPR` or `EXPR|TIMEZONE`.
    let (expr, tz) = match text.split_once('|') {
        Some((e, t)) => (e, Some(t)),
        None => (text, None),
    };
    if let Ok(s) = Schedule::parse(expr, tz) {
        let mut t = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        for _ in 0..3 {
            match s.next_after(t) {
                Some(n) => t = n,
                None => break,
            }
        }
    }
    // A whole drill file, checked without the runbooks it names.
    let _ = medic::drill::parse_file(Path::new("drills/fuzz.toml"), text);
});
