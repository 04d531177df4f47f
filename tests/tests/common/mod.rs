//! Shared helpers of the end-to-end tests: real users logging in through the
//! bastion's real sshd (127.0.0.1:2222) into containers of the real Docker
//! Engine. `./test.sh` installs and starts all of it first; a test that finds
//! a part missing fails and says what to run.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SSH_PORT: &str = "2222";
pub const SSH_HOST: &str = "127.0.0.1";

/// The repository root (tests/ is one level down).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Fails the test with a hint unless the bastion's parts are up.
pub fn require_bastion() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        assert!(
            Path::new("/run/bastion/bastiond.sock").exists(),
            "bastiond is not running: run `sudo ./test.sh` (it installs and starts everything)"
        );
        assert!(
            std::net::TcpStream::connect((SSH_HOST, 2222)).is_ok(),
            "the bastion sshd is not listening on {SSH_HOST}:{SSH_PORT}: run `sudo ./test.sh`"
        );
        let docker = Command::new("docker").arg("info").output();
        assert!(
            docker.is_ok_and(|o| o.status.success()),
            "the Docker Engine does not answer: run `sudo ./test.sh`"
        );
    });
}

/// A bastion user with an SSH key, created once per test process.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub key: PathBuf,
}

fn keys_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bastion-e2e-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Creates (or updates) user `name` with a fresh key.
pub fn user(name: &str) -> User {
    user_in(name, &[])
}

/// Like [`user`], with extra groups (`--no-default-group` is passed through).
pub fn user_in(name: &str, extra: &[&str]) -> User {
    require_bastion();
    static MADE: OnceLock<Mutex<std::collections::HashMap<String, User>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    let mut made = made.lock().unwrap();
    if let Some(u) = made.get(name) {
        return u.clone();
    }
    let key = keys_dir().join(name);
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key),
    );
    let mut add = Command::new(repo().join("provisioning/add-user.sh"));
    add.arg(name).arg("--key").arg(key.with_extension("pub"));
    for arg in extra {
        if arg.starts_with("--") {
            add.arg(arg);
        } else {
            add.args(["--group", arg]);
        }
    }
    run_ok(&mut add);
    let u = User {
        name: name.to_owned(),
        key,
    };
    made.insert(name.to_owned(), u.clone());
    u
}

