//! File-transfer servers: the only sessions that go unrecorded.
//!
//! A session is a transfer only when its command is *exactly* one of the
//! server invocations that OpenSSH's scp and sftp clients and rsync send,
//! with nothing a shell would interpret, and without a terminal. It then
//! runs as a fixed argv of the image's own binary (absolute paths under
//! /usr, which the user cannot write), never through a shell, so the
//! command cannot be anything but the transfer it looks like. Everything
//! else — a near miss, a path with a shell metacharacter, a program of the
//! same name elsewhere — runs through the shell and is recorded.

use crate::audit::TransferDirection;

/// The sftp server: the path sshd's `Subsystem sftp` line names
/// (provisioning/sshd_config.template) and the image's own binary.
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
/// The image's scp (server mode: `-t` receives, `-f` sends).
pub const SCP: &str = "/usr/bin/scp";
/// The image's rsync (server mode).
pub const RSYNC: &str = "/usr/bin/rsync";

/// A transfer server to run: its argv (no shell) and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferServer {
    pub argv: Vec<String>,
    pub direction: TransferDirection,
}

/// The transfer server `command` asks for, if it is exactly one.
pub fn server_invocation(command: &str, tty: bool) -> Option<TransferServer> {
    if tty || command.len() > MAX_INVOCATION || !command.bytes().all(plain_byte) {
        return None;
    }
    let words: Vec<&str> = command.split(' ').collect();
    if words.iter().any(|w| w.is_empty()) {
        return None; // leading, trailing or doubled spaces: not a client's
    }
    match words[0] {
        SFTP_SERVER if words.len() == 1 => Some(TransferServer {
            argv: vec![SFTP_SERVER.to_owned()],
            direction: TransferDirection::Both,
        }),
        "scp" => scp(&words[1..]),
        "rsync" => rsync(&words[1..]),
        _ => None,
    }
}

/// The longest invocation taken for a transfer: a server and its flags
/// around one path of at most PATH_MAX (4096) bytes, longer than which no
/// path can be opened. Longer is a command, recorded like any other (so
/// that the unrecorded sessions' audit lines stay small: they count against
/// no recording budget).
pub const MAX_INVOCATION: usize = 4096 + 64;

/// Bytes that mean nothing to a shell (no quoting, expansion, globbing,
/// redirection, separators, comments or tilde), and a space.
fn plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" _./,:@+=%-".contains(&b)
}

/// `scp [-v] [-r] [-p] [-d] (-t|-f) [--] PATH`, as scp.c builds it (flags
/// each at most once, one path).
fn scp(args: &[&str]) -> Option<TransferServer> {
    let mut argv = vec![SCP.to_owned()];
    let mut seen = Vec::new();
    let mut rest = args.iter().copied();
    let direction = loop {
        let arg = rest.next()?;
        match arg {
            "-v" | "-r" | "-p" | "-d" if !seen.contains(&arg) => seen.push(arg),
            "-t" => break TransferDirection::Upload,
            "-f" => break TransferDirection::Download,
            _ => return None,
        }
        argv.push(arg.to_owned());
    };
    argv.push(
        if direction == TransferDirection::Upload {
            "-t"
        } else {
            "-f"
        }
        .to_owned(),
    );
    let mut path = rest.next()?;
    if path == "--" {
        argv.push("--".to_owned());
        path = rest.next()?;
    } else if path.starts_with('-') {
        return None;
    }
    if rest.next().is_some() {
        return None;
    }
    argv.push(path.to_owned());
    Some(TransferServer { argv, direction })
}

