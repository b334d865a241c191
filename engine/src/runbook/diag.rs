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
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Option<Range<usize>>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            help: None,
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
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
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
            writeln!(f, "error: {}", d.message)?;
            match &d.span {
                Some(span) => {
                    let (line, col) = line_col(self.text, span.start);
                    writeln!(f, "  --> {}:{line}:{col}", self.path)?;
                    let line_text = self.text.lines().nth(line - 1).unwrap_or("");
                    let width = line.to_string().len();
                    writeln!(f, "{:width$} |", "")?;
                    writeln!(f, "{line} | {line_text}")?;
                    let end_in_line = (span.end.min(self.text.len()) - span.start)
                        .min(line_text.len().saturating_sub(col - 1))
                        .max(1);
                    let marker_len = self.text
                        [span.start..span.start + end_in_line.min(self.text.len() - span.start)]
                        .chars()
                        .count()
                        .max(1);
                    writeln!(
                        f,
                        "{:width$} | {}{}",
                        "",
                        " ".repeat(col - 1),
                        "^".repeat(marker_len)
                    )?;
                }
                None => writeln!(f, "  --> {}", self.path)?,
            }
            if let Some(help) = &d.help {
                writeln!(f, "  = help: {help}")?;
            }
        }
        let n = self.diagnostics.len();
        write!(
            f,
            "{n} error{} in {}",
            if n == 1 { "" } else { "s" },
            self.path
        )
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
    fn suggestions() {
        assert_eq!(
            did_you_mean("urll", ["url", "method"]).unwrap(),
            "did you mean `url`?"
        );
        assert_eq!(did_you_mean("zzz", ["url", "method"]), None);
    }
}
