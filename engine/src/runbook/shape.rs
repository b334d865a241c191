//! The shape of a TOML file, checked against its JSON Schema before its meaning: every syntax
//! error, unknown key, wrong type and missing field in the file at once, in the file's own
//! words ("the gate of step `restart`: `successes` must be a whole number >= 1").
//!
//! What does not fit is set aside so the rest of the file can still be checked for meaning: an
//! optional key is removed, a required one is replaced by a placeholder. Placeholders sit at an
//! empty span, so a mistake the meaning checks find in one (an empty `uses` names no plugin) is
//! recognised as a consequence of a mistake already reported and dropped ([`Parsed::follows`]).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde_json::Value as Schema;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::diag::{Diagnostic, did_you_mean};

/// How a file names its parts, for messages.
pub struct Words {
    /// Lists of tables and what one element is called: `("steps", "step")`.
    pub lists: &'static [(&'static str, &'static str)],
    /// Tables of named tables and what one entry is called: `("plugins", "plugin")`.
    pub maps: &'static [(&'static str, &'static str)],
}

/// A file parsed as far as it goes.
pub struct Parsed<T> {
    /// `None` only when what is left still does not deserialise (a mistake the schema does not
    /// describe); its error is then among `diags`.
    pub doc: Option<T>,
    pub diags: Vec<Diagnostic>,
    /// Where placeholders stand (their spans are empty).
    placeholders: BTreeSet<usize>,
}

impl<T> Parsed<T> {
    /// Whether a later diagnostic is about a placeholder or a value the syntax recovery made
    /// up, i.e. a consequence of a mistake already reported.
    pub fn follows(&self, d: &Diagnostic) -> bool {
        d.span
            .as_ref()
            .is_some_and(|s| s.is_empty() && self.placeholders.contains(&s.start))
    }
}

/// Parses `text`, checks it against `schema` and deserialises what fits.
pub fn parse<T: DeserializeOwned>(text: &str, schema: &Schema, words: &Words) -> Parsed<T> {
    let (root, errors) = DeTable::parse_recoverable(text);
    let syntax = syntax_errors(text, &errors);
    let syntax_count = syntax.len();
    let mut walker = Walker {
        root: schema,
        text_len: text.len(),
        words,
        diags: syntax,
        placeholders: BTreeSet::new(),
    };
    if !errors.is_empty() {
        // The recovery fills what it could not read with values at 0..0.
        walker.placeholders.insert(0);
    }
    let span = root.span();
    let mut table = root.into_inner();
    walker.table(schema, &mut table, span.clone(), &Label::Root, "");
    if let Some(first) = errors
        .iter()
        .filter_map(toml::de::Error::span)
        .map(|s| s.start)
        .min()
    {
        // Past a syntax error the parser's recovery guesses (an unclosed `{` swallows the
        // tables after it), and what it guesses would be reported as mistakes of its own: the
        // first syntax error is reported, with the shape mistakes before it, and the meaning
        // is not checked until the syntax is right.
        let mut diags: Vec<Diagnostic> = walker.diags.drain(..syntax_count).collect();
        diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        diags.truncate(1);
        // A diagnostic moved back to its cause (an unclosed `{`) moves the limit too.
        let first = diags
            .iter()
            .filter_map(|d| d.span.as_ref().map(|s| s.start))
            .fold(first, usize::min);
        diags.extend(
            walker
                .diags
                .into_iter()
                .filter(|d| d.span.as_ref().is_some_and(|s| s.end <= first)),
        );
        diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        return Parsed {
            doc: None,
            diags,
            placeholders: walker.placeholders,
        };
    }
    let doc = match T::deserialize(toml::de::Deserializer::from(Spanned::new(span, table))) {
        Ok(doc) => Some(doc),
        Err(e) => {
            walker.diags.push(serde_error(&e));
            None
        }
    };
    Parsed {
        doc,
        diags: walker.diags,
        placeholders: walker.placeholders,
    }
}

/// A deserialisation error as a diagnostic, serde's list of expected keys as its hint.
pub fn serde_error(e: &toml::de::Error) -> Diagnostic {
    let message = e.message().trim_end().to_owned();
    match message.split_once(", expected ") {
        Some((head, expected)) => {
            Diagnostic::new(head.to_owned(), e.span()).help(format!("expected {expected}"))
        }
        None => Diagnostic::new(message, e.span()),
    }
}

