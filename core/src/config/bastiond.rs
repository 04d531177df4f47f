//! `[bastiond]`: the session broker's settings, with per-group and per-user
//! overrides of the image, the IAM role and the container limits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::problems::{Checks, KeyPath};

/// `[bastiond]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BastiondConfig {
    /// Unix socket the login shells connect to.
    pub socket: PathBuf,
    /// Root-only unix socket answering one JSON health line per connection
    /// (`bastionctl doctor`, monitoring).
    pub health_socket: PathBuf,
    /// Docker Engine endpoint; the local unix socket when unset.
    pub docker_host: Option<String>,
    /// Image of the users' containers, unless a group or user says otherwise.
    pub image: String,
    /// The login shell inside the container.
    pub shell: String,
    /// IAM role (name or ARN) for users whose group/user section sets none.
    pub role: Option<String>,
    /// Host directory holding one persistent home per user.
    pub home_root: PathBuf,
    /// bastiond's own state: each user's account files (mounted read-only
    /// into their container) under `accounts/`, and the file systems of
    /// size-limited homes under `home-images/`.
    pub state_dir: PathBuf,
    /// Host directory of kubeconfigs, mounted read-only into every container
    /// (skipped when it does not exist).
    pub kubeconfig_dir: PathBuf,
    /// Users allowed in, by name. A user is allowed when named here or in a
    /// group of `allow_groups`.
    pub allow_users: Vec<String>,
    /// Groups whose members are allowed in.
    pub allow_groups: Vec<String>,
    /// Stop a container that has had no live session for this long.
    #[serde(with = "humantime_serde")]
    pub idle_stop_after: Duration,
    /// Remove a container that has been stopped for this long (the home stays).
    #[serde(with = "humantime_serde")]
    pub remove_after: Duration,
    /// Extra environment for every container (e.g. `AWS_ENDPOINT_URL_STS`).
    pub env: BTreeMap<String, String>,
    /// How long a connection to the socket may take to send its whole
    /// request (the shell sends it at once); then it is closed.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections of one uid that may wait for their request at once;
    /// more are refused (and logged).
    pub pending_per_uid: usize,
    /// Connections of all uids that may wait for their request at once.
    pub pending_total: usize,
    pub network: NetworkConfig,
    pub limits: Limits,
    /// Overrides per group; when a user is in several, they apply in group
    /// name order (later wins), and user overrides win over all of them.
    pub groups: BTreeMap<String, Overrides>,
    /// Overrides per user name.
    pub users: BTreeMap<String, Overrides>,
}

impl Default for BastiondConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/bastion/bastiond.sock"),
            health_socket: PathBuf::from("/run/bastion/bastiond-health.sock"),
            docker_host: None,
            image: "bastion/user:latest".to_owned(),
            shell: "/bin/bash".to_owned(),
            role: None,
            home_root: PathBuf::from("/var/lib/bastion/homes"),
            state_dir: PathBuf::from("/var/lib/bastion"),
            kubeconfig_dir: PathBuf::from("/etc/bastion/kubeconfigs"),
            allow_users: Vec::new(),
            allow_groups: vec!["bastion-users".to_owned()],
            idle_stop_after: Duration::from_secs(30 * 60),
            remove_after: Duration::from_secs(7 * 24 * 3600),
            env: BTreeMap::new(),
            request_timeout: Duration::from_secs(5),
            pending_per_uid: 8,
            pending_total: 256,
            network: NetworkConfig::default(),
            limits: Limits::default(),
            groups: BTreeMap::new(),
            users: BTreeMap::new(),
        }
    }
}

/// `[bastiond.network]`: the bastion's networks. Each user's container is
/// alone on a bridge network of its own (`bastion-net-<user>`, a /29 of
/// `users_subnet`), so nothing on the network (names, addresses, the
/// Engine's DNS, ARP) reveals another user. The `name` network holds no
/// container: its gateway is the host address where the metadata proxy
/// (and the demo's STS server) listen for every user network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Docker network name, also the Linux bridge name, of the gateway.
    pub name: String,
    /// IPv4 subnet of that bridge; the gateway is its first address.
    pub subnet: Ipv4Net,
    /// Where the users' own networks are carved from, a /29 each.
    pub users_subnet: Ipv4Net,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            name: "bastion0".to_owned(),
            subnet: "172.30.0.0/24".parse().expect("valid default subnet"),
            users_subnet: "172.31.0.0/16".parse().expect("valid default subnet"),
        }
    }
}

