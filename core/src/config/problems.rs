//! What is wrong with a TOML file, all of it at once, each problem at its
//! full dotted key (`bastiond.users.alice.limits.pids`,
//! `bastiond.allow_users[2]`) and its line, whether the key sits under a
//! table header, in a dotted key or in an inline table.
//!
//! Keys come from `serde_path_to_error` (the path serde was at), lines from
//! the spans of toml's own parse of the document. After a value fails to
//! deserialize, it is taken out of the document and the rest is tried
//! again, so one run reports every such value; then the section's checks
//! ([`Checks`]) report every invalid value of what did deserialize. Used
//! for `bastion.toml`, and made for the access file to come.

use std::fmt;
use std::ops::{Deref, Range};

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// At most this many values are taken out and tried again: a file with more
/// wrong values than this reports the first ones.
const MAX_PROBLEMS: usize = 100;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A key path in the file, shown as TOML writes it: `a.b."c.d"[2].e`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The document itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// This path, then `key`.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.into()));
        path
    }

    /// This path, then array element `index`.
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        Self(
            path.iter()
                .filter_map(|segment| match segment {
                    S::Map { key } => Some(Segment::Key(key.clone())),
                    S::Seq { index } => Some(Segment::Index(*index)),
                    S::Enum { variant } => Some(Segment::Key(variant.clone())),
                    S::Unknown => None,
                })
                .collect(),
        )
    }

    fn ends_with_key(&self, key: &str) -> bool {
        matches!(self.0.last(), Some(Segment::Key(k)) if k == key)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A value that deserialized but is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: KeyPath,
    pub message: String,
}

/// Collects every invalid value a section's checks find.
#[derive(Debug, Default)]
pub struct Checks {
    found: Vec<Invalid>,
}

impl Checks {
    /// Records that the value at `key` is invalid, and why (what it must be).
    pub fn bad(&mut self, key: KeyPath, message: impl Into<String>) {
        self.found.push(Invalid {
            key,
            message: message.into(),
        });
    }
}

/// One thing wrong with the file, located at a key and a line where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    /// Shown escaped: key and message quote the file's text, and control
    /// characters in it must not reach the terminal raw.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match (&self.line, &self.key) {
            (Some(line), Some(key)) => format!("line {line}, key `{key}`: {}", self.message),
            (Some(line), None) => format!("line {line}: {}", self.message),
            (None, Some(key)) => format!("key `{key}`: {}", self.message),
            (None, None) => self.message.clone(),
        };
        f.write_str(&crate::escape::escape(&text))
    }
}

/// Every problem of a file (never empty), in the file's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Deref for Problems {
    type Target = [Problem];
    fn deref(&self) -> &[Problem] {
        &self.0
    }
}

impl fmt::Display for Problems {
    /// One problem a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Problems {
    fn sorted(mut problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty());
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Self(problems)
    }
}

/// Parses `text` into `T`, then runs `check` on it: `T` when nothing is
/// wrong, else every problem found.
pub fn parse_checked<T: DeserializeOwned>(
    text: &str,
    check: impl FnOnce(&T, &mut Checks),
) -> Result<T, Problems> {
    let (document, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .map(|e| Problem {
                line: e.span().map(|span| line_number(text, span.start)),
                key: e.span().and_then(|span| key_at(text, span.start)),
                message: e.message().trim().to_owned(),
            })
            .collect();
        return Err(Problems::sorted(problems));
    }
    let located = Located { text, document };
    let mut working = located.document.clone();
    let mut problems = Vec::new();
    let value = loop {
        let deserializer = toml::de::Deserializer::from(working.clone());
        let error = match serde_path_to_error::deserialize::<_, T>(deserializer) {
            Ok(value) => break Some(value),
            Err(error) => error,
        };
        let mut key = KeyPath::from_serde(error.path());
        let error = error.into_inner();
        let message = error.message().trim().to_owned();
        if let Some(field) = unknown_field_name(&message)
            && !key.ends_with_key(&field)
        {
            key = key.key(field);
        }
        // A table whose bad value was taken out now misses that field:
        // already reported, at the field itself.
        let echo = missing_field_name(&message).is_some_and(|field| {
            let field_key = key.key(field).to_string();
            problems
                .iter()
                .any(|p: &Problem| p.key.as_deref() == Some(field_key.as_str()))
        });
        if !echo {
            problems.push(Problem {
                line: error
                    .span()
                    .map(|span| line_number(text, span.start))
                    .or_else(|| located.line_of(&key)),
                key: (!key.segments().is_empty()).then(|| key.to_string()),
                message,
            });
        }
        if problems.len() >= MAX_PROBLEMS || !remove(working.get_mut(), key.segments()) {
            break None;
        }
    };
    let Some(value) = value else {
        return Err(Problems::sorted(problems));
    };
    let mut checks = Checks::default();
    check(&value, &mut checks);
    problems.extend(checks.found.into_iter().map(|invalid| Problem {
        line: located.line_of(&invalid.key),
        key: Some(invalid.key.to_string()),
        message: invalid.message,
    }));
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(Problems::sorted(problems))
    }
}