/// The syntax errors, except a redefined table's keys: they repeat the table's own error.
fn syntax_errors(text: &str, errors: &[toml::de::Error]) -> Vec<Diagnostic> {
    let mut redefined: Option<Range<usize>> = None;
    let mut out = Vec::new();
    for e in errors {
        if e.message().trim_end() == "duplicate key"
            && let Some(span) = e.span()
        {
            if redefined.as_ref().is_some_and(|r| r.contains(&span.start)) {
                continue;
            }
            let line_start = text[..span.start.min(text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            if text[line_start..].trim_start().starts_with('[') {
                let body = text[line_start..]
                    .find('\n')
                    .map_or(text.len(), |i| line_start + i);
                let end = text[body..]
                    .find("\n[")
                    .map_or(text.len(), |i| body + i + 1);
                redefined = Some(body..end);
            }
        }
        out.push(syntax(text, e));
    }
    out
}

fn syntax(text: &str, e: &toml::de::Error) -> Diagnostic {
    let mut d = serde_error(e);
    // An unclosed inline table makes the parser read the next lines as its content and
    // complain there: say where the `{` was opened.
    if let Some(span) = e.span()
        && (d.message.contains("inline table") || d.message.contains("missing comma"))
        && let Some(open) = unclosed_brace_before(text, span.start)
    {
        let (found, _) = super::diag::line_col(text, span.start);
        let line_start = text
            .get(..span.start.min(text.len()))
            .and_then(|t| t.rfind('\n'))
            .map_or(0, |i| i + 1);
        if text[line_start..].trim_start().starts_with('[') {
            // A table header inside an inline table: the `{` before it was never closed.
            d = Diagnostic::at(open..open + 1, "this inline table is not closed").help(format!(
                "close it with `}}`; the parser read on to the table on line {found}"
            ));
        } else {
            let (line, _) = super::diag::line_col(text, open);
            d.help = Some(format!("is the `{{` on line {line} closed?"));
        }
    }
    if d.message == "duplicate key"
        && let Some(span) = e.span()
    {
        let key = text.get(span.clone()).unwrap_or_default().trim_matches('"');
        d.message = format!("`{key}` is defined twice");
        if let Some(line) = first_definition(text, span.start) {
            d.help = Some(format!("first defined on line {line}"));
        }
    }
    d
}

/// Where the last inline table opened before `at` and left open on its line starts (a byte
/// offset), looking at the lines before `at`, outside quoted strings and comments.
fn unclosed_brace_before(text: &str, at: usize) -> Option<usize> {
    let before = text.get(..at.min(text.len()))?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let mut offset = 0;
    let mut found = None;
    for line in before[..line_start].split_inclusive('\n') {
        let mut open: Vec<usize> = Vec::new();
        let mut quote = None;
        for (i, c) in line.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '{') => open.push(offset + i),
                (None, '}') => {
                    open.pop();
                }
                _ => {}
            }
        }
        if let Some(&o) = open.last() {
            found = Some(o);
        }
        offset += line.len();
    }
    found
}

/// The line (1-based) where what is redefined at `at` was first defined: the same table header
/// earlier in the file, or the same key earlier in the same table.
fn first_definition(text: &str, at: usize) -> Option<usize> {
    let line_start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let lines: Vec<&str> = text[..line_start].lines().collect();
    let here = text[line_start..].lines().next()?.trim();
    let normal = |l: &str| l.split('#').next().unwrap_or("").replace([' ', '\t'], "");
    if here.starts_with('[') {
        let header = normal(here);
        return lines
            .iter()
            .position(|l| normal(l) == header)
            .map(|i| i + 1);
    }
    let key = normal(here);
    let key = key.split(['=', '.']).next()?;
    for (i, l) in lines.iter().enumerate().rev() {
        let l = normal(l);
        if l.starts_with('[') {
            break;
        }
        if l.split(['=', '.']).next() == Some(key) {
            return Some(i + 1);
        }
    }
    None
}