/// Long options an rsync client passes to its server (options.c,
/// `server_options()`) that only shape the transfer. Anything else — above
/// all `--daemon`, `--config`, `--rsync-path`, `--log-file` — is not a
/// plain transfer.
const RSYNC_LONG: &[&str] = &[
    "--delete",
    "--delete-before",
    "--delete-during",
    "--delete-after",
    "--delete-delay",
    "--delete-excluded",
    "--delete-missing-args",
    "--ignore-missing-args",
    "--force",
    "--partial",
    "--inplace",
    "--append",
    "--append-verify",
    "--size-only",
    "--ignore-times",
    "--existing",
    "--ignore-existing",
    "--remove-source-files",
    "--delay-updates",
    "--numeric-ids",
    "--safe-links",
    "--copy-unsafe-links",
    "--no-implied-dirs",
    "--fake-super",
    "--backup",
    "--mkpath",
    "--use-qsort",
];

/// Long options with a value (`--name=VALUE`, a plain value).
const RSYNC_LONG_VALUE: &[&str] = &[
    "--checksum-seed",
    "--compress-level",
    "--compress-choice",
    "--checksum-choice",
    "--bwlimit",
    "--max-delete",
    "--max-size",
    "--min-size",
    "--timeout",
    "--partial-dir",
    "--backup-dir",
    "--suffix",
    "--link-dest",
    "--copy-dest",
    "--compare-dest",
    "--log-format",
    "--out-format",
    "--modify-window",
    "--block-size",
    "--usermap",
    "--groupmap",
    "--chown",
];

