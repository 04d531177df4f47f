//! `sessions search`: a regex over what sessions showed, ANSI escapes
//! stripped, what string sequences (OSC, DCS, APC, …) carried shown as
//! text (`⟦DCS …⟧`, [`super::string_sequences`]). Lines are rebuilt as a terminal would show them: a VT parser
//! (`vte`) drops escape sequences, `\r` returns to the line's start and
//! overwrites, backspace and erase-to-end-of-line are honoured, so shell
//! line editing and progress bars read as they looked.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Serialize;

use super::escape::as_drawn;
use super::string_sequences::{Revealer, Style};
use super::terminal_safe::SafeText;
use super::{ReviewContext, ReviewError, format_offset};
use crate::recording::cast::CastReader;
use crate::recording::sessions_dir;

/// `PATTERN` and `--user`.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    pub pattern: String,
    pub user: Option<String>,
    /// One JSON object a line instead of text.
    pub json: bool,
}

/// One matching line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchMatch {
    pub session_id: String,
    pub user: String,
    /// Seconds from the session's start to when the line began.
    pub offset_secs: f64,
    pub line: String,
}

/// `bastionctl sessions search PATTERN [--user U]`: prints `session id,
/// user, time offset, line` for each line any recording showed that matches.
/// Returns the number of matches (bastionctl exits 1 on none, like grep).
pub fn search(
    ctx: &ReviewContext,
    opts: &SearchOptions,
    out: &mut dyn Write,
) -> Result<usize, ReviewError> {
    let regex = Regex::new(&opts.pattern).map_err(|source| ReviewError::BadPattern {
        pattern: opts.pattern.clone(),
        source,
    })?;
    let mut count = 0;
    for (user, path) in recordings(&sessions_dir(&ctx.log_dir), opts.user.as_deref())? {
        let session_id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut emit = |offset_secs: f64, line: &Line| -> std::io::Result<()> {
            let Some(line) = line.matched(&regex) else {
                return Ok(());
            };
            let line = line.as_str();
            count += 1;
            if opts.json {
                let m = SearchMatch {
                    session_id: session_id.clone(),
                    user: user.clone(),
                    offset_secs,
                    line: line.to_owned(),
                };
                serde_json::to_writer(&mut *out, &m)?;
                writeln!(out)
            } else {
                writeln!(
                    SafeText::new(&mut *out),
                    "{session_id}  {user}  +{}  {line}",
                    format_offset(offset_secs)
                )
            }
        };
        let reader = match CastReader::open(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "skipping unreadable recording");
                continue;
            }
        };
        let mut screen = LineScreen::default();
        let mut parser = vte::Parser::new();
        let mut revealer = Revealer::new(Style::Plain);
        let mut revealed = Vec::new();
        for event in reader {
            let Ok(event) = event else { break };
            if event.code != "o" {
                continue;
            }
            screen.now = event.time;
            revealed.clear();
            revealer.feed(event.data.as_bytes(), &mut revealed);
            parser.advance(&mut screen, &revealed);
            for (t, line) in screen.done.drain(..) {
                emit(t, &line)?;
            }
        }
        revealed.clear();
        revealer.finish(&mut revealed);
        parser.advance(&mut screen, &revealed);
        if let Some((t, line)) = screen.take_line() {
            emit(t, &line)?;
        }
    }
    Ok(count)
}