/// The parsed document, for finding where a key is.
struct Located<'i> {
    text: &'i str,
    document: Spanned<DeTable<'i>>,
}

impl Located<'_> {
    /// The line of `key`: of the key itself when the file has it, else of
    /// the nearest table above it that the file has (a default value
    /// checked against one the file sets), else none.
    fn line_of(&self, key: &KeyPath) -> Option<usize> {
        let span = span_of(self.document.get_ref(), key.segments())?;
        Some(line_number(self.text, span.start))
    }
}

/// The span of the deepest part of `path` found in `table`.
fn span_of(table: &DeTable<'_>, path: &[Segment]) -> Option<Range<usize>> {
    let (Segment::Key(key), rest) = path.split_first()? else {
        return None;
    };
    let (found_key, value) = table.get_key_value(key.as_str())?;
    deeper(value, rest).or_else(|| Some(found_key.span()))
}

fn deeper(value: &Spanned<DeValue<'_>>, rest: &[Segment]) -> Option<Range<usize>> {
    match (value.get_ref(), rest.first()?) {
        (DeValue::Table(table), Segment::Key(_)) => span_of(table, rest),
        (DeValue::Array(items), Segment::Index(i)) => {
            let item = items.get(*i)?;
            deeper(item, &rest[1..]).or_else(|| Some(item.span()))
        }
        _ => None,
    }
}

/// Takes the value at `path` out of `table` (an array element: its whole
/// array). Says whether something was taken.
fn remove(table: &mut DeTable<'_>, path: &[Segment]) -> bool {
    match path {
        [Segment::Key(key)] | [Segment::Key(key), Segment::Index(_)] => {
            table.remove(key.as_str()).is_some()
        }
        [Segment::Key(key), rest @ ..] => match table.get_mut(key.as_str()) {
            Some(value) => remove_in(value.get_mut(), rest),
            None => false,
        },
        _ => false,
    }
}

fn remove_in(value: &mut DeValue<'_>, path: &[Segment]) -> bool {
    match (value, path.first()) {
        (DeValue::Table(table), Some(Segment::Key(_))) => remove(table, path),
        (DeValue::Array(items), Some(Segment::Index(i))) => match items.get_mut(*i) {
            Some(item) if path.len() > 2 => remove_in(item.get_mut(), &path[1..]),
            // An element itself, or a key of an element that is the last
            // step: arrays cannot lose one element here; the caller's key
            // goes instead.
            Some(item) => match (item.get_mut(), &path[1..]) {
                (DeValue::Table(table), [Segment::Key(key)]) => {
                    table.remove(key.as_str()).is_some()
                }
                _ => false,
            },
            None => false,
        },
        _ => false,
    }
}