/// Prefix length of each user's own network: a gateway, the container and
/// room to spare.
pub const USER_NETWORK_PREFIX: u8 = 29;

/// Linux bridge names of users' networks start with this (then the uid),
/// so a firewall rule can name them all (`bst+`).
pub const USER_BRIDGE_PREFIX: &str = "bst";

impl NetworkConfig {
    /// The bridge's own address: where host services for containers listen.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        self.subnet
            .hosts()
            .next()
            .unwrap_or_else(|| self.subnet.network())
    }
}

/// `[bastiond.limits]`: resource limits of one user's container.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most processes and threads at once.
    pub pids: i64,
    /// Memory limit, e.g. `"2GiB"`.
    pub memory: ByteSize,
    /// CPUs, e.g. `1.5`.
    pub cpus: f64,
    /// Size of the user's home: a file system of its own (an ext4 image,
    /// loop-mounted), so a full home fills only itself. `0`: a plain
    /// directory on the host's file system, unlimited.
    pub home: ByteSize,
    /// Size of each of `/tmp` and `/var/tmp` (tmpfs, counted in the
    /// memory limit). The rest of the container's file system is
    /// read-only: it has no other writable space.
    pub tmp: ByteSize,
    /// Space the user's session recordings may take in all (`0`: no
    /// limit); past it their (recorded) logins are refused until old
    /// recordings are pruned.
    pub recordings: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pids: 512,
            memory: ByteSize::gib(2),
            cpus: 2.0,
            home: ByteSize::gib(10),
            tmp: ByteSize::mib(512),
            recordings: ByteSize::gib(2),
        }
    }
}

/// Settings a `[bastiond.groups.NAME]` or `[bastiond.users.NAME]` may change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overrides {
    pub image: Option<String>,
    pub role: Option<String>,
    pub limits: Option<PartialLimits>,
}

/// Limits where each field may be left to the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartialLimits {
    pub pids: Option<i64>,
    pub memory: Option<ByteSize>,
    pub cpus: Option<f64>,
    pub home: Option<ByteSize>,
    pub tmp: Option<ByteSize>,
    pub recordings: Option<ByteSize>,
}

/// What applies to one user once defaults, groups and user are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSettings {
    pub image: String,
    pub role: Option<String>,
    pub limits: Limits,
}

/// Why a user gets no session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("root (uid 0) may not log in through the bastion")]
    Root,
    #[error(
        "user {user} is not allowed on this bastion: ask an admin to add them to allow_users or to a group in allow_groups"
    )]
    NotAllowed { user: String },
}

impl BastiondConfig {
    /// Whether `user` (uid `uid`, member of `groups`) may log in, and with
    /// which settings. The uid comes from SO_PEERCRED, never from a request.
    pub fn resolve(
        &self,
        user: &str,
        uid: u32,
        groups: &[String],
    ) -> Result<UserSettings, ResolveError> {
        if uid == 0 {
            return Err(ResolveError::Root);
        }
        let allowed = self.allow_users.iter().any(|u| u == user)
            || groups.iter().any(|g| self.allow_groups.contains(g));
        if !allowed {
            return Err(ResolveError::NotAllowed {
                user: user.to_owned(),
            });
        }
        let mut settings = UserSettings {
            image: self.image.clone(),
            role: self.role.clone(),
            limits: self.limits,
        };
        let group_overrides = self
            .groups
            .iter()
            .filter(|(name, _)| groups.contains(name))
            .map(|(_, o)| o);
        for overrides in group_overrides.chain(self.users.get(user)) {
            overrides.apply(&mut settings);
        }
        Ok(settings)
    }