/// Where a value is, in the file's words. Built as the walk goes down and written out only
/// for a mistake: most values have none, and a 10,000-step runbook has 60,000 of them.
enum Label<'a> {
    Root,
    /// A value in a table: "[KEY]" at the top, "the KEY of PARENT" for a table, "`KEY` of
    /// PARENT" otherwise.
    Field {
        parent: &'a Label<'a>,
        key: &'a str,
        table: bool,
    },
    /// A named entry of a table of tables: "WORD `NAME`", or "`NAME` in PARENT".
    Entry {
        parent: &'a Label<'a>,
        word: Option<&'static str>,
        name: &'a str,
    },
    /// An element of a list: "WORD `NAME`" or "WORD N" (with " of PARENT" below the top), or
    /// "item N of LIST".
    Item {
        list: &'a Label<'a>,
        parent: &'a Label<'a>,
        word: Option<&'static str>,
        name: Option<String>,
        index: usize,
    },
}

impl Label<'_> {
    fn text(&self) -> String {
        match self {
            Label::Root => "the file".into(),
            Label::Field {
                parent: Label::Root,
                key,
                ..
            } => format!("[{key}]"),
            Label::Field {
                parent,
                key,
                table: true,
            } => format!("the {key} of {}", parent.text()),
            Label::Field { parent, key, .. } => format!("`{key}` of {}", parent.text()),
            Label::Entry {
                word: Some(word),
                name,
                ..
            } => format!("{word} `{name}`"),
            Label::Entry { parent, name, .. } => format!("`{name}` in {}", parent.text()),
            Label::Item {
                list,
                parent,
                word,
                name,
                index,
            } => {
                let of = match parent {
                    Label::Root => String::new(),
                    p => format!(" of {}", p.text()),
                };
                match (word, name) {
                    (Some(w), Some(n)) => format!("{w} `{n}`{of}"),
                    (Some(w), None) => format!("{w} {}{of}", index + 1),
                    (None, _) => format!("item {} of {}", index + 1, list.text()),
                }
            }
        }
    }

    /// What a message says must be something: "`successes` of the gate of step `x`" rather
    /// than "the successes of ...".
    fn subject(&self) -> String {
        match self {
            Label::Field {
                parent,
                key,
                table: true,
            } if !matches!(parent, Label::Root) => format!("`{key}` of {}", parent.text()),
            other => other.text(),
        }
    }
}

struct Walker<'s> {
    root: &'s Schema,
    text_len: usize,
    words: &'s Words,
    diags: Vec<Diagnostic>,
    placeholders: BTreeSet<usize>,
}

