//! Drill schedules: cron expressions in a timezone.
//!
//! Three forms are accepted:
//! - 5 fields, the crontab form: `minute hour day-of-month month day-of-week`;
//! - 6 fields: `second` first;
//! - 7 fields: `second` first and `year` last.
//!
//! Day-of-week numbers follow crontab in every form: 0 or 7 is Sunday, 1 Monday... 6
//! Saturday; names (`Mon`, `Tue-Fri`) work too. Each field accepts `*`, lists (`1,15`),
//! ranges (`1-5`) and steps (`*/15`, `0-30/10`). A mistake is reported with the field it is
//! in, e.g. "field 2 (hour) `25`: ...".

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

const FIELDS_7: [&str; 7] = [
    "second",
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
    "year",
];

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written.
    pub expression: String,
    pub timezone: Tz,
    inner: cron::Schedule,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.timezone == other.timezone
    }
}

impl Schedule {
    /// Parses `expression` (5, 6 or 7 fields) in `timezone` (an IANA name such as
    /// `Europe/Paris`; `UTC` by default).
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Schedule, String> {
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                format!(
                    "`{name}` is not a timezone; use an IANA name such as `Europe/Paris` or `UTC`"
                )
            })?,
        };
        let fields: Vec<&str> = expression.split_whitespace().collect();
        // Normalised to the 7-field form, with crontab's day-of-week numbers converted.
        let (mut full, names): (Vec<String>, &[&str]) = match fields.len() {
            5 => (
                std::iter::once("0")
                    .chain(fields.iter().copied())
                    .chain(std::iter::once("*"))
                    .map(str::to_owned)
                    .collect(),
                &FIELDS_7[1..6],
            ),
            6 => (
                fields
                    .iter()
                    .copied()
                    .chain(std::iter::once("*"))
                    .map(str::to_owned)
                    .collect(),
                &FIELDS_7[..6],
            ),
            7 => (
                fields.iter().map(|f| (*f).to_owned()).collect(),
                &FIELDS_7[..],
            ),
            n => {
                return Err(format!(
                    "`{expression}` has {n} field{}; a schedule has 5 (minute hour day-of-month month day-of-week), 6 (seconds first) or 7 (and a year)",
                    if n == 1 { "" } else { "s" }
                ));
            }
        };
        let offset = if fields.len() == 5 { 1 } else { 0 };
        let field_error = |i7: usize, why: String| {
            let n = i7 - offset + 1;
            format!(
                "field {n} ({}) `{}`: {why}",
                names[i7 - offset],
                fields[i7 - offset]
            )
        };
        full[5] = crontab_day_of_week(&full[5]).map_err(|why| field_error(5, why))?;
        // Check each field alone against a neutral expression, so the error names it.
        let neutral = ["0", "*", "*", "*", "*", "*", "*"];
        for i in 0..7 {
            let mut probe: Vec<&str> = neutral.to_vec();
            probe[i] = &full[i];
            let probe = probe.join(" ");
            if let Err(e) = cron::Schedule::from_str(&probe) {
                let why = reason(&e.to_string());
                // Some errors carry no explanation, only the expression.
                let why = if why.trim() == probe {
                    "not a valid value for this field".to_owned()
                } else {
                    why
                };
                return Err(field_error(i, why));
            }
        }
        let inner = cron::Schedule::from_str(&full.join(" "))
            .map_err(|e| format!("`{expression}`: {}", reason(&e.to_string())))?;
        let schedule = Schedule {
            expression: expression.to_owned(),
            timezone,
            inner,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!("`{expression}` never fires"));
        }
        Ok(schedule)
    }

    /// The first time strictly after `after` that the schedule fires.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.inner
            .after(&after.with_timezone(&self.timezone))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The cron crate's message without its copy of the expression and caret line.
fn reason(message: &str) -> String {
    let last = message
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .unwrap_or(message);
    // The crate says "must be less than 59" where it means "at most 59".
    last.replace("must be less than", "must be at most")
}