    pub(super) fn check(&self, at: &KeyPath, checks: &mut Checks) {
        if self.image.trim().is_empty() {
            checks.bad(at.key("image"), "must name an image");
        }
        if !self.shell.starts_with('/') {
            checks.bad(at.key("shell"), "must be an absolute path inside the image");
        }
        if !self.health_socket.is_absolute() || self.health_socket == self.socket {
            checks.bad(
                at.key("health_socket"),
                "must be an absolute path other than socket",
            );
        }
        if !self.home_root.is_absolute() {
            checks.bad(at.key("home_root"), "must be an absolute path");
        }
        if !self.state_dir.is_absolute() {
            checks.bad(at.key("state_dir"), "must be an absolute path");
        }
        if self.remove_after < self.idle_stop_after {
            checks.bad(
                at.key("remove_after"),
                "must not be shorter than idle_stop_after",
            );
        }
        if self.request_timeout < Duration::from_millis(100)
            || self.request_timeout > Duration::from_secs(60)
        {
            checks.bad(at.key("request_timeout"), "must be between 100ms and 60s");
        }
        if self.pending_per_uid == 0 || self.pending_per_uid > self.pending_total {
            checks.bad(
                at.key("pending_per_uid"),
                "must be at least 1 and at most pending_total",
            );
        }
        if self.network.name.is_empty() || self.network.name.len() > 15 {
            checks.bad(
                at.key("network").key("name"),
                "must be 1 to 15 characters (it is also the Linux bridge name)",
            );
        }
        if self.network.subnet.prefix_len() > 29 {
            checks.bad(at.key("network").key("subnet"), "must be a /29 or larger");
        }
        if self.network.users_subnet.prefix_len() > USER_NETWORK_PREFIX - 1 {
            checks.bad(
                at.key("network").key("users_subnet"),
                format!("must hold at least two /{USER_NETWORK_PREFIX} networks (a /28 or larger)"),
            );
        }
        if self
            .network
            .users_subnet
            .contains(&self.network.subnet.network())
            || self
                .network
                .subnet
                .contains(&self.network.users_subnet.network())
        {
            checks.bad(
                at.key("network").key("users_subnet"),
                "must not overlap network.subnet",
            );
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') {
                checks.bad(
                    at.key("env").key(name.clone()),
                    "is not a valid variable name",
                );
            }
        }
        check_limits(&at.key("limits"), &self.limits.into(), checks);
        for (kind, table) in [("groups", &self.groups), ("users", &self.users)] {
            for (name, overrides) in table {
                if let Some(limits) = &overrides.limits {
                    check_limits(
                        &at.key(kind).key(name.clone()).key("limits"),
                        limits,
                        checks,
                    );
                }
                if overrides
                    .image
                    .as_deref()
                    .is_some_and(|i| i.trim().is_empty())
                {
                    checks.bad(
                        at.key(kind).key(name.clone()).key("image"),
                        "must name an image",
                    );
                }
            }
        }
    }
}

impl From<Limits> for PartialLimits {
    fn from(l: Limits) -> Self {
        Self {
            pids: Some(l.pids),
            memory: Some(l.memory),
            cpus: Some(l.cpus),
            home: Some(l.home),
            tmp: Some(l.tmp),
            recordings: Some(l.recordings),
        }
    }
}

impl PartialLimits {
    /// Reports each limit out of range, at `at`'s keys (also used for the
    /// access file's users).
    pub fn check(&self, at: &KeyPath, checks: &mut Checks) {
        check_limits(at, self, checks);
    }
}

fn check_limits(at: &KeyPath, limits: &PartialLimits, checks: &mut Checks) {
    if limits.pids.is_some_and(|p| p < 16) {
        checks.bad(at.key("pids"), "must be at least 16");
    }
    if limits.memory.is_some_and(|m| m < ByteSize::mib(64)) {
        checks.bad(at.key("memory"), "must be at least 64MiB");
    }
    if limits.cpus.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        checks.bad(at.key("cpus"), "must be a positive number");
    }
    if limits
        .home
        .is_some_and(|h| h.as_u64() != 0 && h < ByteSize::mib(64))
    {
        checks.bad(at.key("home"), "must be 0 (no limit) or at least 64MiB");
    }
    if limits.tmp.is_some_and(|t| t < ByteSize::mib(16)) {
        checks.bad(at.key("tmp"), "must be at least 16MiB");
    }
    if limits
        .recordings
        .is_some_and(|r| r.as_u64() != 0 && r < ByteSize::mib(1))
    {
        checks.bad(
            at.key("recordings"),
            "must be 0 (no limit) or at least 1MiB",
        );
    }
}

