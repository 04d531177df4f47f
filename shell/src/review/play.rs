//! `sessions play`: replays a recording in the terminal.
//!
//! Our own small player rather than shelling out to `asciinema play`: a
//! bastion need not have asciinema installed, this one streams the file
//! (recordings can be hundreds of MiB), stops cleanly at a half-written last
//! line (a crash), and `--speed` / `--idle-limit` mean what asciinema's
//! `-s` / `-i` mean.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::index::SessionIndex;
use super::terminal_safe::{self, ReplayFilter, SafeText};
use super::{ReviewContext, ReviewError, format_ts};
use crate::recording::cast::{CastError, CastEvent, CastReader};

/// `--speed` and `--idle-limit`.
#[derive(Debug, Clone, Copy)]
pub struct PlayOptions {
    /// Playback speed factor (2.0 = twice as fast).
    pub speed: f64,
    /// Longest pause, in recorded seconds; defaults to the recording's
    /// `idle_time_limit`, else none.
    pub idle_limit: Option<f64>,
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            speed: 1.0,
            idle_limit: None,
        }
    }
}

/// `bastionctl sessions play ID`: replays session `ID` (a unique prefix
/// will do, or the path of a .cast file) to `out` in real time, with a
/// one-line banner on `info` (stderr) before and after.
pub fn play(
    ctx: &ReviewContext,
    id: &str,
    opts: PlayOptions,
    out: &mut dyn Write,
    info: &mut dyn Write,
) -> Result<(), ReviewError> {
    if !(opts.speed.is_finite() && opts.speed > 0.0) {
        return Err(ReviewError::BadSpeed(opts.speed));
    }
    let path = if id.contains('/') && Path::new(id).is_file() {
        Path::new(id).to_owned()
    } else {
        let index = SessionIndex::load(&ctx.audit_log)?;
        let s = index.find(id)?;
        let path = s
            .recording()
            .ok_or_else(|| ReviewError::NotRecorded(s.session_id.clone()))?
            .to_owned();
        writeln!(
            SafeText::new(&mut *info),
            "Replaying session {} of {} in {}, started {} UTC (Ctrl-C stops).",
            s.session_id,
            s.user(),
            s.container(),
            format_ts(s.started)
        )?;
        path
    };
    let reader = CastReader::open(&path)?;
    let opts = PlayOptions {
        idle_limit: opts.idle_limit.or(reader.header.idle_time_limit),
        ..opts
    };
    play_events(reader, opts, out, &mut std::thread::sleep)?;
    // Leave the reviewer's terminal as it was.
    out.write_all(terminal_safe::RESET)?;
    out.write_all(b"\r\n")?;
    out.flush()?;
    writeln!(info, "End of recording.")?;
    Ok(())
}

/// Writes each output event after the pause before it (capped at the idle
/// limit, divided by the speed), calling `sleep` for the pauses. What the
/// terminal is sent passes [`ReplayFilter`]: the recorded user cannot make
/// the reviewer's terminal retitle, report or type.
pub fn play_events(
    events: impl IntoIterator<Item = Result<CastEvent, CastError>>,
    opts: PlayOptions,
    out: &mut dyn Write,
    sleep: &mut dyn FnMut(Duration),
) -> Result<(), ReviewError> {
    let mut prev = 0.0f64;
    let mut filter = ReplayFilter::new();
    let mut safe = Vec::new();
    for event in events {
        let event = event?;
        if event.code != "o" {
            continue;
        }
        let mut pause = (event.time - prev).max(0.0);
        prev = event.time.max(prev);
        if let Some(limit) = opts.idle_limit {
            pause = pause.min(limit.max(0.0));
        }
        pause /= opts.speed;
        if pause > 0.0 {
            out.flush()?;
            sleep(Duration::from_secs_f64(pause));
        }
        safe.clear();
        filter.filter(event.data.as_bytes(), &mut safe);
        out.write_all(&safe)?;
    }
    safe.clear();
    filter.finish(&mut safe);
    out.write_all(&safe)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{fixture, text};
    use super::*;

    fn ev(time: f64, code: &str, data: &str) -> Result<CastEvent, CastError> {
        Ok(CastEvent {
            time,
            code: code.into(),
            data: data.into(),
        })
    }

    #[test]
    fn pauses_follow_the_recording_scaled_and_capped() {
        let events = || {
            vec![
                ev(0.5, "o", "a"),
                ev(1.0, "r", "100x30"),
                ev(1.5, "o", "b"),
                ev(31.5, "o", "c"),
                ev(31.5, "i", "typed"),
            ]
        };
        let mut pauses = Vec::new();
        let mut out = Vec::new();
        play_events(events(), PlayOptions::default(), &mut out, &mut |d| {
            pauses.push(d)
        })
        .unwrap();
        assert_eq!(text(out), "abc", "only output is replayed");
        assert_eq!(pauses, [0.5, 1.0, 30.0].map(Duration::from_secs_f64));

        let mut pauses = Vec::new();
        let opts = PlayOptions {
            speed: 2.0,
            idle_limit: Some(2.0),
        };
        play_events(events(), opts, &mut Vec::new(), &mut |d| pauses.push(d)).unwrap();
        assert_eq!(pauses, [0.25, 0.5, 1.0].map(Duration::from_secs_f64));
    }

    #[test]
    fn a_session_plays_by_id() {
        let f = fixture();
        let (mut out, mut info) = (Vec::new(), Vec::new());
        let opts = PlayOptions {
            speed: 1000.0,
            idle_limit: Some(0.0),
        };
        play(&f.ctx, "20261123-alice", opts, &mut out, &mut info).unwrap();
        let shown = text(out);
        assert!(shown.contains("hello from alice\r\n"), "{shown:?}");
        assert!(text(info).contains("Replaying session 20261123-alice-1 of alice"));
    }

    #[test]
    fn an_unrecorded_session_or_bad_speed_is_refused() {
        let f = fixture();
        let err = play(
            &f.ctx,
            "20261123-carol",
            PlayOptions::default(),
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, ReviewError::NotRecorded(_)), "{err}");
        let opts = PlayOptions {
            speed: 0.0,
            idle_limit: None,
        };
        let err = play(
            &f.ctx,
            "20261123-alice",
            opts,
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, ReviewError::BadSpeed(_)), "{err}");
    }
}