/// Converts crontab day-of-week numbers (0 or 7 = Sunday .. 6 = Saturday) to the cron
/// crate's (1 = Sunday .. 7 = Saturday). Names and step values are left alone.
fn crontab_day_of_week(field: &str) -> Result<String, String> {
    let convert = |n: &str| -> Result<u32, String> {
        match n.parse::<u32>() {
            Ok(d @ 0..=6) => Ok(d + 1),
            Ok(7) => Ok(1),
            Ok(d) => Err(format!("day of week {d} is not 0-7 (0 or 7 is Sunday)")),
            Err(_) => Err(format!("`{n}` is not a day of week")),
        }
    };
    let numeric = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let mut parts = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let step = step.map_or(String::new(), |s| format!("/{s}"));
        let converted = match range.split_once('-') {
            Some((a, b)) if numeric(a) && numeric(b) => {
                let (a, b) = (
                    a.parse::<u32>().unwrap_or(99),
                    b.parse::<u32>().unwrap_or(99),
                );
                if a > 7 || b > 7 {
                    return Err(format!("day of week range {a}-{b} is not within 0-7"));
                }
                match (a, b) {
                    // Sunday as 7 at the end of a range: everything from `a` to Saturday,
                    // and Sunday.
                    (a, 7) if a > 0 => {
                        if step.is_empty() {
                            format!("{}-7,1", a + 1)
                        } else {
                            return Err(
                                "write a stepped range ending on Sunday with 0 at the start (e.g. 0-6/2)"
                                    .into(),
                            );
                        }
                    }
                    (0, 7) => format!("1-7{step}"),
                    (a, b) => format!(
                        "{}-{}{step}",
                        convert(&a.to_string())?,
                        convert(&b.to_string())?
                    ),
                }
            }
            None if numeric(range) => format!("{}{step}", convert(range)?),
            _ => format!("{range}{step}"),
        };
        parts.push(converted);
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_three_forms() {
        let five = Schedule::parse("*/15 3 * * *", None).unwrap();
        assert_eq!(
            five.next_after(at("2026-11-22T03:07:00Z")),
            Some(at("2026-11-22T03:15:00Z"))
        );
        let six = Schedule::parse("30 0 12 * * *", None).unwrap();
        assert_eq!(
            six.next_after(at("2026-11-22T12:00:30Z")),
            Some(at("2026-11-23T12:00:30Z"))
        );
        let seven = Schedule::parse("0 0 12 1 1 * 2028", None).unwrap();
        assert_eq!(
            seven.next_after(at("2026-11-22T00:00:00Z")),
            Some(at("2028-01-01T12:00:00Z"))
        );
    }

    #[test]
    fn days_of_week_are_crontab_numbers() {
        // 2026-11-22 is a Sunday.
        let weekdays = Schedule::parse("0 9 * * 1-5", None).unwrap();
        let next = weekdays.next_after(at("2026-11-22T10:00:00Z")).unwrap();
        assert_eq!(next.weekday(), Weekday::Mon);
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * Sun"] {
            let s = Schedule::parse(sunday, None).unwrap();
            let next = s.next_after(at("2026-11-23T00:00:00Z")).unwrap();
            assert_eq!(next.weekday(), Weekday::Sun, "{sunday}");
        }
        let weekend = Schedule::parse("0 9 * * 6-7", None).unwrap();
        let days: Vec<Weekday> =
            std::iter::successors(weekend.next_after(at("2026-11-23T00:00:00Z")), |t| {
                weekend.next_after(*t)
            })
            .take(4)
            .map(|t| t.weekday())
            .collect();
        assert_eq!(
            days,
            [Weekday::Sat, Weekday::Sun, Weekday::Sat, Weekday::Sun]
        );
        let even = Schedule::parse("0 9 * * */2", None).unwrap();
        let next = even.next_after(at("2026-11-22T10:00:00Z")).unwrap();
        assert_eq!(next.weekday(), Weekday::Tue);
    }

    #[test]
    fn a_timezone_moves_the_hour() {
        let paris = Schedule::parse("0 3 * * *", Some("Europe/Paris")).unwrap();
        let next = paris.next_after(at("2026-11-22T00:00:00Z")).unwrap();
        assert_eq!(next, at("2026-11-22T02:00:00Z"));
        let summer = paris.next_after(at("2026-07-01T00:00:00Z")).unwrap();
        assert_eq!(summer.hour(), 1);
        let e = Schedule::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(e.contains("not a timezone"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("0 25 * * *", "field 2 (hour) `25`"),
            ("61 * * * *", "field 1 (minute) `61`"),
            ("0 0 * * Funday", "field 5 (day of week) `Funday`"),
            ("0 0 * * 8", "field 5 (day of week) `8`"),
            ("0 0 0 * 13 *", "field 5 (month) `13`"),
            (
                "0 0 0 1 1 * 1066",
                "field 7 (year) `1066`: not a valid value",
            ),
            ("* * *", "has 3 fields"),
        ];
        for (expr, want) in cases {
            let e = Schedule::parse(expr, None).unwrap_err();
            assert!(e.contains(want), "{expr}: {e}");
        }
        let e = Schedule::parse("0 0 30 2 *", None).unwrap_err();
        assert!(e.contains("never fires"), "{e}");
        assert!(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().is_some());
    }
}
