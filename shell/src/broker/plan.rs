//! What a session runs, decided once from its request: a login shell, a
//! command through the shell, or a file-transfer server run directly
//! ([`super::transfer`]). The plan gives the exec's argv and the audit
//! trail's session kind; only a transfer goes unrecorded.

use crate::audit::{SessionKind, TransferDirection};
use crate::protocol::Request;

use super::transfer::{self, TransferServer};

/// What a session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// `shell -l`.
    LoginShell,
    /// `shell -c -- COMMAND` (`--`: a command starting with `-` is a
    /// command, never an option of the shell).
    Command(String),
    /// A transfer server's own argv, without a shell.
    Transfer(TransferServer),
}

impl Plan {
    pub fn of(request: &Request) -> Self {
        match &request.command {
            None => Self::LoginShell,
            Some(command) => match transfer::server_invocation(command, request.tty) {
                Some(server) => Self::Transfer(server),
                None => Self::Command(command.clone()),
            },
        }
    }

    pub fn kind(&self) -> SessionKind {
        match self {
            Self::LoginShell => SessionKind::Shell,
            Self::Command(_) => SessionKind::Command,
            Self::Transfer(_) => SessionKind::FileTransfer,
        }
    }

    pub fn transfer_direction(&self) -> Option<TransferDirection> {
        match self {
            Self::Transfer(server) => Some(server.direction),
            _ => None,
        }
    }

    /// Whether the session's bytes are recorded (all but transfers, which
    /// are counted).
    pub fn recorded(&self) -> bool {
        !matches!(self, Self::Transfer(_))
    }

    /// The exec's argv, with `shell` the container's login shell.
    pub fn argv(&self, shell: &str) -> Vec<String> {
        match self {
            Self::LoginShell => vec![shell.to_owned(), "-l".to_owned()],
            Self::Command(command) => vec![
                shell.to_owned(),
                "-c".to_owned(),
                "--".to_owned(),
                command.clone(),
            ],
            Self::Transfer(server) => server.argv.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn request(command: Option<&str>, tty: bool) -> Request {
        Request {
            version: crate::protocol::VERSION,
            command: command.map(str::to_owned),
            tty,
            size: None,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn plans_and_their_argv() {
        let login = Plan::of(&request(None, true));
        assert_eq!(login.kind(), SessionKind::Shell);
        assert_eq!(login.argv("/bin/bash"), ["/bin/bash", "-l"]);

        let dashed = Plan::of(&request(Some("--rcfile=/tmp/x"), false));
        assert_eq!(dashed.kind(), SessionKind::Command);
        assert_eq!(
            dashed.argv("/bin/bash"),
            ["/bin/bash", "-c", "--", "--rcfile=/tmp/x"]
        );
        assert!(dashed.recorded());

        let sftp = Plan::of(&request(Some(transfer::SFTP_SERVER), false));
        assert_eq!(sftp.kind(), SessionKind::FileTransfer);
        assert_eq!(sftp.argv("/bin/bash"), [transfer::SFTP_SERVER]);
        assert_eq!(sftp.transfer_direction(), Some(TransferDirection::Both));
        assert!(!sftp.recorded());

        let cheat = Plan::of(&request(Some("scp -f x; id"), false));
        assert_eq!(cheat.kind(), SessionKind::Command);
        assert!(cheat.recorded());

        let with_tty = Plan::of(&request(Some(transfer::SFTP_SERVER), true));
        assert!(with_tty.recorded(), "a transfer never has a terminal");
    }
}
