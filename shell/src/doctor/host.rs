//! Checks of the host's files and processes: the config, the firewall, the
//! bastion sshd, the login shell, the log directory and the audit chain.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Check, Services};
use crate::config::Config;

/// The config, loaded as the daemons load it.
pub fn config(path: &Path) -> (Check, Option<Config>) {
    match Config::load(path) {
        Ok(config) => (
            Check::ok("config", format!("{} is valid", path.display())),
            Some(config),
        ),
        Err(e) => (
            Check::fail(
                "config",
                e.to_string(),
                format!(
                    "fix what is named above in {0}, then run: bastionctl check --config {0}",
                    path.display()
                ),
            ),
            None,
        ),
    }
}

/// Every iptables rule of the metadata proxy's firewall, as
/// `metadata-proxy-iptables.sh check` (the rules' one source) sees them.
/// The script reads the installed settings (`/etc/bastion/iptables.env`:
/// bridge, gateway, ports) itself, so `check` and the fix's `apply` are
/// exactly what the boot-time restore runs.
pub fn firewall(services: &Services) -> Check {
    const NAME: &str = "firewall";
    let script = services.lib("metadata-proxy-iptables.sh");
    let fix = services.firewall_restore();
    match Command::new(&script).arg("check").output() {
        Ok(out) if out.status.success() => Check::ok(NAME, last_line(&out.stdout)),
        Ok(out) => Check::fail(NAME, first_line(&out.stderr), fix),
        Err(e) => Check::fail(
            NAME,
            format!("cannot run {}: {e}", script.display()),
            "provisioning/install.sh (installs it)",
        ),
    }
}

/// The bastion sshd: its config passes `sshd -t`, and it answers with an
/// SSH banner where the config says it listens.
pub fn sshd(path: &Path, services: &Services) -> Vec<Check> {
    let restart = services.restart("sshd");
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return vec![Check::fail(
                "sshd config",
                format!("cannot read {}: {e}", path.display()),
                "provisioning/install.sh (writes it)",
            )];
        }
    };
    // sshd -t needs its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let syntax = match Command::new("/usr/sbin/sshd")
        .args(["-t", "-f"])
        .arg(path)
        .output()
    {
        Ok(out) if out.status.success() => {
            Check::ok("sshd config", format!("{} passes sshd -t", path.display()))
        }
        Ok(out) => Check::fail(
            "sshd config",
            format!("sshd -t -f {}: {}", path.display(), first_line(&out.stderr)),
            "provisioning/install.sh (rewrites it from provisioning/sshd_config.template)",
        ),
        Err(e) => Check::fail(
            "sshd config",
            format!("cannot run /usr/sbin/sshd: {e}"),
            "apt-get install openssh-server",
        ),
    };
    let addr = listen_address(&text);
    let listening = match ssh_banner(addr) {
        Ok(banner) => Check::ok("sshd", format!("{banner} on {addr}")),
        Err(e) => Check::fail(
            "sshd",
            format!("nothing answers SSH on {addr}: {e}"),
            restart,
        ),
    };
    vec![syntax, listening]
}

/// Where the sshd config says it listens (first ListenAddress and Port);
/// a wildcard address is asked on loopback.
fn listen_address(text: &str) -> SocketAddr {
    let mut ip: IpAddr = Ipv4Addr::LOCALHOST.into();
    let mut port = 22;
    let mut seen = (false, false);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        if key.eq_ignore_ascii_case("port") && !seen.1 {
            port = value.parse().unwrap_or(22);
            seen.1 = true;
        } else if key.eq_ignore_ascii_case("listenaddress") && !seen.0 {
            if let Ok(a) = value.parse::<IpAddr>() {
                ip = a;
            } else if let Ok(a) = value.parse::<SocketAddr>() {
                ip = a.ip();
                port = a.port();
                seen.1 = true;
            }
            seen.0 = true;
        }
    }
    if ip.is_unspecified() {
        ip = Ipv4Addr::LOCALHOST.into();
    }
    SocketAddr::new(ip, port)
}

fn ssh_banner(addr: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut line = String::new();
    // An SSH banner line is shorter than 256 bytes.
    BufReader::new(std::io::Read::take(stream, 256)).read_line(&mut line)?;
    let line = line.trim_end();
    if line.starts_with("SSH-2.0-") {
        Ok(line.to_owned())
    } else {
        Err(std::io::Error::other(format!(
            "it answers, but not as an SSH server ({})",
            bastion_core::escape::escape(line)
        )))
    }
}

