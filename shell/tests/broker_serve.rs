//! A broker started in-process on a temporary socket, with its listener
//! and its stop passed in (`broker::serve`), as the installed bastiond
//! runs through `broker::run`: it answers on that socket, refuses root
//! with one clear message, and returns when told to stop.
//!
//! Needs root (the config must be root-owned; the peer is uid 0). Docker
//! is not needed: a broker starts without it (logins then say the engine
//! is not available).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use bastion::broker::{self, Broker};
use bastion::protocol::{self, FrameReader, Request, ServerMessage};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("bastion.toml");
    std::fs::write(
        &path,
        format!(
            "[bastiond]\nsocket = \"{d}/run/bastiond.sock\"\nstate_dir = \"{d}/state\"\n\
             home_root = \"{d}/homes\"\n\n[recording]\nlog_dir = \"{d}/log\"\n\
             audit_log = \"{d}/log/audit.jsonl\"\nsyslog = false\n",
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

/// Sends a request frame with three descriptors, as `bastion-shell` does,
/// and returns the broker's first answer.
fn ask(socket: &std::path::Path) -> ServerMessage {
    let stream = UnixStream::connect(socket).unwrap();
    let frame = protocol::encode(&Request {
        version: protocol::VERSION,
        command: Some("true".into()),
        tty: false,
        size: None,
        env: BTreeMap::new(),
    })
    .unwrap();
    let null: Vec<OwnedFd> = (0..3)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect();
    let fds: Vec<i32> = null.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&frame)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(sent, frame.len());
    FrameReader::new(&stream).read().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_serves_on_the_socket_it_is_given_and_stops_when_told() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root (./test.sh does): the config must be root-owned"
    );
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(Broker::connect(&config(dir.path())).await.unwrap());
    let socket = dir.path().join("run/bastiond.sock");
    let listener = broker::listen(&socket).unwrap();
    assert!(
        matches!(
            broker::listen(&socket),
            Err(broker::BrokerError::AlreadyRunning { .. })
        ),
        "a second broker on the same socket is refused"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(broker::serve(broker, listener, async {
        let _ = stopped.await;
    }));

    let asked = socket.clone();
    let answer = tokio::task::spawn_blocking(move || ask(&asked))
        .await
        .unwrap();
    match answer {
        ServerMessage::Error { message, code } => {
            assert_eq!(code, protocol::EXIT_BASTION_FAILURE);
            assert!(message.contains("root"), "{message}");
        }
        other => panic!("root got {other:?}"),
    }

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("serve returns once told to stop")
        .unwrap();
}
