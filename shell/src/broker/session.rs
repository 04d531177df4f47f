//! One login, from the shell's request to its exit code: identify the
//! caller by SO_PEERCRED, apply their settings, make their container ready,
//! run the exec, pump bytes, forward resizes, and end cleanly whichever side
//! goes first.

use std::io::Cursor;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use bollard::exec::CreateExecOptions;
use bollard::query_parameters::ResizeExecOptions;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::Broker;
use super::admission::Pending;
use super::cgroup::{CgroupFiles, Tracking};
use super::container::{ContainerError, ContainerKind, ENGINE_DOWN};
use super::container_state::Running;
use super::exec_stream::{self, ExecStartError};
use super::fdio::FdIo;
use super::identity::{self, Identity, IdentityError};
use super::limits;
use super::plan::Plan;
use super::pump::{self, ByteCounts, Observer, PumpEnd};
use super::records::{self, RecordingObserver};
use super::request::{self, FirstFrame, Received, RequestError};
use super::session_cgroup::{self, SessionCgroup, SessionCgroupError};
use super::terminal::RawMode;
use crate::audit::{self, EndedBy, SessionKind, SessionStart};
use crate::config::ResolveError;
use crate::protocol::{
    self, ClientMessage, EXIT_BASTION_FAILURE, Request, ServerMessage, WindowSize,
};
use crate::recording::{
    OnLogFailure, RecordingError, SessionLogError, SessionOutcome, SessionRecording,
};