/// Runs `cmd`, panicking with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Options every ssh/scp/sftp call of the tests uses.
pub fn ssh_options(u: &User) -> Vec<String> {
    [
        "-i",
        u.key.to_str().unwrap(),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `ssh -p 2222 [extra…] user@127.0.0.1 [remote…]`.
pub fn ssh(u: &User, extra: &[&str], remote: &[&str]) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(ssh_options(u))
        .args(["-p", SSH_PORT])
        .args(extra)
        .arg(format!("{}@{SSH_HOST}", u.name))
        .args(remote);
    cmd
}

/// Runs a command over ssh without a TTY and returns its output.
pub fn ssh_run(u: &User, remote: &str) -> Output {
    ssh(u, &["-T"], &[remote])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Like [`ssh_run`] but requires success and returns stdout as text.
pub fn ssh_text(u: &User, remote: &str) -> String {
    let out = ssh_run(u, remote);
    assert!(
        out.status.success(),
        "ssh {} {remote:?} failed ({}): {}",
        u.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `remote` with `input` on stdin.
pub fn ssh_with_input(u: &User, remote: &str, input: &[u8]) -> Output {
    let mut child = ssh(u, &["-T"], &[remote])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// `docker ARGS…` on the host, as text; panics on failure.
pub fn docker(args: &[&str]) -> String {
    String::from_utf8(run_ok(Command::new("docker").args(args)).stdout)
        .unwrap()
        .trim()
        .to_owned()
}

/// `docker ARGS…`, returning whether it succeeded.
pub fn docker_status(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The host's address on the `bastion0` bridge, where the containers reach
/// the metadata proxy and the demo's STS.
pub fn bridge_gateway() -> String {
    docker(&[
        "network",
        "inspect",
        "bastion0",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ])
    .trim()
    .to_owned()
}

/// The container name of a user.
pub fn container_of(u: &User) -> String {
    format!("bastion-{}", u.name)
}

/// Removes a user's container (to test first logins).
pub fn remove_container(u: &User) {
    let _ = Command::new("docker")
        .args(["rm", "-f", &container_of(u)])
        .output();
}

/// Waits until `check` holds, for at most `limit` (a bound on waiting, not a
/// speed assertion). Returns whether it held.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An interactive SSH session in a real terminal (tmux), typed into and read
/// off the screen as a person would.
pub struct Terminal {
    socket: String,
}

impl Terminal {
    /// Opens `ssh -tt` for `u` in a `cols`x`rows` terminal.
    pub fn open(u: &User, cols: u16, rows: u16) -> Terminal {
        Self::open_with(u, cols, rows, None)
    }

    /// Opens `ssh -tt … COMMAND` for `u` in a `cols`x`rows` terminal.
    pub fn open_command(u: &User, cols: u16, rows: u16, command: &str) -> Terminal {
        Self::open_with(u, cols, rows, Some(command))
    }

    fn open_with(u: &User, cols: u16, rows: u16, command: Option<&str>) -> Terminal {
        let socket = format!("bastion-e2e-{}-{}", u.name, std::process::id());
        let mut ssh_cmd = vec!["ssh".to_owned()];
        ssh_cmd.extend(ssh_options(u));
        ssh_cmd.extend(["-tt", "-p", SSH_PORT].map(str::to_owned));
        ssh_cmd.push(format!("{}@{SSH_HOST}", u.name));
        ssh_cmd.extend(command.map(str::to_owned));
        let line = ssh_cmd
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let script = format!("{line}; echo SSH-EXIT=$?; sleep 600");
        run_ok(Command::new("tmux").args([
            "-L",
            &socket,
            "new-session",
            "-d",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            "bash",
            "-c",
            &script,
        ]));
        Terminal { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = run_ok(Command::new("tmux").arg("-L").arg(&self.socket).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` followed by Enter.
    pub fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", text]);
        self.tmux(&["send-keys", "-t", "0", "Enter"]);
    }

    /// Sends a key such as `C-c` or `C-d`.
    pub fn key(&self, key: &str) {
        self.tmux(&["send-keys", "-t", "0", key]);
    }

    /// The visible screen.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "0", "-S", "-200"])
    }

    /// The visible screen with its colour escapes.
    pub fn screen_with_escapes(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-e", "-t", "0", "-S", "-200"])
    }

    /// Resizes the terminal.
    pub fn resize(&self, cols: u16, rows: u16) {
        self.tmux(&[
            "resize-window",
            "-t",
            "0",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }

    /// Waits until the screen contains `text`; panics with the screen if not.
    pub fn wait_for(&self, text: &str) -> String {
        let mut screen = String::new();
        let found = eventually(Duration::from_secs(30), || {
            screen = self.screen();
            screen.contains(text)
        });
        assert!(found, "screen never showed {text:?}:\n{screen}");
        screen
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The e2e tests' own section of /etc/bastion/bastion.toml: a role for the
/// `bastion-e2e` group and a per-user image for the image-change test.
/// Appended once, between markers; bastiond reloads the file on change.
pub const E2E_CONFIG: &str = r#"
# >>> bastion e2e tests (added by tests/tests/common; safe to remove)
[bastiond.groups.bastion-e2e]
role = "e2e-role"

[bastiond.groups.bastion-e2e-other]
role = "e2e-other-role"

[bastiond.users.bt-img]
image = "bastion/e2e-alt:current"

[bastiond.users.bt-noimage]
image = "bastion/e2e-does-not-exist:1"

[bastiond.users.bt-limits]
limits = { pids = 40 }

[bastiond.users.bt-disk]
limits = { home = "64MiB", tmp = "32MiB", recordings = "2MiB" }
# <<< bastion e2e tests
"#;

pub const CONFIG_PATH: &str = "/etc/bastion/bastion.toml";

/// Makes sure the e2e section is in the config.
pub fn ensure_e2e_config() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let text = std::fs::read_to_string(CONFIG_PATH).unwrap();
        // Drop an older version of the block, then add the current one.
        let kept = match (
            text.find("\n# >>> bastion e2e tests"),
            text.find("# <<< bastion e2e tests\n"),
        ) {
            (Some(start), Some(end)) if end > start => {
                format!(
                    "{}{}",
                    &text[..start],
                    &text[end + "# <<< bastion e2e tests\n".len()..]
                )
            }
            _ => text.clone(),
        };
        let wanted = format!("{}\n{E2E_CONFIG}", kept.trim_end());
        if wanted != text {
            write_config(&wanted);
        }
    });
}

/// Replaces the config file atomically (root-owned, 0644).
pub fn write_config(text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = format!("{CONFIG_PATH}.e2e-tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, CONFIG_PATH).unwrap();
}

/// A user in the `bastion-e2e` group (so they have the e2e role).
pub fn e2e_user(name: &str) -> User {
    ensure_e2e_config();
    user_in(name, &["bastion-e2e"])
}

/// `provisioning/bastion-service ACTION SERVICE`.
pub fn service(action: &str, name: &str) {
    run_ok(Command::new(repo().join("provisioning/bastion-service")).args([action, name]));
}

/// Starts `remote` over ssh (no TTY) with stdout and stderr piped.
pub fn spawn_remote(u: &User, remote: &str, stdin: Stdio) -> std::process::Child {
    ssh(u, &["-T"], &[remote])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The first line `child` prints on stdout (waits for it).
pub fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    line.trim_end().to_owned()
}

/// Starts `echo MARKER; exec sleep 1000` over ssh and returns once the
/// session printed its marker (so it is live in its container).
pub fn live_marked_session(u: &User, marker: &str) -> std::process::Child {
    let mut child = spawn_remote(u, &format!("echo {marker}; exec sleep 1000"), Stdio::null());
    assert_eq!(first_line(&mut child), marker);
    child
}

/// The audit log's events, parsed.
pub fn audit_events() -> Vec<serde_json::Value> {
    std::fs::read_to_string("/var/log/bastion/audit.jsonl")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The latest `session.start` whose command contains `marker`, and its
/// `session.end` if written.
pub fn session_by_marker(marker: &str) -> (serde_json::Value, Option<serde_json::Value>) {
    let events = audit_events();
    let start = events
        .iter()
        .rev()
        .find(|e| {
            e["event"] == "session.start"
                && e["command"].as_str().is_some_and(|c| c.contains(marker))
        })
        .unwrap_or_else(|| panic!("no session.start with {marker}"))
        .clone();
    let end = events
        .iter()
        .find(|e| e["event"] == "session.end" && e["session_id"] == start["session_id"])
        .cloned();
    (start, end)
}

/// A command that forks children sleeping `hold` seconds until the
/// container's pids limit refuses (no retries, unlike bash), prints how many
/// it started, then sleeps `linger` seconds itself.
pub fn fork_until_refused(hold: u32, linger: u32) -> String {
    format!(
        r#"python3 -c '
import os, time
n = 0
try:
    while n < 2000:
        if os.fork() == 0:
            time.sleep({hold})
            os._exit(0)
        n += 1
except OSError:
    pass
print(n, flush=True)
time.sleep({linger})
'"#
    )
}
