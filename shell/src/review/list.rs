//! `sessions list` and `sessions show`.

use std::io::Write;

use comfy_table::{ContentArrangement, Table};
use time::OffsetDateTime;

use super::index::{SessionIndex, SessionInfo};
use super::terminal_safe::{self, SafeText};
use super::{ReviewContext, ReviewError, format_ts};
use crate::audit::verify::file_sha256;
use crate::audit::{AuditEvent, SessionKind};

/// `--json` or a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// Filters of `sessions list`.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub user: Option<String>,
    /// Sessions that started at or after this.
    pub since: Option<OffsetDateTime>,
    /// Sessions that started at or before this.
    pub until: Option<OffsetDateTime>,
    pub container: Option<String>,
    /// Only sessions that ended with a non-zero exit code or a signal.
    pub exit_nonzero: bool,
    pub format: OutputFormat,
}

impl ListOptions {
    fn keeps(&self, s: &SessionInfo) -> bool {
        self.user.as_deref().is_none_or(|u| s.user() == u)
            && self.container.as_deref().is_none_or(|c| s.container() == c)
            && self.since.is_none_or(|t| s.started >= t)
            && self.until.is_none_or(|t| s.started <= t)
            && (!self.exit_nonzero || s.exit_nonzero())
    }
}

/// `bastionctl sessions list`: the sessions in the audit log, oldest first.
pub fn list(
    ctx: &ReviewContext,
    opts: &ListOptions,
    out: &mut dyn Write,
) -> Result<(), ReviewError> {
    let index = SessionIndex::load(&ctx.audit_log)?;
    let sessions: Vec<&SessionInfo> = index.sessions.iter().filter(|s| opts.keeps(s)).collect();
    match opts.format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &sessions).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        OutputFormat::Table => write_table(&sessions, &mut SafeText::new(out))?,
    }
    Ok(())
}

/// The sessions as a table: columns two spaces apart, widths as the
/// terminal draws the cells (escaped first: escapes are wider than the
/// characters they stand for).
fn write_table(sessions: &[&SessionInfo], out: &mut dyn Write) -> std::io::Result<()> {
    let header = [
        "SESSION",
        "USER",
        "STARTED (UTC)",
        "DURATION",
        "CONTAINER",
        "KIND",
        "EXIT",
        "ENDED BY",
        "FROM",
        "COMMAND",
    ];
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for s in sessions {
        table.add_row(row(s).map(|cell| terminal_safe::escape(&cell).into_owned()));
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    if sessions.is_empty() {
        writeln!(out, "(no sessions match)")?;
    }
    Ok(())
}

fn row(s: &SessionInfo) -> [String; 10] {
    let end = s.end.as_ref();
    let start = s.start.as_ref();
    [
        s.session_id.clone(),
        s.user().to_owned(),
        format_ts(s.started),
        end.map_or_else(|| "-".into(), |e| format_duration(e.duration_secs)),
        s.container().to_owned(),
        start.map_or("?", |s| kind_name(s.kind)).to_owned(),
        exit_text(s),
        end.map_or_else(
            || "(live or never closed)".into(),
            |e| {
                serde_json::to_value(e.ended_by)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            },
        ),
        start
            .and_then(|s| s.remote_addr.clone())
            .unwrap_or_else(|| "-".into()),
        start
            .map(|s| s.command.clone().unwrap_or_else(|| "(login shell)".into()))
            .map(|c| one_line(&c, 60))
            .unwrap_or_default(),
    ]
}

fn kind_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Shell => "shell",
        SessionKind::Command => "command",
        SessionKind::FileTransfer => "transfer",
    }
}

fn exit_text(s: &SessionInfo) -> String {
    match &s.end {
        None => "-".into(),
        Some(e) => match (&e.exit_code, &e.signal) {
            (_, Some(sig)) => format!("SIG{sig}"),
            (Some(code), None) => code.to_string(),
            (None, None) => "?".into(),
        },
    }
}

fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{secs:.1}s")
    }
}

/// Control characters as visible escapes (a command could carry any; a
/// newline would break the table), cut to `max`.
fn one_line(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| match c {
            '\n' => "\\n".to_owned(),
            '\t' => "\\t".to_owned(),
            c => terminal_safe::escape(c.encode_utf8(&mut [0; 4])).into_owned(),
        })
        .collect();
    if clean.chars().count() > max {
        clean.chars().take(max - 1).chain(['…']).collect()
    } else {
        clean
    }
}