/// Why a session could not run. Each has a short message for the user
/// ([`SessionError::user_message`]); the full error goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    NotAllowed(#[from] ResolveError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("cannot create exec in {container}: {source}")]
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
        matches!(self, Self::NotAllowed(_) | Self::Identity(_))
    }

    /// The one line the user sees.
    pub fn user_message(&self) -> String {
        match self {
            Self::NotAllowed(e) => e.to_string(),
            Self::Identity(IdentityError::BadName { name, .. }) => {
                format!("the user name {name:?} cannot be used on this bastion; please tell the bastion admins")
            }
            Self::Container(e) => e.user_message(),
            Self::CreateExec { source, .. } if super::container::is_unreachable(source) => {
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

/// Why the byte pump stopped (what the session's end is then made of:
/// [`Finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exit,
    ClientGone,
    BrokerShutdown,
    /// The recording stopped (its cap, a write error, the log disk's
    /// reserve): the session ends rather than go on unrecorded.
    RecordingStopped,
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
    let reply = match run(&broker, uid, accepted, received, reader, &mut writer).await {
        Ok(()) => return,
        Err(e) => {
            if e.is_refusal() {
                admission.login_refused(uid, &e);
            } else {
                tracing::error!(uid, error = %error_chain(&e), "session failed");
            }
            ServerMessage::Error {
                message: e.user_message(),
                code: EXIT_BASTION_FAILURE,
            }
        }
    };
    let _ = protocol::write_frame_async(&mut writer, &reply).await;
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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

/// Runs the session. The exit code goes to the shell as soon as it is
/// known; the session's end is recorded after that (a crash in between is
/// covered: the open-session marker makes the next start-up write it).
async fn run(
    broker: &Arc<Broker>,
    uid: u32,
    accepted: std::time::Instant,
    received: Received,
    control: OwnedReadHalf,
    reply: &mut OwnedWriteHalf,
) -> Result<(), SessionError> {
    // Debug timings of a login's phases, from the shell's connection.
    let phase = |name: &str| {
        tracing::debug!(
            uid,
            phase = name,
            elapsed_us = accepted.elapsed().as_micros() as u64,
            "session phase"
        )
    };
    phase("request received");
    let who = tokio::task::spawn_blocking(move || identity::lookup(uid))
        .await
        .expect("identity lookup panicked")?;
    let config = broker.config.current();
    let settings = match config.bastiond.resolve(&who.name, who.uid, &who.groups) {
        Ok(s) => s,
        Err(e) => return Err(e.into()),
    };
    let session_id = new_session_id();
    let request = &received.request.clone();
    // Counted live before the container is ensured, so the reaper never
    // stops a container a login is about to use.
    let live = broker.live.enter(&who.name, &session_id);
    let others_live = || broker.live.count(&who.name).saturating_sub(1);
    phase("identified");
    let plan = Plan::of(request);
    // File transfers run in the user's file-transfer container, apart from
    // every other session of theirs (container/spec.rs, ContainerKind).
    let container_kind = match plan {
        Plan::Transfer(_) => ContainerKind::Transfers,
        _ => ContainerKind::Shell,
    };
    let running = broker
        .containers
        .ensure(
            &config.bastiond,
            &who,
            &settings,
            container_kind,
            others_live,
        )
        .await?;
    phase(if running.remembered {
        "container ready (remembered)"
    } else {
        "container ready"
    });
    tracing::info!(
        session = %session_id, user = %who.name, uid, container = %running.name,
        tty = request.tty, command = request.command.as_deref().unwrap_or("<login shell>"),
        container_state = if running.remembered { "remembered" } else { "inspected" },
        "session start"
    );

    let kind = plan.kind();
    let ssh_connection = request.env.get("SSH_CONNECTION").map(String::as_str);
    let (remote_addr, remote_port) = records::remote_of(ssh_connection);
    let start = SessionStart {
        session_id: session_id.clone(),
        user: who.name.clone(),
        uid: who.uid,
        groups: who.groups.clone(),
        remote_addr,
        remote_port,
        container: running.name.clone(),
        container_id: Some(running.id.clone()),
        image: running.image.clone(),
        image_digest: Some(running.image_id.clone()),
        role: running.role.clone(),
        kind,
        command: request
            .command
            .as_deref()
            .map(|c| audit::bounded(c, audit::MAX_COMMAND_BYTES)),
        shell: Some(config.bastiond.shell.clone()),
        transfer_direction: plan.transfer_direction(),
        tty: request.tty,
        term: request
            .env
            .get("TERM")
            .map(|t| audit::bounded(t, audit::MAX_TERM_BYTES)),
        cols: request.size.map(|s| s.cols),
        rows: request.size.map(|s| s.rows),
        recording: None,
        record_input: false,
        unrecorded_reason: None,
    };
    // File transfers are counted, never recorded byte by byte.
    let record = plan.recorded();
    let audit = broker.audit.clone();
    let mut recording_config = config.recording.clone();
    let budgets = broker.budgets.clone();
    let budget = settings.limits.recordings.as_u64();
    let limits_before = running.cgroup.as_deref().map(CgroupFiles::read_limit_hits);
    // The records are begun while the Engine creates the exec (it is only
    // started once the records exist). A recording takes at most what the
    // user's budget leaves (held until the session ends).
    let begin = tokio::task::spawn_blocking(move || {
        let (mut start, mut record) = (start, record);
        let mut reservation = None;
        if record {
            match budgets.reserve(
                &recording_config.log_dir,
                &start.user,
                &start.session_id,
                budget,
                recording_config.max_recording_bytes.as_u64(),
            ) {
                Ok(r) => {
                    recording_config.max_recording_bytes = bytesize::ByteSize::b(r.cap);
                    reservation = Some(r);
                }
                Err(e) if recording_config.on_log_failure == OnLogFailure::Refuse => {
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::error!(user = %start.user, error = %e, "SESSION IS NOT RECORDED (on_log_failure = \"allow\")");
                    start.unrecorded_reason = Some(e.to_string());
                    record = false;
                }
            }
        }
        SessionRecording::begin_with_policy(&recording_config, &audit, start, record)
            .map(|r| (r, reservation))
    });
    // The session's own cgroup exists before its exec does: the exec runs
    // nothing until it is inside (session_cgroup.rs).
    let cgroup = running
        .cgroup
        .as_ref()
        .and_then(|c| c.tracking.as_ref())
        .ok_or(SessionCgroupError::NoTracking)
        .and_then(|tracking| SessionCgroup::create(tracking, &session_id))
        .map_err(SessionError::Contain)?;
    let placements = broker.containers.placement_lock(&who.name);
    // Held until the exec is in its cgroup: no sweep of strays meanwhile.
    let placing = placements.clone().read_owned().await;
    let contained = Contained {
        cgroup,
        tracking: running.cgroup.as_ref().and_then(|c| c.tracking.clone()),
        uid: who.uid,
        placements,
    };
    let exec = create_exec(
        broker,
        session_cgroup::wrapped(&session_id, plan.argv(&config.bastiond.shell)),
        &who,
        &running,
        request,
        &session_id,
    );
    let (recording, exec_id) = tokio::join!(begin, exec);
    let (recording, _reservation) = match recording.expect("session records panicked") {
        Ok(r) => r,
        Err(e) => {
            drop(placing);
            contained.end().await;
            return Err(SessionError::Records(e));
        }
    };
    let recording = recording.map(|r| RecordingObserver(std::sync::Mutex::new(r)));
    // The "you are recorded" notice: interactive sessions only, never in
    // command or transfer sessions, where it would corrupt their output.
    let banner = (kind == SessionKind::Shell && request.tty)
        .then(|| config.recording.banner().map(str::to_owned))
        .flatten();

    phase("records begun");
    let result = async {
        let exec_id = exec_id?;
        let observer: &dyn Observer = match &recording {
            Some(r) => r,
            None => &pump::NoObserver,
        };
        let placement = Placement {
            cgroup: &contained.cgroup,
            tracking: contained
                .tracking
                .clone()
                .ok_or(SessionError::Contain(SessionCgroupError::NoTracking))?,
            session_id: &session_id,
            deadline: config.bastiond.request_timeout.max(Duration::from_secs(10)),
            _placing: placing,
        };
        let (ending, counters) = attach(
            broker,
            &exec_id,
            received,
            control,
            observer,
            banner.as_deref(),
            placement,
        )
        .await?;
        Ok::<_, SessionError>((exec_id, ending, counters))
    }
    .await;
    let (exec_id, ending, counters) = match result {
        Ok(done) => done,
        Err(e) => {
            contained.end().await;
            let outcome = SessionOutcome {
                ended_by: EndedBy::Error,
                exit_code: None,
                signal: None,
                error: Some(e.to_string()),
            };
            end_records(broker, recording, outcome).await;
            return Err(e);
        }
    };
    phase("stream ended");
    let stop_reason = recording.as_ref().and_then(RecordingObserver::stop_reason);
    let finish = finish(broker, &exec_id, ending, &contained, stop_reason).await;
    phase("exit code read");
    let reply_frame = match &finish {
        Finish::Exited { code, .. } => Some(ServerMessage::Exit { code: *code }),
        Finish::ClientGone { .. } => None, // nobody to tell
        Finish::Shutdown { .. } => Some(ServerMessage::Error {
            message: BROKER_RESTARTING.into(),
            code: EXIT_BASTION_FAILURE,
        }),
        Finish::EngineLost { .. } => Some(ServerMessage::Error {
            message: ENGINE_DOWN.into(),
            code: EXIT_BASTION_FAILURE,
        }),
        Finish::RecordingStopped { reason, .. } => Some(ServerMessage::Error {
            message: format!(
                "your session was ended because it could no longer be recorded ({reason}); please start a new one"
            ),
            code: EXIT_BASTION_FAILURE,
        }),
    };
    if let Some(frame) = reply_frame {
        let limits_after = running.cgroup.as_deref().map(CgroupFiles::read_limit_hits);
        if let (Some(before), Some(after)) = (limits_before, limits_after) {
            let l = settings.limits;
            if let Some(message) = limits::notice(before, after, l.pids, l.memory) {
                tracing::warn!(session = %session_id, user = %who.name, %message, "container limit hit");
                let _ =
                    protocol::write_frame_async(reply, &ServerMessage::Notice { message }).await;
            }
        }
        let _ = protocol::write_frame_async(reply, &frame).await;
        phase("exit code sent");
    }
    // Logged once the shell has its exit code: nothing waits on the log.
    let (bytes_in, bytes_out) = counters.snapshot();
    let outcome = finish.outcome();
    tracing::info!(
        session = %session_id, user = %who.name, container = %running.name,
        exit_code = ?outcome.exit_code, ended_by = ?outcome.ended_by, bytes_in, bytes_out,
        error = outcome.error.as_deref(),
        "session end"
    );
    end_records(broker, recording, outcome).await;
    phase("records ended");
    drop(live);
    // Whatever the session left running in the background goes with it.
    tokio::spawn(contained.end());
    Ok(())
}

/// What users are told when bastiond stops under their session.
pub const BROKER_RESTARTING: &str =
    "the bastion's session service was restarted, which ended your session; please log in again";

/// A session's cgroup, and what its end sweeps.
struct Contained {
    cgroup: SessionCgroup,
    tracking: Option<Tracking>,
    uid: u32,
    /// The user's placement lock (taken exclusively to sweep strays).
    placements: Arc<tokio::sync::RwLock<()>>,
}

impl Contained {
    /// Kills everything the session started, removes its cgroup, and kills
    /// the user's strays outside any session. Returns how many of the
    /// session's processes were killed.
    async fn kill(&self) -> usize {
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

    async fn end(self) {
        self.kill().await;
    }
}

/// How a session ended, as bastiond can tell.
enum Finish {
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
    fn outcome(&self) -> SessionOutcome {
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

/// Reads how the session's exec ended, killing what is left of the
/// session when it did not end by itself.
async fn finish(
    broker: &Broker,
    exec_id: &str,
    ending: Ending,
    contained: &Contained,
    stop_reason: Option<String>,
) -> Finish {
    match ending {
        Ending::RecordingStopped => {
            let killed = contained.kill().await;
            Finish::RecordingStopped {
                code: exit_code(broker, exec_id).await.ok(),
                killed,
                reason: stop_reason.unwrap_or_else(|| "it stopped".into()),
            }
        }
        Ending::Exit => match exit_code(broker, exec_id).await {
            Ok(code) => Finish::Exited { code, killed: 0 },
            Err(error) => {
                contained.kill().await;
                Finish::EngineLost { error }
            }
        },
        Ending::ClientGone => {
            let killed = contained.kill().await;
            tracing::info!(
                exec = exec_id,
                killed,
                "client gone: killed the session's processes"
            );
            Finish::ClientGone {
                code: exit_code(broker, exec_id).await.ok(),
                killed,
            }
        }
        Ending::BrokerShutdown => {
            // A command that finished as the shutdown began keeps its code.
            if let Ok(Some(code)) = exec_exit(broker, exec_id).await {
                return Finish::Exited { code, killed: 0 };
            }
            let killed = contained.kill().await;
            Finish::Shutdown {
                code: exit_code(broker, exec_id).await.ok(),
                killed,
            }
        }
    }
}

async fn create_exec(
    broker: &Broker,
    cmd: Vec<String>,
    who: &Identity,
    running: &Running,
    request: &Request,
    session_id: &str,
) -> Result<String, SessionError> {
    // The session's id, for the user's own use (their prompt, their logs);
    // nothing of bastion's relies on it.
    let mut env = vec![format!("BASTION_SESSION={session_id}")];
    for (k, v) in &request.env {
        if k == "SSH_TTY" {
            continue; // a host path, meaningless inside
        }
        if k == "TERM" && !valid_term(v) {
            continue;
        }
        if v.len() <= 4096 && !v.contains('\0') {
            env.push(format!("{k}={v}"));
        }
    }
    let options = CreateExecOptions {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(request.tty),
        env: Some(env),
        cmd: Some(cmd),
        user: Some(format!("{}:{}", who.uid, who.gid)),
        working_dir: Some(format!("/home/{}", who.name)),
        ..Default::default()
    };
    broker
        .containers
        .docker()
        .create_exec(&running.id, options)
        .await
        .map(|r| r.id)
        .map_err(|source| {
            // Gone or stopped since it was last seen: the next login
            // inspects it afresh rather than trusting the events stream.
            broker.containers.forget(&running.name);
            SessionError::CreateExec {
                container: running.name.clone(),
                source,
            }
        })
}

/// Terminal names: letters, digits and `._+-`, at most 64.
fn valid_term(term: &str) -> bool {
    !term.is_empty()
        && term.len() <= 64
        && term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

/// Starts the exec, moves it into its session's cgroup (meanwhile its
/// wrapper runs nothing), and pumps until it ends or the client goes away.
async fn attach(
    broker: &Arc<Broker>,
    exec_id: &str,
    received: Received,
    mut control: OwnedReadHalf,
    observer: &dyn Observer,
    banner: Option<&str>,
    placement: Placement<'_>,
) -> Result<(Ending, ByteCounts), SessionError> {
    let Received {
        request,
        stdin,
        stdout,
        stderr,
    } = received;
    let stream = exec_stream::start_exec(&broker.docker_socket, exec_id, request.tty).await?;
    tracing::debug!(exec = exec_id, "exec started");
    let stdin = FdIo::new(stdin, Interest::READABLE).map_err(SessionError::Fd)?;
    let stdout = FdIo::new(stdout, Interest::WRITABLE).map_err(SessionError::Fd)?;
    let stderr = FdIo::new(stderr, Interest::WRITABLE).map_err(SessionError::Fd)?;
    let hangup = stdout.hangup_watcher().map_err(SessionError::Fd)?;

    if let Some(banner) = banner {
        // Written before raw mode, so the terminal turns \n into \r\n.
        let text = format!("{}\n", banner.trim_end());
        stdout
            .write_all(text.as_bytes())
            .await
            .map_err(SessionError::Fd)?;
    }
    let mut raw = None;
    if request.tty {
        raw = Some(RawMode::enter(stdin.fd()).map_err(SessionError::Fd)?);
        if let Some(size) = request.size.filter(|s| s.is_valid()) {
            resize(broker, exec_id, size).await;
        }
    }

    let counters = ByteCounts::default();
    let (from_exec, to_exec) = stream.socket.into_split();
    let from_exec = Cursor::new(stream.pending).chain(from_exec);

    let ending = {
        let output = async {
            if request.tty {
                pump::output_raw(from_exec, &stdout, observer, &counters).await
            } else {
                pump::output_multiplexed(from_exec, &stdout, &stderr, observer, &counters).await
            }
        };
        let input = pump::input(&stdin, to_exec, observer, &counters);
        let controls = async {
            let mut frames = protocol::AsyncFrameReader::new(&mut control);
            loop {
                match frames.read::<ClientMessage>().await {
                    Ok(ClientMessage::Resize(size)) if size.is_valid() => {
                        observer.resize(size);
                        resize(broker, exec_id, size).await;
                    }
                    Ok(_) => {}
                    Err(_) => return, // the shell is gone
                }
            }
        };
        let placed = placement.run();
        tokio::pin!(output, input, controls, placed);
        let shutdown = broker.shutdown.clone();
        let mut input_done = false;
        let mut placing = true;
        loop {
            tokio::select! {
                result = &mut placed, if placing => {
                    placing = false;
                    if let Err(e) = result {
                        if let Some(raw) = raw.as_mut() {
                            raw.restore();
                        }
                        return Err(SessionError::Contain(e));
                    }
                }
                end = &mut output => break match end {
                    PumpEnd::SinkGone(_) => Ending::ClientGone,
                    PumpEnd::Eof | PumpEnd::SourceFailed(_) => Ending::Exit,
                    PumpEnd::RecordingStopped => Ending::RecordingStopped,
                },
                end = &mut input, if !input_done => {
                    input_done = true;
                    // A PTY never reports EOF while its SSH client is there:
                    // ctrl-d is a byte in raw mode. EOF or EIO means hang-up.
                    if request.tty {
                        tracing::debug!(?end, "terminal closed");
                        break Ending::ClientGone;
                    }
                }
                () = &mut controls => break Ending::ClientGone,
                Ok(()) = hangup.hung_up(), if !request.tty => break Ending::ClientGone,
                () = shutdown.cancelled() => break Ending::BrokerShutdown,
            }
        }
    };
    if let Some(raw) = raw.as_mut() {
        raw.restore();
    }
    Ok((ending, counters))
}

/// Closes the session's recording and writes `session.end` (blocking I/O).
async fn end_records(
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

async fn resize(broker: &Broker, exec_id: &str, size: WindowSize) {
    let options = ResizeExecOptions {
        h: i32::from(size.rows),
        w: i32::from(size.cols),
    };
    if let Err(e) = broker
        .containers
        .docker()
        .resize_exec(exec_id, options)
        .await
    {
        tracing::debug!(exec = exec_id, error = %e, "resize failed");
    }
}

/// The exec's exit code if it has ended (`Ok(None)`: still running).
async fn exec_exit(broker: &Broker, exec_id: &str) -> Result<Option<i32>, String> {
    let inspect = broker
        .containers
        .docker()
        .inspect_exec(exec_id)
        .await
        .map_err(|e| format!("cannot read the exit code from the container engine: {e}"))?;
    if inspect.running == Some(true) {
        return Ok(None);
    }
    match inspect.exit_code.and_then(|c| i32::try_from(c).ok()) {
        Some(code) => Ok(Some(code)),
        None => Err("the container engine has no exit code for the session".into()),
    }
}

/// The exec's exit code, once the Engine has recorded it; an error when
/// the Engine is gone or forgot the exec (a restarted dockerd).
async fn exit_code(broker: &Broker, exec_id: &str) -> Result<i32, String> {
    let mut delay = Duration::from_millis(2);
    for _ in 0..40 {
        match exec_exit(broker, exec_id).await {
            Ok(Some(code)) => return Ok(code),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(exec = exec_id, error = %e, "cannot read exit code");
                return Err(e);
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
    tracing::warn!(exec = exec_id, "exec still running after its stream ended");
    Err("the session's process was still running after its output ended".into())
}

/// What moving the exec into its session's cgroup needs.
struct Placement<'a> {
    cgroup: &'a SessionCgroup,
    /// The container's own cgroup, where the exec's process appears.
    tracking: Tracking,
    session_id: &'a str,
    deadline: Duration,
    /// The user's placement lock, shared, released once placed.
    _placing: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Placement<'_> {
    /// Finds the exec's process (the wrapper waiting in the container's
    /// cgroup, found from the kernel's list: polling the Engine would add
    /// its round trips to every login), moves it into the session's cgroup
    /// and lets it run. Were there several (another session of the user
    /// mimicking the wrapper), all are moved into this session, which only
    /// subjects them to its end.
    async fn run(self) -> Result<(), SessionCgroupError> {
        let started = std::time::Instant::now();
        let wrappers = loop {
            let tracking = self.tracking.clone();
            let id = self.session_id.to_owned();
            let found = tokio::task::spawn_blocking(move || {
                session_cgroup::waiting_wrappers(&tracking, &id)
            })
            .await
            .unwrap_or_default();
            if !found.is_empty() {
                break found;
            }
            if started.elapsed() > self.deadline {
                return Err(SessionCgroupError::PlacementTimeout(self.deadline));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let cgroup = self.cgroup.clone();
        let session_id = self.session_id.to_owned();
        let deadline = self.deadline;
        tokio::task::spawn_blocking(move || {
            wrappers
                .into_iter()
                .try_for_each(|pid| session_cgroup::place(&cgroup, &session_id, pid, deadline))
        })
        .await
        .unwrap_or(Err(SessionCgroupError::PlacementTimeout(deadline)))
    }
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
