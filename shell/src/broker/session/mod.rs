//! One login, from the shell's request to its exit code, read as its
//! phases ([`Session`]): **identify** the caller by SO_PEERCRED and apply
//! their settings; make their **container ready**; **begin the records**
//! (`session.start`, the recording) while the exec is created; run the
//! **exec** (placed in the session's own cgroup, bytes pumped, resizes
//! forwarded: [`stream`]); and **end** it, whichever side goes first
//! ([`ending`]): exit code to the shell, `session.end` to the audit trail,
//! everything the session started killed.

mod ending;
mod stream;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

pub use ending::BROKER_RESTARTING;
use ending::{Contained, Finish, end_records};
use stream::Placement;

use super::admission::Pending;
use super::cgroup::CgroupFiles;
use super::container::{ContainerError, ContainerKind, ENGINE_DOWN, is_unreachable};
use super::container_state::Running;
use super::exec::{Exec, ExecSpec, ExecStartError};
use super::identity::{self, Identity, IdentityError};
use super::plan::Plan;
use super::pump::{self, Observer};
use super::records::{self, RecordingObserver};
use super::request::{self, FirstFrame, Received, RequestError};
use super::session_cgroup::{self, SessionCgroup, SessionCgroupError};
use super::{Broker, LiveGuard, limits};
use crate::access::applied::{Admission, AppliedUser};
use crate::access::kubeconfig;
use crate::audit::SessionKind;
use crate::config::{Config, ResolveError, UserSettings};
use crate::protocol::{self, EXIT_BASTION_FAILURE, Request, ServerMessage};
use crate::recording::budget::Reservation;
use crate::recording::{RecordingError, SessionLogError, SessionOutcome};

