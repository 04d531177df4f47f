//! How a session ends: why its stream stopped ([`StreamEnd`]), what that
//! makes of it once its exit code is read or its processes are killed
//! ([`Finish`]): the line its user gets and the `session.end` the audit
//! trail gets. Its processes are found by its own cgroup ([`Contained`]).

use std::sync::Arc;

use super::super::Broker;
use super::super::cgroup::Tracking;
use super::super::container::ENGINE_DOWN;
use super::super::exec::Exec;
use super::super::records::RecordingObserver;
use super::super::session_cgroup::{self, SessionCgroup};
use crate::audit::EndedBy;
use crate::protocol::{EXIT_BASTION_FAILURE, ServerMessage};
use crate::recording::SessionOutcome;

/// What users are told when bastiond stops under their session.
pub const BROKER_RESTARTING: &str =
    "the bastion's session service was restarted, which ended your session; please log in again";

/// Why a session's stream stopped (what its [`Finish`] is then made of).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The exec's output ended: its process exited.
    Exit,
    /// The SSH side went away.
    ClientGone,
    /// bastiond is stopping.
    BrokerShutdown,
    /// The recording stopped (its cap, a write error, the log disk's
    /// reserve): the session ends rather than go on unrecorded.
    RecordingStopped,
}

/// A session's cgroup, and what its end sweeps.
pub struct Contained {
    pub cgroup: SessionCgroup,
    /// The container's cgroup, where strays outside every session are.
    pub tracking: Option<Tracking>,
    pub uid: u32,
    /// The user's placement lock (taken exclusively to sweep strays).
    pub placements: Arc<tokio::sync::RwLock<()>>,
}

impl Contained {
    /// Kills everything the session started, removes its cgroup, and kills
    /// the user's strays outside any session. Returns how many of the
    /// session's processes were killed.
    pub async fn kill(&self) -> usize {
        let sweeping = self.placements.clone().write_owned().await;
        let cgroup = self.cgroup.clone();
        let tracking = self.tracking.clone();
        let uid = self.uid;
        tokio::task::spawn_blocking(move || {
            let killed = cgroup.kill_all();
            cgroup.remove();
            if let Some(tracking) = tracking {
                let strays = session_cgroup::sweep_strays(&tracking, uid);
                if strays > 0 {
                    tracing::warn!(uid, strays, container_cgroup = %tracking.dir.display(), "killed processes outside every session");
                }
            }
            drop(sweeping);
            killed
        })
        .await
        .unwrap_or(0)
    }

    /// Whatever the session left running goes with it.
    pub async fn end(self) {
        self.kill().await;
    }
}

/// How a session ended, as bastiond can tell.
pub enum Finish {
    /// The session's process exited with `code` (`killed`: processes of
    /// the session were killed after the client left or at the end).
    Exited { code: i32, killed: usize },
    /// The client went away; the session's processes were killed.
    ClientGone { code: Option<i32>, killed: usize },
    /// bastiond is stopping with the session live: its processes were
    /// killed.
    Shutdown { code: Option<i32>, killed: usize },
    /// The Engine went away (or forgot the exec) before the exit code was
    /// known: there is no exit code to report.
    EngineLost { error: String },
    /// The recording stopped; the session was ended (its processes killed)
    /// rather than go on unrecorded.
    RecordingStopped {
        code: Option<i32>,
        killed: usize,
        reason: String,
    },
}

impl Finish {
    /// Reads how the session's exec ended, killing what is left of the
    /// session when it did not end by itself.
    pub async fn of(
        exec: &Exec,
        end: StreamEnd,
        contained: &Contained,
        stop_reason: Option<String>,
    ) -> Finish {
        match end {
            StreamEnd::RecordingStopped => {
                let killed = contained.kill().await;
                Finish::RecordingStopped {
                    code: exec.exit_code().await.ok(),
                    killed,
                    reason: stop_reason.unwrap_or_else(|| "it stopped".into()),
                }
            }
            StreamEnd::Exit => match exec.exit_code().await {
                Ok(code) => Finish::Exited { code, killed: 0 },
                Err(error) => {
                    contained.kill().await;
                    Finish::EngineLost { error }
                }
            },
            StreamEnd::ClientGone => {
                let killed = contained.kill().await;
                tracing::info!(
                    exec = exec.id(),
                    killed,
                    "client gone: killed the session's processes"
                );
                Finish::ClientGone {
                    code: exec.exit_code().await.ok(),
                    killed,
                }
            }
            StreamEnd::BrokerShutdown => {
                // A command that finished as the shutdown began keeps its code.
                if let Ok(Some(code)) = exec.exit_status().await {
                    return Finish::Exited { code, killed: 0 };
                }
                let killed = contained.kill().await;
                Finish::Shutdown {
                    code: exec.exit_code().await.ok(),
                    killed,
                }
            }
        }
    }

