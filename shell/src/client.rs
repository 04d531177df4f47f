//! `bastion-shell`: the users' login shell. It runs unprivileged, as the
//! user, and only forwards: its stdin/stdout/stderr go to `bastiond` over
//! the broker's unix socket (SCM_RIGHTS), terminal resizes follow as
//! messages, and it exits with the code the broker reports.
//!
//! It trusts nothing the user controls: it reads no dotfiles, forwards only
//! an allow-list of environment variables (as data), and accepts only the
//! argument forms sshd and login use.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::protocol::{
    self, ClientMessage, EXIT_BASTION_FAILURE, Request, ServerMessage, WindowSize,
};
use crate::sys;

/// The broker's socket. Fixed: the shell takes no path from the user.
pub const SOCKET_PATH: &str = "/run/bastion/bastiond.sock";

/// How the shell was invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `-c CMD`: run CMD; otherwise a login shell.
    pub command: Option<String>,
}

/// An invocation the shell does not accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("option -c needs a command")]
    MissingCommand,
    #[error("unsupported argument {0:?}: bastion-shell accepts only -l, -i and -c COMMAND")]
    Unsupported(String),
    #[error("the command is not valid UTF-8")]
    NotUtf8,
}

/// Why a session could not run; each is shown to the user in one line.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(
        "the bastion session service is not running ({path}: {source}); please try again in a minute or tell the bastion admins"
    )]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("could not hand the session to the bastion session service: {0}")]
    Send(#[source] io::Error),
    #[error("lost the connection to the bastion session service: {0}")]
    Lost(#[source] protocol::FrameError),
}

/// What `bastion-shell --help` prints.
pub const USAGE: &str = "\
bastion-shell: the login shell of bastion's users. sshd runs it; it hands
the session to bastiond, which runs it in the user's own container.

Usage (the forms sshd, login and su use; nothing else is accepted):
  bastion-shell [-l | --login | -i]   an interactive login shell
  bastion-shell -c COMMAND            run COMMAND (later arguments are ignored)
  bastion-shell --help | --version

Exit status: the session's own, or 125 when the bastion could not run it
(one line on stderr says why).
";

/// What the shell was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A session.
    Run(Invocation),
    /// `--help` / `-h`.
    Help,
    /// `--version` / `-V`.
    Version,
}

/// [`parse_args`], plus `--help` and `--version` as the only argument:
/// these print and exit without a session. The session forms are exactly
/// those of [`parse_args`].
pub fn parse(args: &[OsString]) -> Result<Parsed, UsageError> {
    if args.len() == 2 {
        match args[1].as_bytes() {
            b"--help" | b"-h" => return Ok(Parsed::Help),
            b"--version" | b"-V" => return Ok(Parsed::Version),
            _ => {}
        }
    }
    parse_args(args).map(Parsed::Run)
}

/// Parses argv the way sshd (`shell -c CMD`, argv[0] `-shell` for logins),
/// login and su call a shell. Arguments after CMD (bash's `$0 $1 …`) are
/// ignored: sshd never sends them.
pub fn parse_args(args: &[OsString]) -> Result<Invocation, UsageError> {
    let mut rest = args.iter().skip(1);
    let mut command = None;
    while let Some(arg) = rest.next() {
        match arg.as_bytes() {
            b"-l" | b"--login" | b"-i" | b"-li" | b"-il" => {}
            b"-c" => {
                let cmd = rest.next().ok_or(UsageError::MissingCommand)?;
                command = Some(cmd.to_str().ok_or(UsageError::NotUtf8)?.to_owned());
                break;
            }
            _ => return Err(UsageError::Unsupported(arg.to_string_lossy().into_owned())),
        }
    }
    Ok(Invocation { command })
}

/// The request for this invocation, from the process's terminal and the
/// allow-listed environment.
pub fn build_request(
    invocation: &Invocation,
    env: impl Iterator<Item = (OsString, OsString)>,
) -> Request {
    let stdin = io::stdin();
    let tty = rustix::termios::isatty(&stdin);
    let size = tty.then(|| terminal_size(&stdin)).flatten();
    let env: BTreeMap<String, String> = env
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| protocol::forwarded_env_var(k))
        .collect();
    Request {
        version: protocol::VERSION,
        command: invocation.command.clone(),
        tty,
        size,
        env,
    }
}

fn terminal_size(fd: impl std::os::fd::AsFd) -> Option<WindowSize> {
    let ws = rustix::termios::tcgetwinsize(fd).ok()?;
    let size = WindowSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    };
    size.is_valid().then_some(size)
}

/// Runs one session through the broker at `socket` and returns the exit
/// code for the process.
pub fn run(socket: &Path, request: &Request) -> Result<i32, ShellError> {
    // Keyboard signals must not kill the shell before the broker has put
    // the terminal in raw mode; after that they are bytes for the container.
    for signal in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP] {
        // Ignoring can only fail for invalid signals, which these are not.
        let _ = sys::ignore_signal(signal);
    }
    let mut stream = UnixStream::connect(socket).map_err(|source| ShellError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    send_request(&stream, request).map_err(ShellError::Send)?;
    if request.tty {
        forward_resizes(&stream).map_err(ShellError::Send)?;
    }
    let mut frames = protocol::FrameReader::new(&mut stream);
    loop {
        match frames.read::<ServerMessage>() {
            Ok(ServerMessage::Notice { message }) => eprintln!("bastion: {message}"),
            Ok(ServerMessage::Exit { code }) => return Ok(code),
            Ok(ServerMessage::Error { message, code }) => {
                eprintln!("bastion: {message}");
                return Ok(code);
            }
            Err(e) => return Err(ShellError::Lost(e)),
        }
    }
}