/// Why a session could not run. Each has a short message for the user
/// ([`SessionError::user_message`]); the full error goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    NotAllowed(#[from] ResolveError),
    #[error(
        "user {user} is not an enabled user of the access file applied for group {group}: locked or removed"
    )]
    Locked { user: String, group: String },
    #[error("cannot read what the access file allows: {0}")]
    AccessState(#[source] crate::access::applied::AppliedError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("cannot create an exec in {container}: {source}")]
    CreateExec {
        container: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(transparent)]
    StartExec(#[from] ExecStartError),
    #[error("cannot use the session's terminal or pipes: {0}")]
    Fd(#[source] std::io::Error),
    #[error("cannot write the session's records: {0}")]
    Records(#[source] SessionLogError),
    #[error("cannot give the session its own cgroup: {0}")]
    Contain(#[source] SessionCgroupError),
}

impl SessionError {
    /// A login refused for who the caller is (any local account can cause
    /// these: their log lines are rate limited).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::NotAllowed(_) | Self::Identity(_) | Self::Locked { .. }
        )
    }

    /// The one line the user sees.
    pub fn user_message(&self) -> String {
        match self {
            Self::NotAllowed(e) => e.to_string(),
            Self::Locked { .. } => {
                "your access to this bastion has been removed; ask the bastion admins if that is a mistake".into()
            }
            Self::Identity(IdentityError::BadName { name, .. }) => {
                format!("the user name {name:?} cannot be used on this bastion; please tell the bastion admins")
            }
            Self::Container(e) => e.user_message(),
            Self::CreateExec { source, .. } if is_unreachable(source) => {
                ENGINE_DOWN.into()
            }
            Self::StartExec(ExecStartError::Connect { .. }) => ENGINE_DOWN.into(),
            Self::Records(SessionLogError::Recording(RecordingError::Budget { .. })) => "your recorded sessions have used up their space on this bastion, so your logins are refused; please ask the bastion admins to prune old recordings".into(),
            Self::Records(_) => "sessions cannot be recorded right now, so logins are refused; please tell the bastion admins".into(),
            Self::Contain(_) => "your session could not be started in your container (it could not be contained); please try again or tell the bastion admins".into(),
            Self::CreateExec { .. } | Self::StartExec(_) => limit_hint(&self.to_string()).unwrap_or_else(|| {
                "your session could not be started in your container; please try again or tell the bastion admins".into()
            }),
            _ => "the bastion could not start your session; please tell the bastion admins".into(),
        }
    }
}

/// A clearer message when the Engine's error says a container limit was hit.
fn limit_hint(detail: &str) -> Option<String> {
    let d = detail.to_ascii_lowercase();
    (d.contains("resource temporarily unavailable") || d.contains("pids"))
        .then(|| "your container has reached its process limit; end some processes (or ask the bastion admins for a higher limit) and try again".into())
        .or_else(|| {
            (d.contains("out of memory") || d.contains("oom"))
                .then(|| "your container has reached its memory limit; please try again or ask the bastion admins for more".into())
        })
}

/// Serves one connection from a `bastion-shell`, admitted as `pending`
/// (its slot is freed once the request is in).
pub async fn serve(broker: Arc<Broker>, stream: UnixStream, uid: u32, pending: Pending) {
    let accepted = std::time::Instant::now();
    let deadline = broker.config.current().bastiond.request_timeout;
    let received = match tokio::time::timeout(deadline, receive(&stream)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return pending.bad_request(&e),
        Err(_) => return pending.bad_request(&RequestError::Timeout(deadline)),
    };
    let admission = pending.admission();
    drop(pending);
    let (reader, mut writer) = stream.into_split();
    let session = Session {
        broker: &broker,
        uid,
        id: new_session_id(),
        accepted,
    };
    let reply = match session.run(received, reader, &mut writer).await {
        Ok(()) => return,
        Err(e) => {
            if e.is_refusal() {
                admission.login_refused(uid, &e);
            } else {
                tracing::error!(uid, error = %crate::logging::error_chain(&e), "session failed");
            }
            ServerMessage::Error {
                message: e.user_message(),
                code: EXIT_BASTION_FAILURE,
            }
        }
    };
    let _ = protocol::write_frame_async(&mut writer, &reply).await;
}

/// Reads the first frame and the descriptors sent with it.
async fn receive(stream: &UnixStream) -> Result<Received, RequestError> {
    let mut frame = FirstFrame::new();
    loop {
        let chunk = stream
            .async_io(Interest::READABLE, || {
                request::recv_chunk(stream.as_fd(), frame.space())
            })
            .await
            .map_err(RequestError::Recv)?;
        if let Some(received) = frame.push(chunk)? {
            return Ok(received);
        }
    }
}

/// How much of a session's command bastiond's own log keeps (the audit
/// trail keeps up to [`crate::audit::MAX_COMMAND_BYTES`]).
const LOGGED_COMMAND_BYTES: usize = 512;

/// One login: the broker, the caller's uid (from SO_PEERCRED), the session's
/// id, and when the shell connected (for the phases' debug timings).
struct Session<'b> {
    broker: &'b Arc<Broker>,
    uid: u32,
    id: String,
    accepted: Instant,
}

/// Who is logging in, with what they may have and what they asked for.
struct Identified {
    who: Identity,
    config: Arc<Config>,
    settings: UserSettings,
    /// The user as the applied access file has them (their clusters);
    /// `None` for a user no access file manages.
    applied: Option<AppliedUser>,
    plan: Plan,
    /// Counted live from here on, so the reaper never stops a container a
    /// login is about to use.
    _live: LiveGuard,
}

/// The records begun and the exec created: what the session runs with.
struct Begun {
    exec: Exec,
    /// The container's limit counters before the session ran (to tell its
    /// user when a limit bit during it).
    limits_before: Option<super::limits::LimitHits>,
    recording: Option<RecordingObserver>,
    /// The user's recording budget held for this session until it ends.
    _reservation: Option<Reservation>,
    contained: Contained,
    /// Held until the exec is in its cgroup: no sweep of strays meanwhile.
    placing: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
}

impl Session<'_> {
    /// Runs the session. The exit code goes to the shell as soon as it is
    /// known; the session's end is recorded after that (a crash in between
    /// is covered: the open-session marker makes the next start-up write it).
    async fn run(
        self,
        received: Received,
        control: OwnedReadHalf,
        reply: &mut OwnedWriteHalf,
    ) -> Result<(), SessionError> {
        self.phase("request received");
        let request = received.request.clone();
        let user = self.identify(&request).await?;
        let running = self.container_ready(&user, &request).await?;
        let mut begun = self.begin_records(&user, &running, &request).await?;
        let ran = self.exec(&user, &mut begun, received, control).await;
        let (end, counters) = match ran {
            Ok(ran) => ran,
            Err(e) => {
                self.fail(begun, &e).await;
                return Err(e);
            }
        };
        self.end(&user, &running, begun, end, counters, reply).await;
        Ok(())
    }

    /// Debug timing of a login's phase, from the shell's connection.
    fn phase(&self, name: &str) {
        tracing::debug!(
            uid = self.uid,
            phase = name,
            elapsed_us = self.accepted.elapsed().as_micros() as u64,
            "session phase"
        );
    }

    /// Phase 1: who the caller is (SO_PEERCRED uid → user, groups), whether
    /// they may log in and with which settings, and what the session runs.
    async fn identify(&self, request: &Request) -> Result<Identified, SessionError> {
        let uid = self.uid;
        let who = tokio::task::spawn_blocking(move || identity::lookup(uid))
            .await
            .expect("identity lookup panicked")?;
        let config = self.broker.config.current();
        let mut settings = config.bastiond.resolve(&who.name, who.uid, &who.groups)?;
        let admission = {
            let (states, state_dir) = (
                self.broker.access.clone(),
                config.bastiond.state_dir.clone(),
            );
            let (name, groups) = (who.name.clone(), who.groups.clone());
            tokio::task::spawn_blocking(move || states.admission(&state_dir, &name, &groups))
                .await
                .expect("access state read panicked")
                .map_err(SessionError::AccessState)?
        };
        let applied = match admission {
            Admission::Unmanaged => None,
            Admission::Enabled { user, .. } => {
                user.apply_to(&mut settings);
                Some(*user)
            }
            Admission::Refused { group } => {
                return Err(SessionError::Locked {
                    user: who.name.clone(),
                    group,
                });
            }
        };
        let live = self.broker.live.enter(&who.name, &self.id);
        self.phase("identified");
        Ok(Identified {
            plan: Plan::of(request),
            who,
            config,
            settings,
            applied,
            _live: live,
        })
    }

    /// Phase 2: the user's container of the kind the session needs (file
    /// transfers run in the user's file-transfer container, apart from
    /// every other session of theirs), running.
    async fn container_ready(
        &self,
        user: &Identified,
        request: &Request,
    ) -> Result<Running, SessionError> {
        let kind = match user.plan {
            Plan::Transfer(_) => ContainerKind::Transfers,
            _ => ContainerKind::Shell,
        };
        let others_live = || self.broker.live.count(&user.who.name).saturating_sub(1);
        let running = self
            .broker
            .containers
            .ensure(
                &user.config.bastiond,
                &user.who,
                &user.settings,
                kind,
                others_live,
            )
            .await?;
        if let (Some(applied), ContainerKind::Shell) = (&user.applied, kind) {
            self.write_kubeconfig(user, applied.clone()).await;
        }
        self.phase(if running.remembered {
            "container ready (remembered)"
        } else {
            "container ready"
        });
        tracing::info!(
            session = %self.id, user = %user.who.name, uid = self.uid, container = %running.name,
            tty = request.tty,
            // Bounded like the audit's, shorter: the full one is there.
            command = %request.command.as_deref().map_or_else(
                || "<login shell>".into(),
                |c| crate::audit::bounded(c, LOGGED_COMMAND_BYTES),
            ),
            container_state = if running.remembered { "remembered" } else { "inspected" },
            "session start"
        );
        Ok(running)
    }

    /// The user's kubeconfig from the applied access file, written into
    /// their home (mounted now). A failure is logged and the login goes
    /// on: kubectl then has the clusters of the previous login.
    async fn write_kubeconfig(&self, user: &Identified, applied: AppliedUser) {
        let home = user.config.bastiond.home_root.join(&user.who.name);
        let (name, uid, gid) = (user.who.name.clone(), user.who.uid, user.who.gid);
        let written = tokio::task::spawn_blocking(move || {
            kubeconfig::install(&home, &name, uid, gid, &applied)
        })
        .await
        .expect("kubeconfig writer panicked");
        if let Err(error) = written {
            tracing::warn!(session = %self.id, user = %user.who.name, %error, "kubeconfig not updated");
        }
    }

    /// Phase 3: the records begun (`session.start`, the recording within
    /// the user's budget; transfers are counted, never recorded byte by
    /// byte) while the Engine creates the exec, which is only started once
    /// they exist. The session's cgroup exists before its exec does.
    async fn begin_records(
        &self,
        user: &Identified,
        running: &Running,
        request: &Request,
    ) -> Result<Begun, SessionError> {
        let broker = self.broker;
        let shell = &user.config.bastiond.shell;
        let start =
            records::session_start(&self.id, &user.who, running, request, &user.plan, shell);
        let limits_before = running.cgroup.as_deref().map(CgroupFiles::read_limit_hits);
        let (config, audit, budgets) = (
            user.config.recording.clone(),
            broker.audit.clone(),
            broker.budgets.clone(),
        );
        let (budget, record) = (
            user.settings.limits.recordings.as_u64(),
            user.plan.recorded(),
        );
        let begin = tokio::task::spawn_blocking(move || {
            records::begin(config, &audit, &budgets, budget, start, record)
        });
        let cgroup = running
            .cgroup
            .as_ref()
            .and_then(|c| c.tracking.as_ref())
            .ok_or(SessionCgroupError::NoTracking)
            .and_then(|tracking| SessionCgroup::create(tracking, &self.id))
            .map_err(SessionError::Contain)?;
        let placements = broker.containers.placement_lock(&user.who.name);
        let placing = placements.clone().read_owned().await;
        let contained = Contained {
            cgroup,
            tracking: running.cgroup.as_ref().and_then(|c| c.tracking.clone()),
            uid: user.who.uid,
            placements,
        };
        let argv = session_cgroup::wrapped(&self.id, user.plan.argv(shell));
        let spec = exec_spec(
            argv,
            &user.who,
            request,
            &self.id,
            running.locales.as_deref(),
        );
        let create = broker.execs.create(&running.id, spec);
        let (begun, exec) = tokio::join!(begin, create);
        let begun = match begun.expect("session records panicked") {
            Ok(begun) => begun,
            Err(e) => {
                drop(placing);
                contained.end().await;
                return Err(SessionError::Records(e));
            }
        };
        let recording = begun
            .recording
            .map(|r| RecordingObserver(std::sync::Mutex::new(r)));
        let exec = match exec {
            Ok(exec) => exec,
            Err(source) => {
                // Gone or stopped since it was last seen: the next login
                // inspects it afresh rather than trusting the events stream.
                broker.containers.forget(&running.name);
                let e = SessionError::CreateExec {
                    container: running.name.clone(),
                    source,
                };
                drop(placing);
                contained.end().await;
                end_records(broker, recording, error_outcome(&e)).await;
                return Err(e);
            }
        };
        self.phase("records begun");
        Ok(Begun {
            exec,
            limits_before,
            recording,
            _reservation: begun.reservation,
            contained,
            placing: Some(placing),
        })
    }

    /// Phase 4: the exec started and placed in the session's cgroup, its
    /// bytes pumped until one side ends.
    async fn exec(
        &self,
        user: &Identified,
        begun: &mut Begun,
        received: Received,
        control: OwnedReadHalf,
    ) -> Result<(ending::StreamEnd, pump::ByteCounts), SessionError> {
        let config = &user.config;
        // The "you are recorded" notice: interactive sessions only, never in
        // command or transfer sessions, where it would corrupt their output.
        let banner = (user.plan.kind() == SessionKind::Shell && received.request.tty)
            .then(|| config.recording.banner().map(str::to_owned))
            .flatten();
        let tracking = begun
            .contained
            .tracking
            .clone()
            .ok_or(SessionError::Contain(SessionCgroupError::NoTracking))?;
        let placement = Placement {
            cgroup: &begun.contained.cgroup,
            tracking,
            session_id: &self.id,
            deadline: config.bastiond.request_timeout.max(Duration::from_secs(10)),
            _placing: begun.placing.take().expect("placed once"),
        };
        let observer: &dyn Observer = match &begun.recording {
            Some(r) => r,
            None => &pump::NoObserver,
        };
        let ran = stream::run(
            self.broker,
            &begun.exec,
            received,
            control,
            observer,
            banner.as_deref(),
            placement,
        )
        .await?;
        self.phase("stream ended");
        Ok(ran)
    }

    /// Phase 5: how it ended (exit code, or what was killed), told to the
    /// shell first (with a notice when a container limit bit), then logged
    /// and recorded; whatever the session left running goes with it.
    async fn end(
        &self,
        user: &Identified,
        running: &Running,
        begun: Begun,
        end: ending::StreamEnd,
        counters: pump::ByteCounts,
        reply: &mut OwnedWriteHalf,
    ) {
        let Begun {
            exec,
            limits_before,
            recording,
            _reservation,
            contained,
            ..
        } = begun;
        let stop_reason = recording.as_ref().and_then(RecordingObserver::stop_reason);
        let finish = Finish::of(&exec, end, &contained, stop_reason).await;
        self.phase("exit code read");
        if let Some(frame) = finish.reply() {
            let limits_after = running.cgroup.as_deref().map(CgroupFiles::read_limit_hits);
            if let (Some(before), Some(after)) = (limits_before, limits_after) {
                let l = user.settings.limits;
                if let Some(message) = limits::notice(before, after, l.pids, l.memory) {
                    tracing::warn!(session = %self.id, user = %user.who.name, %message, "container limit hit");
                    let _ = protocol::write_frame_async(reply, &ServerMessage::Notice { message })
                        .await;
                }
            }
            let _ = protocol::write_frame_async(reply, &frame).await;
            self.phase("exit code sent");
        }
        // Logged once the shell has its exit code: nothing waits on the log.
        let (bytes_in, bytes_out) = counters.snapshot();
        let outcome = finish.outcome();
        tracing::info!(
            session = %self.id, user = %user.who.name, container = %running.name,
            exit_code = ?outcome.exit_code, ended_by = ?outcome.ended_by, bytes_in, bytes_out,
            error = outcome.error.as_deref(),
            "session end"
        );
        end_records(self.broker, recording, outcome).await;
        self.phase("records ended");
        tokio::spawn(contained.end());
    }

    /// A session that failed after its records began: its processes go,
    /// its records end with the error.
    async fn fail(&self, begun: Begun, error: &SessionError) {
        begun.contained.end().await;
        end_records(self.broker, begun.recording, error_outcome(error)).await;
    }
}

