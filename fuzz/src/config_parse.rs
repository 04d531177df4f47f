//! Target `config_parse`: `bastion.toml` parsing and validation
//! ([`bastion::config::Config::parse`]).
//!
//! Input format: the file's text (invalid UTF-8 replaced with U+FFFD, as a
//! file read as text would be refused before parsing).
//!
//! Properties (besides "never panics"):
//! - an error lists its problems in the file's order, each with a
//!   message, a line within the text (when it names one) and a non-empty
//!   key (when it names one; TOML's empty quoted key is shown as `""`);
//! - when the text is valid TOML (so the problem is a key, a type or a
//!   value), the error names the key or the line;
//! - a config that parses resolves users without panicking: root is always
//!   refused, a user named in `allow_users` always allowed, and the
//!   bridge's gateway lies in its subnet.

use bastion::config::{Config, Problem, ResolveError};

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text) {
        Ok(config) => check_config(&config),
        Err(problems) => {
            assert!(!problems.is_empty(), "an error without a problem");
            let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
            assert!(
                lines.is_sorted_by_key(|l| l.unwrap_or(usize::MAX)),
                "problems out of the file's order: {lines:?}"
            );
            for problem in problems.iter() {
                check_problem(&text, problem);
            }
        }
    }
}

fn check_problem(text: &str, problem: &Problem) {
    let shown = problem.to_string();
    assert!(
        !problem.message.trim().is_empty(),
        "an error without a message: {shown:?}"
    );
    let lines = text.lines().count().max(1);
    if let Some(line) = problem.line {
        // One past the last line: an error at the very end of a text that
        // ends with a newline.
        assert!(
            (1..=lines + 1).contains(&line),
            "line {line} of a {lines}-line text: {shown:?}"
        );
    }
    if let Some(key) = &problem.key {
        // Keys are shown as TOML writes them: an empty key is `""`.
        assert!(!key.is_empty(), "an empty key named: {shown:?}");
    }
    if text.parse::<toml::Table>().is_ok() {
        assert!(
            problem.key.is_some() || problem.line.is_some(),
            "an error in valid TOML that names neither a key nor a line: {shown:?}\n--- text ---\n{text}"
        );
    }
}

fn check_config(config: &Config) {
    let bastiond = &config.bastiond;
    let groups: Vec<String> = bastiond
        .allow_groups
        .iter()
        .chain(bastiond.groups.keys())
        .cloned()
        .collect();
    assert_eq!(
        bastiond.resolve("root", 0, &groups),
        Err(ResolveError::Root),
        "uid 0 is always refused"
    );
    for user in bastiond.allow_users.iter().chain(bastiond.users.keys()) {
        let resolved = bastiond.resolve(user, 1000, &groups);
        if bastiond.allow_users.contains(user) {
            assert!(resolved.is_ok(), "{user} is in allow_users: {resolved:?}");
        }
    }
    let _ = bastiond.resolve("nobody-in-particular", 1000, &[]);
    let network = &bastiond.network;
    assert!(
        network.subnet.contains(&network.gateway()),
        "gateway {} outside {}",
        network.gateway(),
        network.subnet
    );
    if let Some(banner) = config.recording.banner() {
        assert!(!banner.is_empty() && banner.trim_end() == banner);
    }
}
