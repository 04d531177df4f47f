//! `bastionctl doctor`: checks a running bastion end to end, one line per
//! check (ok / warn / FAIL), each warn or FAIL with the command that fixes
//! it. The checks read and ask; they change nothing (the image's tools run
//! in a throw-away container with no network).
//!
//! To add a check: write it in the module of what it looks at ([`host`]:
//! files, config, sshd, firewall; [`engine`]: the Docker Engine and the
//! image; [`daemons`]: bastiond, the proxy, STS) returning [`Check`]s, and
//! call it from [`run`].

mod daemons;
mod engine;
mod host;

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where `provisioning/install.sh` puts its helper scripts
/// (metadata-proxy-iptables.sh, bastion-service).
pub const DEFAULT_LIB_DIR: &str = "/usr/local/lib/bastion";
/// The bastion sshd's generated config.
pub const DEFAULT_SSHD_CONFIG: &str = "/etc/bastion/sshd/sshd_config";

/// What `doctor` looks at.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub config: PathBuf,
    pub lib_dir: PathBuf,
    pub sshd_config: PathBuf,
}

/// One check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// The command (or edit) that fixes it; for warn and FAIL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
            fix,
        }
    }

    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail, None)
    }

    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Warn, detail, Some(fix.into()))
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Fail, detail, Some(fix.into()))
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The worst status of all checks.
    pub status: Status,
    pub checks: Vec<Check>,
}

impl Report {
    fn new(checks: Vec<Check>) -> Self {
        let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
        Self { status, checks }
    }

    /// Whether any check failed (the exit code is non-zero then).
    pub fn failed(&self) -> bool {
        self.status == Status::Fail
    }

    /// One line a check, its fix indented below.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "{tag} {}: {}\n",
                c.name,
                bastion_core::escape::escape(&c.detail)
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!(
                    "     fix: {}\n",
                    bastion_core::escape::escape(fix)
                ));
            }
        }
        let (fails, warns) = (self.count(Status::Fail), self.count(Status::Warn));
        out.push_str(&match (fails, warns) {
            (0, 0) => format!("all {} checks ok\n", self.checks.len()),
            _ => format!(
                "{fails} failed, {warns} warning(s), {} ok\n",
                self.count(Status::Ok)
            ),
        });
        out
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// How to (re)start one of the bastion's services on this host: through
/// systemd when it is PID 1, else through bastion-service's supervisor.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    systemd: bool,
    lib_dir: PathBuf,
}

impl Services {
    fn detect(lib_dir: &Path) -> Self {
        let systemd = Path::new("/run/systemd/system").is_dir()
            && std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd");
        Self {
            systemd,
            lib_dir: lib_dir.to_owned(),
        }
    }

    /// The command that restarts `service` (a name of bastion-service:
    /// bastiond, sshd, metadata-proxy, dockerd).
    pub(crate) fn restart(&self, service: &str) -> String {
        if self.systemd {
            let unit = match service {
                "dockerd" => "docker.service",
                "sshd" => "bastion-sshd.service",
                "metadata-proxy" => "bastion-metadata-proxy.service",
                other => return format!("systemctl restart {other}.service"),
            };
            format!("systemctl restart {unit}")
        } else {
            let verb = if service == "dockerd" {
                "start"
            } else {
                "restart"
            };
            format!(
                "{} {verb} {service}",
                self.lib_dir.join("bastion-service").display()
            )
        }
    }

    /// The command that puts the firewall back as installed.
    pub(crate) fn firewall_restore(&self) -> String {
        if self.systemd {
            "systemctl restart bastion-iptables.service".to_owned()
        } else {
            format!("{} apply", self.lib("metadata-proxy-iptables.sh").display())
        }
    }

    pub(crate) fn lib(&self, script: &str) -> PathBuf {
        self.lib_dir.join(script)
    }
}

/// Runs every check.
pub async fn run(options: &DoctorOptions) -> Report {
    let services = Services::detect(&options.lib_dir);
    let mut checks = Vec::new();
    let (config_check, config) = host::config(&options.config);
    checks.push(config_check);
    // The rest looks where the config (or, when it is broken, the
    // defaults) says.
    let config = config.unwrap_or_default();

    let docker = engine::connect(&config, &services).await;
    checks.push(docker.check.clone());
    if let Some(client) = &docker.client {
        checks.extend(engine::images(client, &config).await);
        checks.push(engine::network(client, &config, &services).await);
    }
    checks.push(host::firewall(&services));
    checks.push(daemons::bastiond(&config, &services).await);
    checks.extend(daemons::proxy(&config, &services).await);
    checks.extend(host::sshd(&options.sshd_config, &services));
    checks.push(host::login_shell());
    checks.extend(host::log_dir(&config));
    checks.push(host::audit_chain(&config));
    Report::new(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_takes_the_worst_status_and_prints_fixes() {
        let report = Report::new(vec![
            Check::ok("docker", "answers"),
            Check::warn("image tools: k9s", "absent", "install.sh --k9s FILE"),
        ]);
        assert_eq!(report.status, Status::Warn);
        assert!(!report.failed());
        let text = report.text();
        assert!(text.contains("ok   docker: answers\n"), "{text}");
        assert!(
            text.contains("warn image tools: k9s: absent\n     fix: install.sh --k9s FILE\n"),
            "{text}"
        );
        let report = Report::new(vec![Check::fail("x", "broken\x1b[2J", "fix it")]);
        assert!(report.failed());
        assert!(
            !report.text().contains('\x1b'),
            "terminal escapes are shown, not sent"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["checks"][0]["fix"], "fix it");
    }

    #[test]
    fn fixes_name_the_service_manager_in_use() {
        let plain = Services {
            systemd: false,
            lib_dir: PathBuf::from("/usr/local/lib/bastion"),
        };
        assert_eq!(
            plain.restart("bastiond"),
            "/usr/local/lib/bastion/bastion-service restart bastiond"
        );
        assert_eq!(
            plain.restart("dockerd"),
            "/usr/local/lib/bastion/bastion-service start dockerd"
        );
        let systemd = Services {
            systemd: true,
            ..plain
        };
        assert_eq!(
            systemd.restart("metadata-proxy"),
            "systemctl restart bastion-metadata-proxy.service"
        );
    }
}
