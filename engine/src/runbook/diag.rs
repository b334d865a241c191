//! Diagnostics that point at the exact place of a mistake: `file:line:col`, the offending
//! text, and a hint.

use std::fmt;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    /// Byte range in the runbook's text; `None` for mistakes outside the file (e.g. `--param`).
    pub span: Option<Range<usize>>,
    pub help: Option<String>,
    /// Worth knowing, but the runbook still runs.
    pub warning: bool,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Option<Range<usize>>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            help: None,
            warning: false,
        }
    }

    /// A warning: something that is likely a mistake but does not stop the runbook.
    pub fn warning_at(span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            warning: true,
            ..Self::at(span, message)
        }
    }

    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Self::new(message, Some(span))
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

/// Line and column (both 1-based, column in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

/// How many characters of the span's first line to underline (at least one). Works in
/// bytes on character boundaries: a span may start or end inside a multi-byte character
/// (a fuzzed file, a lexer's guess), and may run past its line.
fn marker_width(text: &str, span: &Range<usize>) -> usize {
    let floor = |mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(span.start);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let end = floor(span.end.max(start)).min(line_end);
    text[start..end].chars().count().max(1)
}

/// Past this many characters a line is shown as a window around its column: a minified or
/// generated line (or a hostile one) would otherwise fill the terminal.
const SHOWN: usize = 120;

/// `line` as shown, with the span's column and marker width in it: the whole line, or
/// [`SHOWN`] characters from a little before the column, cut ends marked `…`.
fn window(line: &str, col: usize, marker: usize) -> (String, usize, usize) {
    let count = line.chars().count();
    if count <= SHOWN {
        return (line.to_owned(), col, marker);
    }
    let from = (col - 1).saturating_sub(SHOWN / 3).min(count - SHOWN);
    let mut shown: String = if from > 0 {
        "…".into()
    } else {
        String::new()
    };
    shown.extend(line.chars().skip(from).take(SHOWN));
    if from + SHOWN < count {
        shown.push('…');
    }
    let at = col - from + usize::from(from > 0);
    let room = (from + SHOWN + 1).saturating_sub(col).max(1);
    (shown, at, marker.min(room))
}

/// Renders diagnostics the way compilers do, so people and editors both recognise them.
pub struct Report<'a> {
    pub path: &'a str,
    pub text: &'a str,
    pub diagnostics: &'a [Diagnostic],
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let level = if d.warning { "warning" } else { "error" };
            writeln!(f, "{level}: {}", d.message)?;
            match &d.span {
                Some(span) => {
                    let (line, col) = line_col(self.text, span.start);
                    writeln!(f, "  --> {}:{line}:{col}", self.path)?;
                    let line_text = self.text.lines().nth(line - 1).unwrap_or("");
                    let width = line.to_string().len();
                    writeln!(f, "{:width$} |", "")?;
                    let (shown, at, marker_len) =
                        window(line_text, col, marker_width(self.text, span));
                    writeln!(f, "{line} | {shown}")?;
                    writeln!(
                        f,
                        "{:width$} | {}{}",
                        "",
                        " ".repeat(at - 1),
                        "^".repeat(marker_len)
                    )?;
                }
                None => writeln!(f, "  --> {}", self.path)?,
            }
            if let Some(help) = &d.help {
                writeln!(f, "  = help: {help}")?;
            }
        }
        let warnings = self.diagnostics.iter().filter(|d| d.warning).count();
        let errors = self.diagnostics.len() - warnings;
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let summary = match (errors, warnings) {
            (_, 0) => count(errors, "error"),
            (0, _) => count(warnings, "warning"),
            _ => format!(
                "{} and {}",
                count(errors, "error"),
                count(warnings, "warning")
            ),
        };
        write!(f, "{summary} in {}", self.path)
    }
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = levenshtein(word, c);
        if d <= (word.len().max(c.len()) / 3).max(1) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A diagnostic as JSON (`medic validate --output json`, the API's check): severity,
/// message, help, and where (`line`, `col`, 1-based; none for a mistake of no one place).
pub fn to_json(text: &str, d: &Diagnostic) -> serde_json::Value {
    let at = d.span.as_ref().map(|s| {
        let (line, col) = line_col(text, s.start);
        serde_json::json!({ "line": line, "col": col })
    });
    serde_json::json!({
        "severity": if d.warning { "warning" } else { "error" },
        "message": d.message, "help": d.help, "at": at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_rendering() {
        let text = "a = 1\nbb = \"x\"\n";
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 11), (2, 6));
        let d = [Diagnostic::at(6..8, "unknown key `bb`").help("did you mean `b`?")];
        let out = Report {
            path: "r.toml",
            text,
            diagnostics: &d,
        }
        .to_string();
        assert_eq!(
            out,
            "error: unknown key `bb`\n  --> r.toml:2:1\n  |\n2 | bb = \"x\"\n  | ^^\n  = help: did you mean `b`?\n1 error in r.toml"
        );
    }

    #[test]
    fn a_long_line_is_shown_as_a_window_around_its_span() {
        let text = format!(
            "x = [{}1, \"bad\"{}]\n",
            "0, ".repeat(5000),
            ", 2".repeat(5000)
        );
        let at = text.find("\"bad\"").unwrap();
        let d = [Diagnostic::at(at..at + 5, "m")];
        let out = Report {
            path: "r.toml",
            text: &text,
            diagnostics: &d,
        }
        .to_string();
        assert!(out.len() < 400, "{out}");
        assert!(out.contains("  --> r.toml:1:15009"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        let (shown, marker) = (lines[3], lines[4]);
        assert!(shown.starts_with("1 | …") && shown.ends_with('…'), "{out}");
        // The marker is under the span.
        let col = marker.find('^').unwrap();
        let under: String = shown.chars().skip(col).take(5).collect();
        assert_eq!(under, "\"bad\"", "{out}");
        assert_eq!(marker.matches('^').count(), 5);
    }

    #[test]
    fn spans_across_lines_after_multibyte_characters_render() {
        // A value that spans lines after a multi-byte character, and spans that start or
        // end inside one: rendered, never a panic.
        let text = "name = \"é\u{1F600}\"\nx = \"\"\"ü\nü\"\"\"\n";
        for start in 0..text.len() {
            for end in [start, start + 1, start + 3, start + 9, text.len() + 5] {
                let d = [Diagnostic::at(start..end, "m")];
                let _ = Report {
                    path: "r.toml",
                    text,
                    diagnostics: &d,
                }
                .to_string();
            }
        }
        let d = [Diagnostic::at(7..text.len(), "m")];
        let out = Report {
            path: "r.toml",
            text,
            diagnostics: &d,
        }
        .to_string();
        assert!(out.contains("1 | name = \"é😀\"\n  |        ^^^^"), "{out}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("urll", ["url", "method"]).unwrap(),
            "did you mean `url`?"
        );
        assert_eq!(did_you_mean("zzz", ["url", "method"]), None);
    }
}