impl<'s> Walker<'s> {
    fn resolve(&self, mut s: &'s Schema) -> &'s Schema {
        // Bounded: a schema that refers to itself must not hang the parser.
        for _ in 0..8 {
            match s.get("$ref").and_then(Schema::as_str) {
                Some(r) => match r.strip_prefix("#/").and_then(|p| {
                    p.split('/')
                        .try_fold(self.root, |node, part| node.get(part))
                }) {
                    Some(target) => s = target,
                    None => break,
                },
                None => break,
            }
        }
        s
    }

    /// Checks a table; `at` is what it is called, `key` what it is written as.
    fn table(
        &mut self,
        s: &'s Schema,
        table: &mut DeTable<'_>,
        span: Range<usize>,
        at: &Label<'_>,
        key: &str,
    ) {
        let s = self.resolve(s);
        let props = s.get("properties").and_then(Schema::as_object);
        let required: Vec<&str> = s
            .get("required")
            .and_then(Schema::as_array)
            .map(|r| r.iter().filter_map(Schema::as_str).collect())
            .unwrap_or_default();
        let additional = s.get("additionalProperties");
        let mut remove = Vec::new();
        let mut replace = Vec::new();
        for (written, value) in table.iter_mut() {
            let name: &str = written.get_ref();
            if let Some(child) = props.and_then(|p| p.get(name)) {
                let label = Label::Field {
                    parent: at,
                    key: name,
                    table: value.get_ref().is_table(),
                };
                if !self.value(child, value, &label, name, at) {
                    if required.contains(&name) {
                        replace.push((name.to_owned(), child));
                    } else {
                        remove.push(name.to_owned());
                    }
                }
            } else if let Some(entry) = additional.filter(|a| a.is_object()) {
                let label = Label::Entry {
                    parent: at,
                    word: word(self.words.maps, key),
                    name,
                };
                if !self.value(entry, value, &label, name, at) {
                    replace.push((name.to_owned(), entry));
                }
            } else if additional.and_then(Schema::as_bool) == Some(false) {
                let known: Vec<&str> = props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let what = match at {
                    Label::Root => format!("unknown section `{name}`"),
                    at => format!("unknown key `{name}` in {}", at.text()),
                };
                self.diags.push(
                    Diagnostic::at(written.span(), what).help(
                        did_you_mean(name, known.iter().copied())
                            .unwrap_or_else(|| format!("expected one of: {}", known.join(", "))),
                    ),
                );
                remove.push(name.to_owned());
            }
        }
        for name in remove {
            table.remove(name.as_str());
        }
        for (name, s) in replace {
            if let Some(v) = table.get_mut(name.as_str()) {
                let at = v.span().start;
                *v = self.placeholder(s, at);
            }
        }
        for name in required {
            if table.contains_key(name) {
                continue;
            }
            let child = &props.expect("required keys are properties")[name];
            let what = match at {
                Label::Root => match self.resolve(child).get("type").and_then(Schema::as_str) {
                    Some("object") => format!("the file has no [{name}] table"),
                    _ => format!("the file has no `{name}`"),
                },
                at => format!("{} has no `{name}`", at.text()),
            };
            let help = self
                .resolve(child)
                .get("description")
                .and_then(Schema::as_str)
                .map(str::to_owned);
            // The root table's span is empty; the file's first character stands for it.
            let at_table = match at {
                Label::Root => 0..self.text_len.min(1),
                _ => span.clone(),
            };
            self.diags
                .push(Diagnostic::at(at_table, what).help_opt(help));
            let value = self.placeholder(child, span.start);
            table.insert(
                Spanned::new(span.start..span.start, Cow::Owned(name.to_owned())),
                value,
            );
        }
    }

    /// Checks one value; false when it does not fit and the caller must set it aside.
    /// `at` is what the value is called, `key` what it is written as, `parent` what the
    /// table holding it is called.
    fn value(
        &mut self,
        s: &'s Schema,
        v: &mut Spanned<DeValue<'_>>,
        at: &Label<'_>,
        key: &str,
        parent: &Label<'_>,
    ) -> bool {
        let s = self.resolve(s);
        if let Some(alternatives) = s.get("oneOf").and_then(Schema::as_array) {
            return match alternatives.iter().find(|a| self.fits(a, v.get_ref())) {
                Some(a) => self.value(a, v, at, key, parent),
                None => {
                    self.wrong(s, v, at);
                    false
                }
            };
        }
        if !self.fits(s, v.get_ref()) {
            // The two bracket slips get their own explanation, and are read as meant.
            let items = s.get("items").map(|i| self.resolve(i));
            let wants = |t: &str| s.get("type").and_then(Schema::as_str) == Some(t);
            if wants("array")
                && items.and_then(|i| i.get("type")).and_then(Schema::as_str) == Some("object")
                && matches!(v.get_ref(), DeValue::Table(_))
            {
                self.diags.push(
                    Diagnostic::at(
                        v.span(),
                        format!("`[{key}]` declares one table, but `{key}` is a list"),
                    )
                    .help(format!(
                        "write `[[{key}]]` (double brackets) before each one"
                    )),
                );
                let span = v.span();
                let table = std::mem::replace(v.get_mut(), DeValue::Array(DeArray::new()));
                *v.get_mut() = DeValue::Array(std::iter::once(Spanned::new(span, table)).collect());
                return self.value(s, v, at, key, parent);
            }
            if wants("object")
                && let DeValue::Array(list) = v.get_mut()
                && list
                    .first()
                    .is_some_and(|f| matches!(f.get_ref(), DeValue::Table(_)))
            {
                let span = v.span();
                self.diags.push(
                    Diagnostic::at(
                        span,
                        format!("`[[{key}]]` declares a list, but `{key}` is one table"),
                    )
                    .help(format!("write `[{key}]` (single brackets), once")),
                );
                let DeValue::Array(list) = std::mem::replace(v.get_mut(), DeValue::Boolean(false))
                else {
                    unreachable!()
                };
                *v = list.into_iter().next().expect("checked non-empty");
                return self.value(s, v, at, key, parent);
            }
            self.wrong(s, v, at);
            return false;
        }
        let span = v.span();
        match v.get_mut() {
            DeValue::Table(t) => self.table(s, t, span, at, key),
            DeValue::Array(list) => {
                if let Some(items) = s.get("items") {
                    let items = self.resolve(items);
                    let tables = items.get("type").and_then(Schema::as_str) == Some("object");
                    let word = word(self.words.lists, key);
                    // Walked in place: a list is rebuilt only when an item is set aside.
                    let mut rejected = Vec::new();
                    for (index, item) in list.iter_mut().enumerate() {
                        let label = Label::Item {
                            list: at,
                            parent,
                            word,
                            name: item_name(item.get_ref()),
                            index,
                        };
                        if !self.value(items, item, &label, key, parent) {
                            if tables {
                                // A list of tables keeps its length: later mistakes are still
                                // counted and named as written.
                                *item = self.placeholder(items, item.span().start);
                            } else {
                                rejected.push(index);
                            }
                        }
                    }
                    if !rejected.is_empty() {
                        let all = std::mem::replace(list, DeArray::new());
                        *list = all
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| !rejected.contains(i))
                            .map(|(_, item)| item)
                            .collect();
                    }
                }
            }
            _ => {}
        }
        true
    }