/// bastion-shell is a login shell sshd accepts.
pub fn login_shell() -> Check {
    const SHELL: &str = "/usr/local/bin/bastion-shell";
    let listed =
        std::fs::read_to_string("/etc/shells").is_ok_and(|s| s.lines().any(|l| l.trim() == SHELL));
    if listed && Path::new(SHELL).is_file() {
        Check::ok(
            "login shell",
            format!("{SHELL} is installed and in /etc/shells"),
        )
    } else {
        Check::fail(
            "login shell",
            format!("{SHELL} is missing or not in /etc/shells: users cannot log in"),
            "provisioning/install.sh",
        )
    }
}

/// The log directory and its sessions folder: root's alone (0700), the
/// audit log 0600.
pub fn log_dir(config: &Config) -> Vec<Check> {
    let dir = &config.recording.log_dir;
    let mut checks = vec![private(dir, 0o700, "log directory", true)];
    let sessions = dir.join("sessions");
    if sessions.exists() {
        checks.push(private(&sessions, 0o700, "recordings directory", true));
    }
    let audit = &config.recording.audit_log;
    if audit.exists() {
        checks.push(private(audit, 0o600, "audit log file", false));
    }
    checks
}

fn private(path: &Path, mode: u32, name: &str, dir: bool) -> Check {
    let fix = format!(
        "chown root:root {0} && chmod {mode:04o} {0}",
        path.display()
    );
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let fix = if dir {
                format!(
                    "install -d -o root -g root -m {mode:04o} {}",
                    path.display()
                )
            } else {
                fix
            };
            return Check::fail(name, format!("{}: {e}", path.display()), fix);
        }
    };
    let actual = meta.permissions().mode() & 0o7777;
    let kind_ok = if dir { meta.is_dir() } else { meta.is_file() };
    if !kind_ok {
        return Check::fail(
            name,
            format!(
                "{} is not a {}",
                path.display(),
                if dir { "directory" } else { "file" }
            ),
            format!("move it away; then {fix}"),
        );
    }
    if meta.uid() != 0 || meta.gid() != 0 || actual & 0o077 != 0 {
        return Check::fail(
            name,
            format!(
                "{} is {:04o} {}:{}, not {mode:04o} root:root: others could read or change the records",
                path.display(),
                actual,
                meta.uid(),
                meta.gid()
            ),
            fix,
        );
    }
    Check::ok(name, format!("{} {actual:04o} root:root", path.display()))
}

/// The audit trail's hash chain and the recordings' hashes.
pub fn audit_chain(config: &Config) -> Check {
    let path = &config.recording.audit_log;
    match crate::audit::verify(path) {
        Ok(report) if report.is_ok() => {
            Check::ok("audit chain", last_line(report.to_string().as_bytes()))
        }
        Ok(report) => Check::fail(
            "audit chain",
            report.to_string().replace('\n', "; "),
            format!(
                "tampering or loss: do not delete anything; tell the security team (details: bastionctl audit verify {})",
                path.display()
            ),
        ),
        Err(crate::audit::verify::VerifyError::Missing(p)) => Check::warn(
            "audit chain",
            format!(
                "no audit log at {} yet (no session and no credentials so far)",
                p.display()
            ),
            "none needed before the first login",
        ),
        Err(e) => Check::fail(
            "audit chain",
            e.to_string(),
            format!("bastionctl audit verify {}", path.display()),
        ),
    }
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_owned()
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_address_comes_from_the_sshd_config() {
        let text = "# c\nListenAddress 127.0.0.1\nPort 2222\nPidFile /run/x\n";
        assert_eq!(listen_address(text).to_string(), "127.0.0.1:2222");
        let text = "Port 2200\nListenAddress 0.0.0.0\n";
        assert_eq!(listen_address(text).to_string(), "127.0.0.1:2200");
        assert_eq!(listen_address("").to_string(), "127.0.0.1:22");
    }

    #[test]
    fn a_log_directory_others_can_read_fails_with_its_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let check = private(dir.path(), 0o700, "log directory", true);
        assert_eq!(check.status, super::super::Status::Fail, "{check:?}");
        assert!(check.detail.contains("0777"), "{check:?}");
        assert!(check.fix.unwrap().contains("chmod 0700"));
    }
}