fn error_outcome(error: &SessionError) -> SessionOutcome {
    SessionOutcome {
        ended_by: crate::audit::EndedBy::Error,
        exit_code: None,
        signal: None,
        error: Some(error.to_string()),
    }
}

/// The exec of a session: `argv` as `who`, in their home, with the
/// allow-listed environment the shell sent (bounded, no NULs, a sane TERM,
/// locales the image has: see [`crate::broker::locale`]) and the session's
/// id. A session without a TERM (ssh without a terminal sends none) gets
/// `TERM=dumb`, so that tput and friends stay silent instead of failing.
fn exec_spec(
    argv: Vec<String>,
    who: &Identity,
    request: &Request,
    session_id: &str,
    locales: Option<&crate::broker::locale::ImageLocales>,
) -> ExecSpec {
    // The session's id, for the user's own use (their prompt, their logs);
    // nothing of bastion's relies on it.
    let mut env = vec![format!("BASTION_SESSION={session_id}")];
    let mut term = false;
    for (k, v) in &request.env {
        if k == "SSH_TTY" {
            continue; // a host path, meaningless inside
        }
        if k == "TERM" && !valid_term(v) {
            continue;
        }
        if v.len() <= 4096 && !v.contains('\0') {
            let v = match locales {
                Some(l) if crate::broker::locale::is_locale_var(k) => l.fit(v),
                _ => v.as_str(),
            };
            term |= k == "TERM";
            env.push(format!("{k}={v}"));
        }
    }
    if !term {
        env.push("TERM=dumb".to_owned());
    }
    ExecSpec {
        cmd: argv,
        user: format!("{}:{}", who.uid, who.gid),
        working_dir: format!("/home/{}", who.name),
        env,
        tty: request.tty,
    }
}