    /// Whether a value has the schema's type, constant, allowed value and minimum.
    fn fits(&self, s: &Schema, v: &DeValue<'_>) -> bool {
        let s = self.resolve(s);
        if let Some(c) = s.get("const") {
            return v.as_str() == c.as_str();
        }
        if let Some(allowed) = s.get("enum").and_then(Schema::as_array) {
            return v
                .as_str()
                .is_some_and(|x| allowed.iter().any(|a| a.as_str() == Some(x)));
        }
        if let Some(alternatives) = s.get("oneOf").and_then(Schema::as_array) {
            return alternatives.iter().any(|a| self.fits(a, v));
        }
        match s.get("type").and_then(Schema::as_str) {
            None => true,
            Some("string") => v.as_str().is_some_and(|x| {
                s.get("minLength")
                    .and_then(Schema::as_u64)
                    .is_none_or(|min| x.chars().count() as u64 >= min)
            }),
            Some("boolean") => v.is_bool(),
            Some("number") => v.is_integer() || v.is_float(),
            Some("array") => v.is_array(),
            Some("object") => v.is_table(),
            Some("integer") => {
                let Some(i) = v.as_integer() else {
                    return false;
                };
                let Ok(n) = i64::from_str_radix(i.as_str(), i.radix()) else {
                    return false;
                };
                let max = s.get("maximum").and_then(Schema::as_i64);
                match s.get("minimum").and_then(Schema::as_i64) {
                    // Counts are u32 in the model.
                    Some(min) => {
                        n >= min
                            && (min < 0 || u32::try_from(n).is_ok())
                            && max.is_none_or(|m| n <= m)
                    }
                    None => max.is_none_or(|m| n <= m),
                }
            }
            Some(_) => false,
        }
    }

    fn wrong(&mut self, s: &'s Schema, v: &Spanned<DeValue<'_>>, at: &Label<'_>) {
        let subject = at.subject();
        let mut d = Diagnostic::at(
            v.span(),
            format!(
                "{subject} must be {}, not {}",
                self.phrase(s),
                found(v.get_ref())
            ),
        );
        let resolved = self.resolve(s);
        if let (Some(word), Some(allowed)) = (
            v.get_ref().as_str(),
            resolved.get("enum").and_then(Schema::as_array),
        ) {
            d = d.help_opt(did_you_mean(
                word,
                allowed.iter().filter_map(Schema::as_str),
            ));
        }
        if d.help.is_none() && (resolved.get("enum").is_some() || resolved.get("oneOf").is_some()) {
            d = d.help_opt(
                resolved
                    .get("description")
                    .and_then(Schema::as_str)
                    .map(str::to_owned),
            );
        }
        self.diags.push(d);
    }