impl Overrides {
    fn apply(&self, settings: &mut UserSettings) {
        if let Some(image) = &self.image {
            settings.image.clone_from(image);
        }
        if let Some(role) = &self.role {
            settings.role = Some(role.clone());
        }
        if let Some(limits) = &self.limits {
            limits.apply_to(&mut settings.limits);
        }
    }
}

impl PartialLimits {
    /// `limits` with each limit set here replaced.
    pub fn apply_to(&self, limits: &mut Limits) {
        limits.pids = self.pids.unwrap_or(limits.pids);
        limits.memory = self.memory.unwrap_or(limits.memory);
        limits.cpus = self.cpus.unwrap_or(limits.cpus);
        limits.home = self.home.unwrap_or(limits.home);
        limits.tmp = self.tmp.unwrap_or(limits.tmp);
        limits.recordings = self.recordings.unwrap_or(limits.recordings);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const TEXT: &str = r#"
[bastiond]
image = "base:1"
role = "default-role"
allow_groups = ["ops", "dev"]
allow_users = ["carol"]

[bastiond.limits]
pids = 100

[bastiond.groups.dev]
image = "dev:1"
limits = { memory = "1GiB" }

[bastiond.groups.ops]
role = "ops-role"

[bastiond.users.alice]
role = "alice-role"
"#;

    #[test]
    fn user_overrides_win_over_groups_and_defaults() {
        let config = Config::parse(TEXT).unwrap().bastiond;
        let s = config
            .resolve("alice", 1000, &groups(&["dev", "ops"]))
            .unwrap();
        assert_eq!(s.image, "dev:1");
        assert_eq!(s.role.as_deref(), Some("alice-role"));
        assert_eq!(s.limits.pids, 100);
        assert_eq!(s.limits.memory, ByteSize::gib(1));
        let s = config.resolve("bob", 1001, &groups(&["ops"])).unwrap();
        assert_eq!(s.image, "base:1");
        assert_eq!(s.role.as_deref(), Some("ops-role"));
        assert_eq!(s.limits.memory, ByteSize::gib(2));
    }

    #[test]
    fn only_allowed_users_and_never_root() {
        let config = Config::parse(TEXT).unwrap().bastiond;
        assert!(config.resolve("carol", 1002, &[]).is_ok());
        assert_eq!(
            config.resolve("eve", 1003, &groups(&["staff"])),
            Err(ResolveError::NotAllowed { user: "eve".into() })
        );
        assert_eq!(
            config.resolve("root", 0, &groups(&["ops"])),
            Err(ResolveError::Root)
        );
        assert_eq!(
            config.resolve("carol", 0, &[]),
            Err(ResolveError::Root),
            "uid 0 under any name"
        );
    }

    #[test]
    fn limits_and_durations_parse_from_human_units() {
        let config = Config::parse(
            "[bastiond]\nidle_stop_after = \"10m\"\nremove_after = \"2days\"\n[bastiond.limits]\nmemory = \"512MiB\"\ncpus = 0.5\n",
        )
        .unwrap()
        .bastiond;
        assert_eq!(config.idle_stop_after, Duration::from_secs(600));
        assert_eq!(config.remove_after, Duration::from_secs(2 * 86400));
        assert_eq!(config.limits.memory, ByteSize::mib(512));
    }

    #[test]
    fn gateway_is_the_first_host_address() {
        assert_eq!(
            NetworkConfig::default().gateway(),
            "172.30.0.1".parse::<std::net::Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn bad_group_limits_name_their_key() {
        let text = "[bastiond.groups.dev]\nlimits = { pids = 1 }\n";
        let problems = Config::parse(text).unwrap_err();
        assert_eq!(
            (problems[0].key.as_deref(), problems[0].line),
            (Some("bastiond.groups.dev.limits.pids"), Some(2))
        );
    }
}