/// `rsync --server [--sender] OPTIONS… . PATH…`.
fn rsync(args: &[&str]) -> Option<TransferServer> {
    let mut rest = args.iter().copied();
    if rest.next()? != "--server" {
        return None;
    }
    let mut argv = vec![RSYNC.to_owned(), "--server".to_owned()];
    let mut direction = TransferDirection::Upload;
    let mut options = 0;
    loop {
        let arg = rest.next()?;
        if arg == "." {
            argv.push(arg.to_owned());
            break;
        }
        let ok = match arg {
            "--sender" if options == 0 && direction == TransferDirection::Upload => {
                direction = TransferDirection::Download;
                true
            }
            // A cluster of short flags; after `e`, the protocol's
            // capability letters (`-logDtpre.iLsfxCIvu`).
            _ if !arg.starts_with("--") => {
                arg.len() > 1
                    && arg[1..]
                        .bytes()
                        .all(|b| b.is_ascii_alphabetic() || b == b'.')
            }
            _ => match arg.split_once('=') {
                None => RSYNC_LONG.contains(&arg),
                Some((name, value)) => RSYNC_LONG_VALUE.contains(&name) && !value.is_empty(),
            },
        };
        if !ok {
            return None;
        }
        if arg != "--sender" {
            options += 1;
        }
        argv.push(arg.to_owned());
    }
    let paths: Vec<&str> = rest.collect();
    if paths.is_empty() || paths.iter().any(|p| p.starts_with('-')) {
        return None;
    }
    argv.extend(paths.iter().map(|p| (*p).to_owned()));
    Some(TransferServer { argv, direction })
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferDirection::*;

    fn argv(command: &str) -> Option<Vec<String>> {
        server_invocation(command, false).map(|t| t.argv)
    }

    #[test]
    fn a_path_longer_than_any_file_can_have_is_not_a_transfer() {
        let path = "a/".repeat(2048);
        assert!(argv(&format!("scp -t {path}")).is_some(), "PATH_MAX fits");
        let longer = "B".repeat(60_000);
        assert!(argv(&format!("scp -t {longer}")).is_none());
        assert!(argv(&format!("scp -f {}", "x".repeat(MAX_INVOCATION))).is_none());
    }

    #[test]
    fn the_clients_exact_invocations_are_transfers() {
        let cases = [
            (SFTP_SERVER, vec![SFTP_SERVER], Both),
            (
                "scp -t scp-legacy.bin",
                vec![SCP, "-t", "scp-legacy.bin"],
                Upload,
            ),
            (
                "scp -f scp-legacy.bin",
                vec![SCP, "-f", "scp-legacy.bin"],
                Download,
            ),
            (
                "scp -r -d -t -- dir",
                vec![SCP, "-r", "-d", "-t", "--", "dir"],
                Upload,
            ),
            (
                "scp -v -p -f /home/a/x.txt",
                vec![SCP, "-v", "-p", "-f", "/home/a/x.txt"],
                Download,
            ),
            ("scp -t -- -odd", vec![SCP, "-t", "--", "-odd"], Upload),
            (
                "rsync --server -logDtpre.iLsfxCIvu . synced/",
                vec![RSYNC, "--server", "-logDtpre.iLsfxCIvu", ".", "synced/"],
                Upload,
            ),
            (
                "rsync --server --sender -logDtpre.iLsfxCIvu . synced/",
                vec![
                    RSYNC,
                    "--server",
                    "--sender",
                    "-logDtpre.iLsfxCIvu",
                    ".",
                    "synced/",
                ],
                Download,
            ),
            (
                "rsync --server -vlogDtpre.iLsfxCIvu --delete --partial-dir=.p . dst/",
                vec![
                    RSYNC,
                    "--server",
                    "-vlogDtpre.iLsfxCIvu",
                    "--delete",
                    "--partial-dir=.p",
                    ".",
                    "dst/",
                ],
                Upload,
            ),
        ];
        for (command, want, direction) in cases {
            let got = server_invocation(command, false).unwrap_or_else(|| panic!("{command}"));
            assert_eq!(got.argv, want, "{command}");
            assert_eq!(got.direction, direction, "{command}");
        }
    }

    #[test]
    fn anything_else_is_not_a_transfer() {
        for command in [
            // The review's examples.
            "scp -f </dev/null; id; echo hidden",
            "~/.x/sftp-server",
            "/home/alice/.x/sftp-server",
            "sftp-server",
            // Shell syntax anywhere.
            "scp -t x; id",
            "scp -t x && id",
            "scp -t x|id",
            "scp -t $(id)",
            "scp -t `id`",
            "scp -t 'x'",
            "scp -t \"x\"",
            "scp -t x\nid",
            "scp -t x\tid",
            "scp -t *",
            "scp -t x?",
            "scp -t ~/x",
            "scp -t x#",
            "scp -t x >/tmp/y",
            "scp -t {a,b}",
            "scp -t a\\ b",
            "scp -t $HOME",
            // Near misses of scp.
            "scp -t",
            "scp -t a b",
            "scp -t -x",
            "scp -S /bin/sh -t x",
            "scp -o ProxyCommand=x -t x",
            "scp -r -r -t x",
            "scp -tf x",
            "scp -x -t x",
            "scp x -t y",
            "scp  -t x",
            " scp -t x",
            "scp -t x ",
            "/usr/bin/scp -t x",
            "./scp -t x",
            "SCP -t x",
            // Near misses of sftp.
            "/usr/lib/openssh/sftp-server -e",
            "/usr/lib/openssh/sftp-server -d /",
            "/usr/lib/openssh/sftp-server/",
            "/usr/lib/openssh/../openssh/sftp-server",
            "/tmp/sftp-server",
            "internal-sftp",
            // rsync that is not a plain server.
            "rsync --server --daemon --config=/home/a/r.conf .",
            "rsync --daemon --server .",
            "rsync --server -logDtpre.iLsfxCIvu --log-file=/tmp/x . d/",
            "rsync --server -logDtpre.iLsfxCIvu --rsync-path=sh . d/",
            "rsync --server -logDtpre.iLsfxCIvu . ",
            "rsync --server -logDtpre.iLsfxCIvu .",
            "rsync --server -logDtpre.iLsfxCIvu . -d",
            "rsync --server -e3 . d/",
            "rsync -logDtpre.iLsfxCIvu . d/",
            "rsync --server --partial-dir= . d/",
            "rsync --server -logDtpre.iLsfxCIvu --sender . d/",
            "rsync --server --sender --sender . d/",
            "bash",
            "",
        ] {
            assert_eq!(argv(command), None, "{command:?}");
        }
    }

    #[test]
    fn a_terminal_makes_any_command_a_recorded_one() {
        assert!(server_invocation(SFTP_SERVER, true).is_none());
        assert!(server_invocation("scp -t x", true).is_none());
    }
}