    /// What a schema accepts, as a person would say it: its `title` when it has one.
    fn phrase(&self, s: &Schema) -> String {
        let duration = s.get("$ref").and_then(Schema::as_str) == Some("#/$defs/duration");
        let s = self.resolve(s);
        if let Some(title) = s.get("title").and_then(Schema::as_str) {
            return title.to_owned();
        }
        if duration
            || s.get("description")
                .and_then(Schema::as_str)
                .is_some_and(|d| d.starts_with("A duration"))
        {
            return "a duration such as \"30s\" or \"5m\"".into();
        }
        if let Some(alternatives) = s.get("oneOf").and_then(Schema::as_array) {
            let all: Vec<String> = alternatives.iter().map(|a| self.phrase(a)).collect();
            return all.join(" or ");
        }
        if let Some(c) = s.get("const") {
            return c.to_string();
        }
        if let Some(allowed) = s.get("enum").and_then(Schema::as_array) {
            let all: Vec<String> = allowed.iter().map(Schema::to_string).collect();
            return format!("one of {}", all.join(", "));
        }
        match s.get("type").and_then(Schema::as_str) {
            Some("string") if s.get("minLength").is_some() => "a non-empty string".into(),
            Some("string") => "a string".into(),
            Some("boolean") => "true or false".into(),
            Some("number") => "a number".into(),
            Some("integer") => match (
                s.get("minimum").and_then(Schema::as_i64),
                s.get("maximum").and_then(Schema::as_i64),
            ) {
                (Some(min), Some(max)) => format!("a whole number from {min} to {max}"),
                (Some(min), None) => format!("a whole number >= {min}"),
                (None, Some(max)) => format!("a whole number <= {max}"),
                (None, None) => "a whole number".into(),
            },
            Some("object") => "a table".into(),
            Some("array") => match s.get("items").map(|i| self.phrase(i)) {
                Some(item) => format!("a list of {}", plural(&item)),
                None => "a list".into(),
            },
            _ => "a value".into(),
        }
    }

    /// A value that fits `s`, standing where a value that did not fit (or none) was.
    fn placeholder<'i>(&mut self, s: &Schema, at: usize) -> Spanned<DeValue<'i>> {
        self.placeholders.insert(at);
        let s = self.resolve(s);
        let s = s
            .get("oneOf")
            .and_then(Schema::as_array)
            .and_then(|a| a.first())
            .map_or(s, |a| self.resolve(a));
        let value = match (s.get("const"), s.get("type").and_then(Schema::as_str)) {
            (Some(c), _) => DeValue::String(Cow::Owned(c.as_str().unwrap_or("").to_owned())),
            (_, Some("integer" | "number")) => DeValue::Integer(Default::default()),
            (_, Some("boolean")) => DeValue::Boolean(false),
            (_, Some("array")) => DeValue::Array(DeArray::new()),
            (_, Some("object")) => {
                let mut table = DeTable::new();
                let required = s.get("required").and_then(Schema::as_array);
                let props = s.get("properties");
                for name in required.into_iter().flatten().filter_map(Schema::as_str) {
                    if let Some(child) = props.and_then(|p| p.get(name)) {
                        let value = self.placeholder(child, at);
                        table.insert(Spanned::new(at..at, Cow::Owned(name.to_owned())), value);
                    }
                }
                DeValue::Table(table)
            }
            _ => DeValue::String(Cow::Borrowed("")),
        };
        Spanned::new(at..at, value)
    }
}

/// The word for one element of the list or table written as `key` (`steps` -> "step").
fn word(words: &[(&'static str, &'static str)], key: &str) -> Option<&'static str> {
    words.iter().find(|(k, _)| *k == key).map(|(_, w)| *w)
}

/// A list element's name as written (`id` or `name`), for messages.
fn item_name(v: &DeValue<'_>) -> Option<String> {
    let t = v.as_table()?;
    ["id", "name"]
        .iter()
        .find_map(|k| t.get(*k)?.get_ref().as_str().map(str::to_owned))
        .filter(|n| !n.is_empty() && n.len() <= 64)
}

fn plural(item: &str) -> String {
    match item {
        "a string" => "strings".into(),
        "a table" => "tables".into(),
        "a whole number" => "whole numbers".into(),
        s if s.starts_with("a duration") => "durations".into(),
        s => format!("({s})"),
    }
}

/// How a value reads in a message: `the string "3"`, `a table`.
fn found(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => {
            let short: String = s.chars().take(40).collect();
            let more = if short.len() < s.len() { "..." } else { "" };
            format!("the string {short:?}{more}")
        }
        DeValue::Integer(i) if i.radix() == 10 => format!("the number {}", i.as_str()),
        DeValue::Integer(_) => "a number".into(),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the date/time {d}"),
        DeValue::Array(_) => "a list".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_definitions_name_the_first() {
        let text = "[a]\nx = 1\ny = 2\nx = 3\n[b]\n[a]\n";
        assert_eq!(first_definition(text, text.find("x = 3").unwrap()), Some(2));
        assert_eq!(
            first_definition(text, text.rfind("[a]").unwrap() + 1),
            Some(1)
        );
    }
}
