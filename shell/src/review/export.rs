//! `sessions export ID --html FILE`: one self-contained page (works offline)
//! with the recording in asciinema-player, vendored from npm under
//! `shell/assets/asciinema-player/`, and the session's metadata beside it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::escape::hidden_char;
use super::index::{SessionIndex, SessionInfo};
use super::list::details;
use super::string_sequences::{Revealer, Style};
use super::terminal_safe::SafeText;
use super::{ReviewContext, ReviewError, format_ts};
use crate::audit::AuditEvent;
use crate::recording::cast::CastReader;

/// The vendored asciinema-player's version.
pub const PLAYER_VERSION: &str = "3.18.0";
const PLAYER_JS: &str = include_str!("../../assets/asciinema-player/asciinema-player.min.js");
const PLAYER_CSS: &str = include_str!("../../assets/asciinema-player/asciinema-player.css");
/// The page (`assets/export.html`, a minijinja template).
const PAGE: &str = include_str!("../../assets/export.html");

/// Where `--html -` sends the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandardOutput {
    /// A file or a pipe: the page goes there.
    NotATerminal,
    /// A terminal: refused (the page carries what the session showed).
    Terminal,
}

/// `bastionctl sessions export ID --html FILE`: writes the page to `html`
/// (mode 0600: it shows what the session showed) and says so on `out`;
/// with `html` = `-`, writes the page itself to `out` (standard output,
/// which must not be a terminal).
pub fn export_html(
    ctx: &ReviewContext,
    id: &str,
    html: &Path,
    out: &mut dyn Write,
    stdout: StandardOutput,
) -> Result<(), ReviewError> {
    let to_stdout = html == Path::new("-");
    if to_stdout && stdout == StandardOutput::Terminal {
        return Err(ReviewError::PageToTerminal);
    }
    let index = SessionIndex::load(&ctx.audit_log)?;
    let session = index.find(id)?;
    let cast = session
        .recording()
        .ok_or_else(|| ReviewError::NotRecorded(session.session_id.clone()))?;
    let cast_text = fs::read_to_string(cast).map_err(|source| ReviewError::Read {
        path: cast.to_owned(),
        source,
    })?;
    let duration = CastReader::open(cast)?
        .filter_map(Result::ok)
        .map(|e| e.time)
        .fold(0.0f64, f64::max);
    let page = render_html(session, &revealed_cast(&cast_text), duration);
    if to_stdout {
        return out
            .write_all(page.as_bytes())
            .and_then(|()| out.flush())
            .map_err(ReviewError::Output);
    }
    let write_err = |source| ReviewError::WriteFile {
        path: html.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(html)
        .map_err(write_err)?;
    file.write_all(page.as_bytes()).map_err(write_err)?;
    writeln!(
        SafeText::new(out),
        "Wrote {} (session {}, {} bytes).",
        html.display(),
        session.session_id,
        page.len()
    )?;
    Ok(())
}

/// The recording with what its output's string sequences carried (OSC,
/// DCS, APC, …) made visible text in reverse video
/// ([`super::string_sequences`]): the page's player, a terminal emulator,
/// would draw none of it. Other lines are kept as they are.
fn revealed_cast(cast_text: &str) -> String {
    let mut revealer = Revealer::new(Style::Highlighted);
    let mut out = String::with_capacity(cast_text.len());
    let mut last_time = 0.0;
    for (i, line) in cast_text.lines().enumerate() {
        let event = (i > 0)
            .then(|| serde_json::from_str::<(f64, String, String)>(line).ok())
            .flatten();
        match event {
            Some((time, code, data)) if code == "o" => {
                let mut revealed = Vec::with_capacity(data.len());
                revealer.feed(data.as_bytes(), &mut revealed);
                let data = show_hidden(&String::from_utf8_lossy(&revealed));
                let line = serde_json::to_string(&(time, "o", data)).unwrap_or_default();
                out.push_str(&line);
                last_time = time;
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    let mut rest = Vec::new();
    revealer.finish(&mut rest);
    if !rest.is_empty() {
        let data = String::from_utf8_lossy(&rest);
        out.push_str(&serde_json::to_string(&(last_time, "o", data)).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// `text` with the characters a player would draw as nothing (zero-width,
/// bidirectional controls) shown as escapes in reverse video.
fn show_hidden(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden_char(c) {
            out.push_str(&format!("\x1b[7m\\u{{{:x}}}\x1b[27m", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The page for `session` whose recording is `cast_text`, `duration`
/// seconds long (the player first shows its last frame).
pub fn render_html(session: &SessionInfo, cast_text: &str, duration: f64) -> String {
    let meta: Vec<(String, String)> = details(session)
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    let mut creds = Vec::new();
    for rec in &session.credentials {
        let what = match &rec.event {
            AuditEvent::CredentialsIssued(c) => format!(
                "issued {} as {} (key {}, expires {})",
                c.role_arn,
                c.session_name,
                c.access_key_id.as_deref().unwrap_or("-"),
                format_ts(c.expiration)
            ),
            AuditEvent::StsAssumeRole(c) => format!(
                "sts:AssumeRole {} as {} (request {}){}",
                c.role_arn,
                c.session_name,
                c.request_id.as_deref().unwrap_or("-"),
                c.error
                    .as_deref()
                    .map(|e| format!(" failed: {e}"))
                    .unwrap_or_default()
            ),
            _ => continue,
        };
        creds.push((format_ts(rec.ts), what));
    }
    let title = format!(
        "bastion session {} — {} in {}",
        session.session_id,
        session.user(),
        session.container()
    );
    let options = serde_json::json!({
        // Just past the last event (rounded up), so the poster shows it.
        "poster": format!("npt:{:.3}", (duration * 1000.0).ceil() / 1000.0 + 0.001),
        "idleTimeLimit": 2,
        "fit": "width",
        "preload": true,
    });
    let safe = minijinja::Value::from_safe_string;
    page(minijinja::context! {
        title,
        meta,
        creds,
        player_version => PLAYER_VERSION,
        css => safe(PLAYER_CSS.to_owned()),
        js => safe(PLAYER_JS.to_owned()),
        cast => safe(script_string(cast_text)),
        options => safe(options.to_string()),
    })
}

/// The page from its values. An .html template: every value is
/// HTML-escaped unless marked safe, and only the player, its style and the
/// script-escaped JSON are.
fn page(values: minijinja::Value) -> String {
    let mut env = minijinja::Environment::new();
    env.add_template("export.html", PAGE)
        .expect("the export template parses");
    env.get_template("export.html")
        .and_then(|page| page.render(values))
        .expect("the export template renders plain values")
}

/// `text` as a JavaScript string literal safe inside a `<script>` element.
fn script_string(text: &str) -> String {
    serde_json::to_string(text)
        .expect("a string serializes")
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{fixture, text};
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_page_embeds_player_recording_and_metadata() {
        let f = fixture();
        let html = f.dir.path().join("alice.html");
        let mut out = Vec::new();
        export_html(
            &f.ctx,
            "20261123-alice-1",
            &html,
            &mut out,
            StandardOutput::Terminal,
        )
        .unwrap();
        assert!(text(out).contains("Wrote"));
        let page = fs::read_to_string(&html).unwrap();
        assert!(page.contains("AsciinemaPlayer.create({ data: castData }"));
        assert!(page.contains(PLAYER_JS), "the player is inline, not linked");
        assert!(!page.contains("src=\"http"), "nothing is fetched");
        assert!(page.contains("hello from alice"));
        assert!(page.contains("192.0.2.7 port 50122"));
        // HTML-escaped as a browser reads it (`/` is `&#x2f;`).
        assert!(page.contains("sts:AssumeRole arn:aws:iam::123456789012:role&#x2f;ops"));
        assert_eq!(
            fs::metadata(&html).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_dash_sends_the_page_to_standard_output_but_never_to_a_terminal() {
        let f = fixture();
        let dash = Path::new("-");
        let mut out = Vec::new();
        export_html(
            &f.ctx,
            "20261123-alice-1",
            dash,
            &mut out,
            StandardOutput::NotATerminal,
        )
        .unwrap();
        let page = text(out);
        assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..40]);
        assert!(page.contains("hello from alice"));
        let mut out = Vec::new();
        let err = export_html(
            &f.ctx,
            "20261123-alice-1",
            dash,
            &mut out,
            StandardOutput::Terminal,
        )
        .unwrap_err();
        assert!(matches!(err, ReviewError::PageToTerminal), "{err}");
        assert!(out.is_empty());
        assert!(!f.dir.path().join("-").exists() && !Path::new("-").exists());
    }

    #[test]
    fn what_string_sequences_carried_is_visible_in_the_page() {
        let cast = "{\"version\":2,\"width\":80,\"height\":24}\n\
                    [0.5,\"o\",\"a\\u001bPsecret line\"]\n\
                    [0.6,\"r\",\"100x30\"]\n\
                    [0.7,\"o\",\"\\u001b\\\\b\"]\n";
        let revealed = revealed_cast(cast);
        let lines: Vec<&str> = revealed.lines().collect();
        assert_eq!(lines[0], cast.lines().next().unwrap(), "header kept");
        let first: (f64, String, String) = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(first.2, "a\u{1b}[7m⟦DCS secret line");
        assert_eq!(lines[2], "[0.6,\"r\",\"100x30\"]");
        let last: (f64, String, String) = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(last.2, "⟧\u{1b}[27mb");
    }

    #[test]
    fn recorded_text_cannot_break_out_of_the_script() {
        let s = script_string("</script><script>alert(1)</script><!-- \u{2028}");
        assert!(!s.contains("</"), "{s}");
        assert!(!s.contains("<!--"), "{s}");
    }

    #[test]
    fn every_value_the_user_controls_is_html_escaped() {
        let evil = "<img src=x onerror=alert(1)>\"'&";
        let html = page(minijinja::context! {
            title => evil,
            meta => vec![("command", evil)],
            creds => vec![("2026-11-23 08:00:00", evil)],
            player_version => PLAYER_VERSION,
        });
        assert!(!html.contains("<img"), "{html}");
        assert_eq!(
            html.matches("&lt;img src=x onerror=alert(1)&gt;").count(),
            4,
            "{html}"
        );
        let none = page(minijinja::context! { meta => Vec::<(String, String)>::new() });
        assert!(none.contains("<li>none during the session</li>"));
    }
}