fn line_number(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The `key` of a `key = value` line holding `offset` (syntax errors have
/// no path).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[start..end];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

fn missing_field_name(message: &str) -> Option<&str> {
    let rest = message.split_once("missing field `")?.1;
    Some(rest.split_once('`')?.0)
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.split_once("unknown field `")?.1;
    Some(rest.split_once('`')?.0.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Doc {
        top: Top,
        users: BTreeMap<String, User>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Top {
        name: String,
        ports: Vec<u16>,
        limits: Limits,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Limits {
        pids: u32,
        cpus: f64,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct User {
        limits: Option<Limits>,
    }

    fn check(doc: &Doc, checks: &mut Checks) {
        let at = KeyPath::root().key("top").key("limits");
        if doc.top.limits.cpus < 0.0 {
            checks.bad(at.key("cpus"), "must be a positive number");
        }
        for (name, user) in &doc.users {
            if user.limits.as_ref().is_some_and(|l| l.cpus < 0.0) {
                checks.bad(
                    KeyPath::root()
                        .key("users")
                        .key(name.clone())
                        .key("limits")
                        .key("cpus"),
                    "must be a positive number",
                );
            }
        }
    }

    fn problems(text: &str) -> Vec<(Option<String>, Option<usize>)> {
        parse_checked::<Doc>(text, check)
            .unwrap_err()
            .iter()
            .map(|p| (p.key.clone(), p.line))
            .collect()
    }

    fn at(key: &str, line: usize) -> (Option<String>, Option<usize>) {
        (Some(key.to_owned()), Some(line))
    }

    #[test]
    fn an_inline_table_value_is_named_by_its_full_key() {
        let text = "[top]\nlimits = { pids = \"many\" }\n";
        assert_eq!(problems(text), [at("top.limits.pids", 2)]);
        let text = "[top]\nlimits = { cpus = -2.0 }\n";
        assert_eq!(problems(text), [at("top.limits.cpus", 2)]);
    }

    #[test]
    fn a_bad_array_element_is_named_with_its_index() {
        let text = "[top]\nports = [\n  22,\n  \"x\",\n]\n";
        assert_eq!(problems(text), [at("top.ports[1]", 4)]);
    }

    #[test]
    fn every_problem_is_reported_in_the_files_order() {
        let text = "\
[top]
name = 1
nmae = \"x\"
limits.pids = -1
[users.\"a.b\"]
limits = { cpus = -1.0, pid = 3 }
[users.carol.limits]
cpus = -1.5
";
        assert_eq!(
            problems(text),
            [
                at("top.name", 2),
                at("top.nmae", 3),
                at("top.limits.pids", 4),
                at("users.\"a.b\".limits.pid", 6),
                at("users.\"a.b\".limits.cpus", 6),
                at("users.carol.limits.cpus", 8),
            ]
        );
    }

    #[test]
    fn a_check_on_a_value_the_file_does_not_set_points_at_its_table() {
        let text = "\n[top]\nports = []\n";
        let err = parse_checked::<Doc>(text, |_, c: &mut Checks| {
            c.bad(KeyPath::root().key("top").key("name"), "must be set")
        })
        .unwrap_err();
        assert_eq!(
            (err[0].key.as_deref(), err[0].line),
            (Some("top.name"), Some(2))
        );
        let err = parse_checked::<Doc>("", |_, c: &mut Checks| {
            c.bad(KeyPath::root().key("top").key("name"), "must be set")
        })
        .unwrap_err();
        assert_eq!(
            (err[0].key.as_deref(), err[0].line),
            (Some("top.name"), None)
        );
    }

    #[test]
    fn syntax_errors_are_all_reported_with_lines() {
        let err =
            parse_checked::<Doc>("[top\nname = \"x\"\n[users]\na = = 1\n", |_, _| {}).unwrap_err();
        assert!(!err.is_empty());
        assert!(err.iter().all(|p| p.line.is_some()), "{err}");
    }

    #[test]
    fn key_paths_are_shown_as_toml_writes_them() {
        let path = KeyPath::root()
            .key("bastiond")
            .key("users")
            .key("a.b")
            .key("x")
            .index(2);
        assert_eq!(path.to_string(), "bastiond.users.\"a.b\".x[2]");
    }
}