/// Terminal names: letters, digits and `._+-`, at most 64.
fn valid_term(term: &str) -> bool {
    !term.is_empty()
        && term.len() <= 64
        && term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

/// A sortable, unique session id: UTC time and 8 random hex digits.
pub fn new_session_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let suffix: u32 = rand::random();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{suffix:08x}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_names_are_checked() {
        assert!(valid_term("xterm-256color"));
        assert!(valid_term("screen.xterm-256color"));
        assert!(!valid_term(""));
        assert!(!valid_term("xterm\n"));
        assert!(!valid_term("../../x"));
    }

    #[test]
    fn a_session_without_term_gets_dumb_and_locales_fit_the_image() {
        let who = Identity {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let request = |env: &[(&str, &str)]| Request {
            version: crate::protocol::VERSION,
            command: Some("kubectx".into()),
            tty: false,
            size: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let locales = crate::broker::locale::ImageLocales::from_label("C.UTF-8 de_DE.UTF-8");
        let env = |r: &Request, l| exec_spec(vec!["sh".into()], &who, r, "s1", l).env;

        let sent = request(&[("LANG", "fr_FR.UTF-8"), ("LC_TIME", "de_DE.UTF-8")]);
        let got = env(&sent, Some(&locales));
        assert!(got.contains(&"TERM=dumb".to_owned()), "{got:?}");
        assert!(got.contains(&"LANG=C.UTF-8".to_owned()), "{got:?}");
        assert!(got.contains(&"LC_TIME=de_DE.UTF-8".to_owned()), "{got:?}");
        // An image without the label: as sent.
        assert!(env(&sent, None).contains(&"LANG=fr_FR.UTF-8".to_owned()));

        let got = env(&request(&[("TERM", "xterm-256color")]), Some(&locales));
        assert!(got.contains(&"TERM=xterm-256color".to_owned()), "{got:?}");
        assert!(!got.contains(&"TERM=dumb".to_owned()), "{got:?}");
        // A TERM refused as unsafe is replaced too.
        let got = env(&request(&[("TERM", "../x")]), None);
        assert!(got.contains(&"TERM=dumb".to_owned()), "{got:?}");
    }

    #[test]
    fn session_ids_sort_by_time_and_are_unique() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20261123T072000Z-0123abcd".len());
    }

    #[test]
    fn limit_errors_get_a_hint() {
        assert!(
            limit_hint("OCI runtime exec failed: fork: resource temporarily unavailable")
                .unwrap()
                .contains("process limit")
        );
        assert!(limit_hint("no such container").is_none());
    }
}