/// Sends the request frame with stdin, stdout and stderr attached.
fn send_request(stream: &UnixStream, request: &Request) -> io::Result<()> {
    let frame = protocol::encode(request).map_err(io::Error::other)?;
    let fds = [0, 1, 2];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let mut sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&frame)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    while sent < frame.len() {
        sent += sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&frame[sent..])],
            &[],
            MsgFlags::empty(),
            None,
        )
        .map_err(io::Error::from)?;
    }
    Ok(())
}

/// Forwards SIGWINCH as resize messages from a background thread.
fn forward_resizes(stream: &UnixStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])?;
    std::thread::Builder::new()
        .name("resize".into())
        .spawn(move || {
            for _ in signals.forever() {
                let Some(size) = terminal_size(io::stdin()) else {
                    continue;
                };
                if protocol::write_frame(&mut writer, &ClientMessage::Resize(size)).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

/// The whole shell: parse, connect, run, and return the exit code.
pub fn main_with(args: Vec<OsString>, env: impl Iterator<Item = (OsString, OsString)>) -> i32 {
    let invocation = match parse(&args) {
        Ok(Parsed::Run(invocation)) => invocation,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return 0;
        }
        Ok(Parsed::Version) => {
            println!("bastion-shell {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Err(e) => {
            let name = args
                .first()
                .map_or(OsStr::new("bastion-shell"), |a| a.as_os_str());
            eprintln!("{}: {e}", name.to_string_lossy().trim_start_matches('-'));
            return 2;
        }
    };
    let request = build_request(&invocation, env);
    match run(Path::new(SOCKET_PATH), &request) {
        Ok(code) => code.clamp(0, 255),
        Err(e) => {
            eprintln!("bastion: {e}");
            EXIT_BASTION_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn login_forms_run_a_login_shell() {
        for form in [
            &["-bastion-shell"][..],
            &["bastion-shell"],
            &["bastion-shell", "-l"],
        ] {
            assert_eq!(
                parse_args(&args(form)),
                Ok(Invocation { command: None }),
                "{form:?}"
            );
        }
    }

    #[test]
    fn dash_c_runs_the_command_and_ignores_what_follows() {
        let inv = parse_args(&args(&["bastion-shell", "-c", "echo hi; exit 3", "x", "y"]));
        assert_eq!(
            inv,
            Ok(Invocation {
                command: Some("echo hi; exit 3".into())
            })
        );
        let sftp = parse_args(&args(&[
            "bastion-shell",
            "-c",
            "/usr/lib/openssh/sftp-server",
        ]));
        assert_eq!(
            sftp.unwrap().command.as_deref(),
            Some("/usr/lib/openssh/sftp-server")
        );
    }

    #[test]
    fn other_arguments_are_refused() {
        assert_eq!(
            parse_args(&args(&["bastion-shell", "-c"])),
            Err(UsageError::MissingCommand)
        );
        assert!(matches!(
            parse_args(&args(&["bastion-shell", "--rcfile", "/tmp/x"])),
            Err(UsageError::Unsupported(_))
        ));
        assert!(matches!(
            parse_args(&args(&["bastion-shell", "script.sh"])),
            Err(UsageError::Unsupported(_))
        ));
    }

    #[test]
    fn help_and_version_are_answered_without_a_session() {
        assert_eq!(parse(&args(&["bastion-shell", "--help"])), Ok(Parsed::Help));
        assert_eq!(parse(&args(&["bastion-shell", "-h"])), Ok(Parsed::Help));
        assert_eq!(
            parse(&args(&["bastion-shell", "--version"])),
            Ok(Parsed::Version)
        );
        // Only as the one argument: `-c --help` is a command to run, and
        // anything else with them is refused as before.
        assert_eq!(
            parse(&args(&["bastion-shell", "-c", "--help"])),
            Ok(Parsed::Run(Invocation {
                command: Some("--help".into())
            }))
        );
        assert!(parse(&args(&["bastion-shell", "--help", "x"])).is_err());
        assert!(USAGE.contains("-c COMMAND"));
    }

    #[test]
    fn the_request_keeps_only_allow_listed_variables() {
        let env = [
            ("TERM", "xterm-256color"),
            ("LC_ALL", "C.UTF-8"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("PATH", "/tmp"),
            ("SSH_CONNECTION", "10.0.0.1 5000 10.0.0.2 22"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let request = build_request(&Invocation { command: None }, env.into_iter());
        let keys: Vec<&str> = request.env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["LC_ALL", "SSH_CONNECTION", "TERM"]);
    }

    #[test]
    fn a_missing_broker_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let request = build_request(&Invocation { command: None }, std::iter::empty());
        let err = run(&dir.path().join("none.sock"), &request).unwrap_err();
        assert!(err.to_string().contains("not running"), "{err}");
    }
}
