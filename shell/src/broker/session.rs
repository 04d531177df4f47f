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
use super::cgroup::CgroupFiles;
use super::container::{ContainerError, ENGINE_DOWN, Running};
use super::exec_stream::{self, ExecStartError};
use super::fdio::FdIo;
use super::identity::{self, Identity, IdentityError};
use super::limits;
use super::plan::Plan;
use super::procs;
use super::pump::{self, Counters, Observer, PumpEnd};
use super::records::{self, RecordingObserver};
use super::request::{self, FirstFrame, Received, RequestError};
use super::terminal::RawMode;
use crate::audit::{self, EndedBy, SessionKind, SessionStart};
use crate::config::ResolveError;
use crate::protocol::{
    self, ClientMessage, EXIT_BASTION_FAILURE, Request, ServerMessage, WindowSize,
};
use crate::recording::{SessionLogError, SessionOutcome, SessionRecording};

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
}

impl SessionError {
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
            Self::Records(_) => "sessions cannot be recorded right now, so logins are refused; please tell the bastion admins".into(),
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

/// How a session ended (the audit trail's `ended_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exit,
    ClientGone,
    BrokerShutdown,
}

impl Ending {
    fn ended_by(self) -> EndedBy {
        match self {
            Ending::Exit => EndedBy::Exit,
            Ending::ClientGone => EndedBy::ClientGone,
            Ending::BrokerShutdown => EndedBy::BrokerShutdown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Exit => "exit",
            Ending::ClientGone => "client_gone",
            Ending::BrokerShutdown => "broker_shutdown",
        }
    }
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
    drop(pending);
    let (reader, mut writer) = stream.into_split();
    let reply = match run(&broker, uid, accepted, received, reader, &mut writer).await {
        Ok(()) => return,
        Err(e) => {
            tracing::error!(uid, error = %error_chain(&e), "session failed");
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
        Err(e) => {
            tracing::warn!(user = %who.name, uid, error = %e, "login refused");
            return Err(e.into());
        }
    };
    let session_id = new_session_id();
    let request = &received.request.clone();
    // Counted live before the container is ensured, so the reaper never
    // stops a container a login is about to use.
    let live = broker.live.enter(&who.name);
    let others_live = || broker.live.count(&who.name).saturating_sub(1);
    phase("identified");
    let running = broker
        .containers
        .ensure(&config.bastiond, &who, &settings, others_live)
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

    let plan = Plan::of(request);
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
    let recording_config = config.recording.clone();
    let limits_before = running.cgroup.as_deref().map(CgroupFiles::read_counters);
    // The records are begun while the Engine creates the exec (it is only
    // started once the records exist).
    let begin = tokio::task::spawn_blocking(move || {
        SessionRecording::begin_with_policy(&recording_config, &audit, start, record)
    });
    let exec = create_exec(
        broker,
        plan.argv(&config.bastiond.shell),
        &who,
        &running,
        request,
        &session_id,
    );
    let (recording, exec_id) = tokio::join!(begin, exec);
    let recording = recording
        .expect("session records panicked")
        .map_err(SessionError::Records)?;
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
        let (ending, counters) = attach(
            broker,
            &exec_id,
            received,
            control,
            observer,
            banner.as_deref(),
        )
        .await?;
        Ok::<_, SessionError>((exec_id, ending, counters))
    }
    .await;
    let (exec_id, ending, counters) = match result {
        Ok(done) => done,
        Err(e) => {
            kill_session_processes(&running, &session_id, None).await;
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
    let mut killed = 0;
    if ending != Ending::Exit {
        let pid = exec_pid(broker, &exec_id).await;
        killed = kill_session_processes(&running, &session_id, pid).await;
        tracing::info!(session = %session_id, killed, ended_by = ending.as_str(), "killed the session's processes");
    }
    phase("stream ended");
    let code = exit_code(broker, &exec_id).await;
    phase("exit code read");
    let code_for_shell = match ending {
        Ending::Exit => Some(code),
        Ending::BrokerShutdown => Some(EXIT_BASTION_FAILURE),
        Ending::ClientGone => None, // nobody to tell
    };
    if let Some(code) = code_for_shell {
        let limits_after = running.cgroup.as_deref().map(CgroupFiles::read_counters);
        if let (Some(before), Some(after)) = (limits_before, limits_after) {
            let l = settings.limits;
            if let Some(message) = limits::notice(before, after, l.pids, l.memory) {
                tracing::warn!(session = %session_id, user = %who.name, %message, "container limit hit");
                let _ =
                    protocol::write_frame_async(reply, &ServerMessage::Notice { message }).await;
            }
        }
        let _ = protocol::write_frame_async(reply, &ServerMessage::Exit { code }).await;
        phase("exit code sent");
    }
    // Logged once the shell has its exit code: nothing waits on the log.
    let (bytes_in, bytes_out) = counters.snapshot();
    tracing::info!(
        session = %session_id, user = %who.name, container = %running.name,
        exit_code = code, ended_by = ending.as_str(), bytes_in, bytes_out,
        "session end"
    );
    let signal = (killed > 0 && code == 128 + 9).then(|| "KILL".to_owned());
    let outcome = SessionOutcome {
        ended_by: ending.ended_by(),
        exit_code: Some(code),
        signal,
        error: None,
    };
    end_records(broker, recording, outcome).await;
    phase("records ended");
    drop(live);
    // Whatever the session left running in the background goes with it.
    tokio::spawn(async move {
        kill_session_processes(&running, &session_id, None).await;
    });
    Ok(())
}

async fn create_exec(
    broker: &Broker,
    cmd: Vec<String>,
    who: &Identity,
    running: &Running,
    request: &Request,
    session_id: &str,
) -> Result<String, SessionError> {
    let mut env = vec![format!("{}={session_id}", procs::SESSION_ENV)];
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

/// Starts the exec and pumps until it ends or the client goes away.
async fn attach(
    broker: &Arc<Broker>,
    exec_id: &str,
    received: Received,
    mut control: OwnedReadHalf,
    observer: &dyn Observer,
    banner: Option<&str>,
) -> Result<(Ending, Counters), SessionError> {
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

    let counters = Counters::default();
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
            loop {
                match protocol::read_frame_async::<ClientMessage>(&mut control).await {
                    Ok(ClientMessage::Resize(size)) if size.is_valid() => {
                        observer.resize(size);
                        resize(broker, exec_id, size).await;
                    }
                    Ok(_) => {}
                    Err(_) => return, // the shell is gone
                }
            }
        };
        tokio::pin!(output, input, controls);
        let shutdown = broker.shutdown.clone();
        let mut input_done = false;
        loop {
            tokio::select! {
                end = &mut output => break match end {
                    PumpEnd::SinkGone(_) => Ending::ClientGone,
                    PumpEnd::Eof | PumpEnd::SourceFailed(_) => Ending::Exit,
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

async fn exec_pid(broker: &Broker, exec_id: &str) -> Option<i32> {
    let inspect = broker
        .containers
        .docker()
        .inspect_exec(exec_id)
        .await
        .ok()?;
    inspect
        .pid
        .and_then(|p| i32::try_from(p).ok())
        .filter(|&p| p > 0)
}

/// The exec's exit code, once the Engine has recorded it.
async fn exit_code(broker: &Broker, exec_id: &str) -> i32 {
    let docker = broker.containers.docker();
    let mut delay = Duration::from_millis(2);
    for _ in 0..40 {
        match docker.inspect_exec(exec_id).await {
            Ok(i) if i.running != Some(true) => {
                return i
                    .exit_code
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(EXIT_BASTION_FAILURE);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(exec = exec_id, error = %e, "cannot read exit code");
                return EXIT_BASTION_FAILURE;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
    tracing::warn!(exec = exec_id, "exec still running after its stream ended");
    EXIT_BASTION_FAILURE
}

async fn kill_session_processes(running: &Running, session_id: &str, pid: Option<i32>) -> usize {
    let id = running.id.clone();
    let cgroup = running.cgroup.clone();
    let session = session_id.to_owned();
    tokio::task::spawn_blocking(move || procs::kill_session(&id, cgroup.as_deref(), &session, pid))
        .await
        .unwrap_or(0)
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