/// `bastionctl sessions show ID`: all metadata of one session, its
/// credential hand-outs, how it ended, and whether its recording still
/// matches the hash in its end event. `ID` may be a unique prefix.
pub fn show(
    ctx: &ReviewContext,
    id: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), ReviewError> {
    let index = SessionIndex::load(&ctx.audit_log)?;
    let s = index.find(id)?;
    if format == OutputFormat::Json {
        serde_json::to_writer_pretty(&mut *out, s).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let out = &mut SafeText::new(out);
    for (key, value) in details(s) {
        writeln!(out, "{key:<17}{value}")?;
    }
    writeln!(out)?;
    if s.credentials.is_empty() {
        writeln!(out, "Credentials: none handed out during the session")?;
    } else {
        writeln!(out, "Credentials handed out during the session:")?;
        for rec in &s.credentials {
            let line = match &rec.event {
                AuditEvent::CredentialsIssued(c) => format!(
                    "issued      role {} session {} key {} expires {} via {}",
                    c.role_arn,
                    c.session_name,
                    c.access_key_id.as_deref().unwrap_or("-"),
                    format_ts(c.expiration),
                    c.endpoint
                ),
                AuditEvent::StsAssumeRole(c) => format!(
                    "assume_role role {} session {} request {}{}",
                    c.role_arn,
                    c.session_name,
                    c.request_id.as_deref().unwrap_or("-"),
                    c.error
                        .as_deref()
                        .map(|e| format!(" FAILED: {e}"))
                        .unwrap_or_default()
                ),
                _ => continue,
            };
            writeln!(out, "  {}  {line}", format_ts(rec.ts))?;
        }
    }
    Ok(())
}

/// `(label, value)` pairs describing a session (also used by the export).
pub(crate) fn details(s: &SessionInfo) -> Vec<(&'static str, String)> {
    let mut d = vec![("Session", s.session_id.clone())];
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    if let Some(st) = &s.start {
        d.push(("User", format!("{} (uid {})", st.user, st.uid)));
        d.push(("Groups", st.groups.join(", ")));
        d.push((
            "From",
            match (&st.remote_addr, st.remote_port) {
                (Some(a), Some(p)) => format!("{a} port {p}"),
                (Some(a), None) => a.clone(),
                _ => "-".into(),
            },
        ));
        d.push(("Bastion host", opt(&s.host)));
        d.push((
            "Container",
            format!("{} ({})", st.container, opt(&st.container_id)),
        ));
        d.push(("Image", format!("{} ({})", st.image, opt(&st.image_digest))));
        d.push(("Role", opt(&st.role)));
        d.push(("Kind", kind_name(st.kind).into()));
        d.push((
            "Command",
            one_line(
                &st.command
                    .clone()
                    .unwrap_or_else(|| format!("(login shell {})", opt(&st.shell))),
                200,
            ),
        ));
        d.push((
            "TTY",
            if st.tty {
                format!(
                    "yes, {}x{}, TERM={}",
                    st.cols.unwrap_or(0),
                    st.rows.unwrap_or(0),
                    opt(&st.term)
                )
            } else {
                "no".into()
            },
        ));
        d.push((
            "Input recorded",
            if st.record_input { "yes" } else { "no" }.into(),
        ));
    } else {
        d.push(("User", s.user().to_owned()));
        d.push((
            "Note",
            "no session.start event (in a rotated-away file?)".into(),
        ));
    }
    d.push(("Started (UTC)", format_ts(s.started)));
    match &s.end {
        None => d.push((
            "Ended",
            "not yet (live, or bastiond has not closed it)".into(),
        )),
        Some(e) => {
            d.push((
                "Ended (UTC)",
                s.ended.map(format_ts).unwrap_or_else(|| "-".into()),
            ));
            d.push(("Duration", format_duration(e.duration_secs)));
            d.push((
                "Ended by",
                serde_json::to_value(e.ended_by)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ));
            d.push(("Exit", exit_text(s)));
            if let Some(err) = &e.error {
                d.push(("Error", err.clone()));
            }
            d.push((
                "Bytes in / out",
                format!("{} / {}", e.bytes_in, e.bytes_out),
            ));
        }
    }
    match (
        s.recording(),
        s.end.as_ref().and_then(|e| e.recording.as_ref()),
    ) {
        (None, _) => d.push(("Recording", "none".into())),
        (Some(path), None) => d.push(("Recording", format!("{} (open)", path.display()))),
        (Some(path), Some(rec)) => {
            d.push(("Recording", path.display().to_string()));
            d.push(("SHA-256", rec.sha256.clone()));
            let status = match file_sha256(path) {
                Ok((sha, _)) if sha == rec.sha256 => "intact (matches session.end)".to_owned(),
                Ok(_) => "CHANGED since the session ended".to_owned(),
                Err(e) => format!("cannot be read: {e}"),
            };
            d.push(("Integrity", status));
            if rec.truncated {
                d.push(("Truncated", "yes (max_recording_bytes reached)".into()));
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{fixture, text};
    use super::*;

    fn run(ctx: &ReviewContext, opts: ListOptions) -> String {
        let mut out = Vec::new();
        list(ctx, &opts, &mut out).unwrap();
        text(out)
    }

    #[test]
    fn the_table_lists_every_session_with_its_exit() {
        let f = fixture();
        let table = run(&f.ctx, ListOptions::default());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("SESSION"));
        assert!(lines[1].contains("20261123-alice-1") && lines[1].contains("(login shell)"));
        assert!(
            lines[2].contains("bob")
                && lines[2].contains(" 7 ")
                && lines[2].contains("kubectl get pods"),
            "{table}"
        );
        assert!(lines[3].contains("transfer"), "{table}");
    }

    #[test]
    fn filters_narrow_the_list() {
        let f = fixture();
        let only = |opts: ListOptions| {
            let mut out = Vec::new();
            list(
                &f.ctx,
                &ListOptions {
                    format: OutputFormat::Json,
                    ..opts
                },
                &mut out,
            )
            .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s["session_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            only(ListOptions {
                user: Some("alice".into()),
                ..Default::default()
            }),
            ["20261123-alice-1"]
        );
        assert_eq!(
            only(ListOptions {
                exit_nonzero: true,
                ..Default::default()
            }),
            ["20261123-bob-1"]
        );
        assert_eq!(
            only(ListOptions {
                container: Some("bastion-carol".into()),
                ..Default::default()
            }),
            ["20261123-carol-1"]
        );
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        assert!(
            only(ListOptions {
                since: Some(later),
                ..Default::default()
            })
            .is_empty()
        );
        assert_eq!(
            only(ListOptions {
                until: Some(later),
                ..Default::default()
            })
            .len(),
            3
        );
    }

    #[test]
    fn show_gives_metadata_credentials_and_integrity() {
        let f = fixture();
        let mut out = Vec::new();
        show(&f.ctx, "20261123-alice", OutputFormat::Table, &mut out).unwrap();
        let t = text(out);
        for want in [
            "alice (uid 1000)",
            "192.0.2.7 port 50122",
            "bastion-alice (c0ffee)",
            "sha256:0123",
            "arn:aws:iam::123456789012:role/ops",
            "Exit             0",
            "intact (matches session.end)",
            "assume_role role arn:aws:iam::123456789012:role/ops session alice request req-1",
            "issued      role",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        // Bob's session had no credential hand-outs.
        let mut out = Vec::new();
        show(&f.ctx, "20261123-bob-1", OutputFormat::Table, &mut out).unwrap();
        let t = text(out);
        assert!(t.contains("Credentials: none"), "{t}");
        assert!(t.contains("Exit             7"), "{t}");
    }

    #[test]
    fn show_names_a_missing_or_ambiguous_session() {
        let f = fixture();
        let err = show(&f.ctx, "nope", OutputFormat::Table, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ReviewError::NoSuchSession(_)), "{err}");
        let err = show(&f.ctx, "20261123", OutputFormat::Table, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, ReviewError::AmbiguousSession { count: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn show_flags_a_changed_recording() {
        let f = fixture();
        let path = f.config.log_dir.join("sessions/bob/20261123-bob-1.cast");
        let mut text_ = std::fs::read_to_string(&path).unwrap();
        text_ = text_.replace("No resources", "Some resources");
        std::fs::write(&path, text_).unwrap();
        let mut out = Vec::new();
        show(&f.ctx, "20261123-bob-1", OutputFormat::Table, &mut out).unwrap();
        assert!(text(out).contains("CHANGED"));
    }
}