/// `(user, path)` of every recording, by user then file name.
fn recordings(dir: &Path, only_user: Option<&str>) -> Result<Vec<(String, PathBuf)>, ReviewError> {
    let read = |path: &Path| {
        fs::read_dir(path).map_err(|source| ReviewError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut out = Vec::new();
    let users = match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        _ => read(dir)?,
    };
    for user_dir in users.flatten() {
        let user = user_dir.file_name().to_string_lossy().into_owned();
        if user.starts_with('.') || only_user.is_some_and(|u| u != user) {
            continue;
        }
        if !user_dir.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for cast in read(&user_dir.path())?.flatten() {
            let path = cast.path();
            if path.extension().is_some_and(|x| x == "cast") {
                out.push((user.clone(), path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The line being drawn, as a terminal shows it, and everything printed on
/// it (text later overwritten or erased included).
#[derive(Default)]
struct LineScreen {
    line: Vec<char>,
    col: usize,
    /// The column `CSI s` / `ESC 7` saved.
    saved: usize,
    /// Every character printed since the line began, in order.
    printed: String,
    started: f64,
    now: f64,
    done: Vec<(f64, Line)>,
}

/// A finished line: as shown, as it reads (hidden characters dropped,
/// overrides reversed), and everything printed on it (text since erased or
/// overwritten included).
#[derive(Debug, Clone, PartialEq)]
struct Line {
    shown: String,
    reads: String,
    printed: String,
}

impl Line {
    /// The line as a match shows it: as shown when that matches, else with
    /// what matched (`⟪reads: …⟫`, `⟪printed: …⟫`); `None` when nothing
    /// does.
    fn matched(&self, regex: &Regex) -> Option<String> {
        if regex.is_match(&self.shown) {
            Some(self.shown.clone())
        } else if regex.is_match(&self.reads) {
            Some(format!("{} ⟪reads: {}⟫", self.shown, self.reads))
        } else if regex.is_match(&self.printed) {
            Some(format!("{} ⟪printed: {}⟫", self.shown, self.printed))
        } else {
            None
        }
    }
}

const MAX_LINE: usize = 4096;

impl LineScreen {
    fn take_line(&mut self) -> Option<(f64, Line)> {
        let shown: String = self.line.drain(..).collect();
        let printed = std::mem::take(&mut self.printed);
        self.col = 0;
        self.saved = 0;
        let shown = shown.trim_end().to_owned();
        let line = Line {
            reads: as_drawn(&shown),
            printed: as_drawn(printed.trim()),
            shown,
        };
        (!line.printed.is_empty() || !line.shown.is_empty()).then_some((self.started, line))
    }

    fn end_line(&mut self) {
        if let Some(done) = self.take_line() {
            self.done.push(done);
        }
    }
}

impl vte::Perform for LineScreen {
    fn print(&mut self, c: char) {
        if self.line.is_empty() && self.printed.is_empty() {
            self.started = self.now;
        }
        if self.printed.len() < MAX_LINE * 4 {
            self.printed.push(c);
        }
        if self.col < self.line.len() {
            self.line[self.col] = c;
        } else {
            self.line.push(c);
        }
        self.col += 1;
        if self.line.len() >= MAX_LINE {
            self.end_line();
        }
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' | 0x0b | 0x0c => self.end_line(),
            b'\r' => self.col = 0,
            0x08 => self.col = self.col.saturating_sub(1),
            b'\t' => {
                let next = (self.col / 8 + 1) * 8;
                while self.col < next {
                    self.print(' ');
                }
            }
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, params: &vte::Params, _: &[u8], _: bool, action: char) {
        let first = params
            .iter()
            .next()
            .and_then(|p| p.first().copied())
            .unwrap_or(0);
        match action {
            // Erase in line: to the end (0) or all (2).
            'K' if first == 0 => self.line.truncate(self.col),
            'K' if first == 2 => self.line.iter_mut().for_each(|c| *c = ' '),
            // Cursor back / forward.
            'D' => self.col = self.col.saturating_sub(first.max(1) as usize),
            'C' => self.col = (self.col + first.max(1) as usize).min(self.line.len()),
            // Cursor to column.
            'G' => self.col = (first.max(1) as usize - 1).min(self.line.len()),
            // Insert / delete characters at the cursor.
            '@' => {
                let n = (first.max(1) as usize).min(MAX_LINE);
                let at = self.col.min(self.line.len());
                self.line.splice(at..at, std::iter::repeat_n(' ', n));
            }
            'P' => {
                let at = self.col.min(self.line.len());
                let end = (at + first.max(1) as usize).min(self.line.len());
                self.line.drain(at..end);
            }
            // Save / restore the cursor.
            's' => self.saved = self.col,
            'u' => self.col = self.saved.min(self.line.len()),
            _ => {}
        }
    }

    fn esc_dispatch(&mut self, intermediates: &[u8], _: bool, byte: u8) {
        match (intermediates, byte) {
            ([], b'7') => self.saved = self.col,
            ([], b'8') => self.col = self.saved.min(self.line.len()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{fixture, text};
    use super::*;

    fn lines_of(data: &[&str]) -> Vec<String> {
        let mut screen = LineScreen::default();
        let mut parser = vte::Parser::new();
        let mut revealer = Revealer::new(Style::Plain);
        for d in data {
            let mut revealed = Vec::new();
            revealer.feed(d.as_bytes(), &mut revealed);
            parser.advance(&mut screen, &revealed);
        }
        let mut out: Vec<String> = screen.done.drain(..).map(|(_, l)| l.shown).collect();
        out.extend(screen.take_line().map(|(_, l)| l.shown));
        out.retain(|l| !l.is_empty());
        out
    }

    #[test]
    fn escapes_are_stripped_even_when_split_across_events() {
        assert_eq!(
            lines_of(&[
                "\x1b[3",
                "1mERROR\x1b[0m: disk ",
                "full\r\n",
                "\x1b]0;title\x07next"
            ]),
            ["ERROR: disk full", "⟦OSC 0;title⟧next"]
        );
    }

    fn found(data: &str, pattern: &str) -> Option<String> {
        let mut screen = LineScreen::default();
        let mut parser = vte::Parser::new();
        parser.advance(&mut screen, data.as_bytes());
        let regex = Regex::new(pattern).unwrap();
        let mut lines: Vec<Line> = screen.done.drain(..).map(|(_, l)| l).collect();
        lines.extend(screen.take_line().map(|(_, l)| l));
        lines.iter().find_map(|l| l.matched(&regex))
    }

    #[test]
    fn text_built_with_the_cursor_erased_or_hidden_is_found() {
        assert_eq!(found("33K\x1b[3D\x1b[3@QZV\n", "QZV33K").unwrap(), "QZV33K");
        assert_eq!(
            found("\x1b[s   34K\x1b[uQZV\n", "QZV34K").unwrap(),
            "QZV34K"
        );
        assert_eq!(found("\x1b7   35K\x1b8QZV\n", "QZV35K").unwrap(), "QZV35K");
        assert_eq!(
            found("QZV24K\r\x1b[2K\n", "QZV24K").unwrap(),
            " ⟪printed: QZV24K⟫"
        );
        assert_eq!(
            found("QZV25K\rXXXXXXXXX\n", "QZV25K").unwrap(),
            "XXXXXXXXX ⟪printed: QZV25KXXXXXXXXX⟫"
        );
        assert_eq!(
            found("Q\u{200b}ZV28K\n", "QZV28K").unwrap(),
            "Q\u{200b}ZV28K ⟪reads: QZV28K⟫"
        );
        assert!(found("\u{202e}K92VZQ\u{202c}\n", "QZV29K").is_some());
        assert_eq!(
            found("progress 10%\rprogress 100%\n", "100%").unwrap(),
            "progress 100%"
        );
        assert!(found("plain\n", "QZV").is_none());
    }

    #[test]
    fn carriage_return_backspace_and_erase_act_like_a_terminal() {
        assert_eq!(
            lines_of(&["progress 10%\rprogress 100%\n"]),
            ["progress 100%"]
        );
        assert_eq!(lines_of(&["$ lss\x08\x1b[K -l\r\n"]), ["$ ls -l"]);
        assert_eq!(lines_of(&["a\tb\n"]), ["a       b"]);
    }

    #[test]
    fn search_prints_session_user_offset_and_line() {
        let f = fixture();
        let mut out = Vec::new();
        let opts = SearchOptions {
            pattern: r"ERROR: disk \w+".into(),
            ..Default::default()
        };
        assert_eq!(search(&f.ctx, &opts, &mut out).unwrap(), 1);
        let t = text(out);
        assert!(
            t.starts_with("20261123-alice-1  alice  +0:00:00.0  ERROR: disk full"),
            "{t}"
        );
    }

    #[test]
    fn search_filters_by_user_and_reports_json() {
        let f = fixture();
        let mut out = Vec::new();
        let opts = SearchOptions {
            pattern: "(?i)resources|alice".into(),
            user: Some("bob".into()),
            json: true,
        };
        assert_eq!(search(&f.ctx, &opts, &mut out).unwrap(), 1);
        let m: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(m["user"], "bob");
        assert_eq!(m["line"], "No resources found in default namespace.");
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let f = fixture();
        let opts = SearchOptions {
            pattern: "(".into(),
            ..Default::default()
        };
        let err = search(&f.ctx, &opts, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("invalid pattern"), "{err}");
    }
}
