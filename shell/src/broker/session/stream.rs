//! A session's running part: the exec started, moved into the session's
//! cgroup before it runs anything ([`Placement`]), and its bytes pumped
//! between the SSH side's descriptors and the exec, with resizes, until
//! one side ends ([`StreamEnd`]).

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::OwnedReadHalf;

use super::super::Broker;
use super::super::cgroup::Tracking;
use super::super::exec::Exec;
use super::super::fdio::FdIo;
use super::super::pump::{self, ByteCounts, Observer, PumpEnd};
use super::super::request::Received;
use super::super::session_cgroup::{self, SessionCgroup, SessionCgroupError};
use super::super::terminal::RawMode;
use super::SessionError;
use super::ending::StreamEnd;
use crate::protocol::{self, ClientMessage};

/// What moving the exec into its session's cgroup needs.
pub struct Placement<'a> {
    pub cgroup: &'a SessionCgroup,
    /// The container's own cgroup, where the exec's process appears.
    pub tracking: Tracking,
    pub session_id: &'a str,
    pub deadline: Duration,
    /// The user's placement lock, shared, released once placed.
    pub _placing: tokio::sync::OwnedRwLockReadGuard<()>,
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

/// Starts the exec, moves it into its session's cgroup (meanwhile its
/// wrapper runs nothing), and pumps until it ends or the client goes away.
pub async fn run(
    broker: &Arc<Broker>,
    exec: &Exec,
    received: Received,
    mut control: OwnedReadHalf,
    observer: &dyn Observer,
    banner: Option<&str>,
    placement: Placement<'_>,
) -> Result<(StreamEnd, ByteCounts), SessionError> {
    let Received {
        request,
        stdin,
        stdout,
        stderr,
    } = received;
    let stream = exec.start().await?;
    tracing::debug!(exec = exec.id(), "exec started");
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
            exec.resize(size).await;
        }
    }

    let counters = ByteCounts::default();
    let (from_exec, to_exec) = stream.socket.into_split();
    let from_exec = Cursor::new(stream.pending).chain(from_exec);

    let end = {
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
                        exec.resize(size).await;
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
                    PumpEnd::SinkGone(_) => StreamEnd::ClientGone,
                    PumpEnd::Eof | PumpEnd::SourceFailed(_) => StreamEnd::Exit,
                    PumpEnd::RecordingStopped => StreamEnd::RecordingStopped,
                },
                end = &mut input, if !input_done => {
                    input_done = true;
                    // A PTY never reports EOF while its SSH client is there:
                    // ctrl-d is a byte in raw mode. EOF or EIO means hang-up.
                    if request.tty {
                        tracing::debug!(?end, "terminal closed");
                        break StreamEnd::ClientGone;
                    }
                }
                () = &mut controls => break StreamEnd::ClientGone,
                Ok(()) = hangup.hung_up(), if !request.tty => break StreamEnd::ClientGone,
                () = shutdown.cancelled() => break StreamEnd::BrokerShutdown,
            }
        }
    };
    if let Some(raw) = raw.as_mut() {
        raw.restore();
    }
    Ok((end, counters))
}