    /// What the user's shell is told (nothing when the client is gone).
    pub fn reply(&self) -> Option<ServerMessage> {
        let error = |message: String| ServerMessage::Error {
            message,
            code: EXIT_BASTION_FAILURE,
        };
        match self {
            Self::Exited { code, .. } => Some(ServerMessage::Exit { code: *code }),
            Self::ClientGone { .. } => None,
            Self::Shutdown { .. } => Some(error(BROKER_RESTARTING.into())),
            Self::EngineLost { .. } => Some(error(ENGINE_DOWN.into())),
            Self::RecordingStopped { reason, .. } => Some(error(format!(
                "your session was ended because it could no longer be recorded ({reason}); please start a new one"
            ))),
        }
    }

    /// What the audit trail's `session.end` says.
    pub fn outcome(&self) -> SessionOutcome {
        let signal = |code: Option<i32>, killed: usize| {
            (killed > 0 && code == Some(128 + 9)).then(|| "KILL".to_owned())
        };
        match self {
            Self::Exited { code, killed } => SessionOutcome {
                ended_by: EndedBy::Exit,
                exit_code: Some(*code),
                signal: signal(Some(*code), *killed),
                error: None,
            },
            Self::ClientGone { code, killed } => SessionOutcome {
                ended_by: EndedBy::ClientGone,
                exit_code: *code,
                signal: signal(*code, *killed),
                error: None,
            },
            Self::Shutdown { code, killed } => SessionOutcome {
                ended_by: EndedBy::BrokerShutdown,
                exit_code: *code,
                signal: signal(*code, *killed),
                error: None,
            },
            Self::EngineLost { error } => SessionOutcome {
                ended_by: EndedBy::Error,
                exit_code: None,
                signal: None,
                error: Some(error.clone()),
            },
            Self::RecordingStopped {
                code,
                killed,
                reason,
            } => SessionOutcome {
                ended_by: EndedBy::Error,
                exit_code: *code,
                signal: signal(*code, *killed),
                error: Some(format!(
                    "the recording stopped ({reason}): the session was ended so that nothing of it goes unrecorded"
                )),
            },
        }
    }
}

/// Closes the session's recording and writes `session.end` (blocking I/O).
pub async fn end_records(
    broker: &Broker,
    recording: Option<RecordingObserver>,
    outcome: SessionOutcome,
) {
    let Some(recording) = recording else {
        return;
    };
    let recording = recording.0.into_inner().unwrap_or_else(|e| e.into_inner());
    let audit = broker.audit.clone();
    match tokio::task::spawn_blocking(move || recording.end(&audit, outcome)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot write the end of a session's records"),
        Err(e) => tracing::error!(error = %e, "session records panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_session_is_told_by_its_signal_and_an_engine_loss_has_no_code() {
        let killed = Finish::ClientGone {
            code: Some(137),
            killed: 2,
        };
        assert_eq!(killed.outcome().signal.as_deref(), Some("KILL"));
        assert!(killed.reply().is_none(), "nobody to tell");
        let lost = Finish::EngineLost {
            error: "gone".into(),
        };
        let outcome = lost.outcome();
        assert_eq!(
            (outcome.ended_by, outcome.exit_code),
            (EndedBy::Error, None)
        );
        assert!(matches!(
            lost.reply(),
            Some(ServerMessage::Error { code: 125, .. })
        ));
        let exited = Finish::Exited { code: 3, killed: 0 };
        assert_eq!(exited.reply(), Some(ServerMessage::Exit { code: 3 }));
        assert_eq!(exited.outcome().signal, None);
    }
}
