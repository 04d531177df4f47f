//! What a user's container is made of: the Docker contract's labels, the
//! mounts, the limits and the hardening, and a hash of it all that decides
//! when a container is recreated.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use sha2::{Digest, Sha256};

use super::accounts::AccountFiles;
use crate::broker::identity::Identity;
use crate::broker::user_network;
use crate::config::{BastiondConfig, UserSettings};
use crate::contract::{
    CREDENTIALS_FULL_URI, KUBECONFIG_DIR_IN_CONTAINER, TOKEN_PATH_IN_CONTAINER, labels,
};

/// The uid:gid of a container's own processes (init, `sleep`): nobody.
pub const CONTAINER_INIT_USER: &str = "65534:65534";

/// Paths hidden inside containers: the Engine's own defaults (this list
/// replaces them), and what tells of the host's block devices: every
/// user's home is a loop device, whose backing file, I/O counters and
/// count would name the other users and show when they work.
pub const MASKED_PATHS: &[&str] = &[
    // Docker's defaults.
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    // The host's block devices.
    "/proc/diskstats",
    "/proc/partitions",
    "/sys/block",
    "/sys/class/block",
    "/sys/dev/block",
    "/sys/devices/virtual/block",
    "/sys/fs/ext4",
    // Host-wide counters and tables that tell of other users' sessions:
    // terminals open on the host, file locks (with their device numbers:
    // each home is a loop device), device events (a home mounted at a
    // user's first login).
    "/proc/sys/kernel/pty",
    "/proc/locks",
    "/proc/key-users",
    "/sys/kernel/uevent_seqnum",
];

/// Which of a user's two containers. File transfers (the unrecorded
/// sessions) run apart from everything else the user runs, in a container
/// of their own with the same home: in another pid namespace, no session of
/// the user's can see, signal, trace or take over a transfer server (or its
/// pipes) to turn its unrecorded channel into a shell. It has no network,
/// no credentials and no kubeconfigs: the transfer servers need none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// `bastion-<user>`: shells and commands.
    Shell,
    /// `bastion-<user>-files`: scp, sftp and rsync servers only.
    Transfers,
}

impl ContainerKind {
    /// The container name of `user`'s container of this kind.
    pub fn name_of(self, user: &str) -> String {
        match self {
            Self::Shell => format!("bastion-{user}"),
            Self::Transfers => format!("bastion-{user}-files"),
        }
    }
}

/// What a container is built from, before the per-container secret.
pub(super) struct Spec {
    pub(super) body: ContainerCreateBody,
    pub(super) hash: String,
}

/// The container's create body and a hash of it (which decides recreation).
pub(super) fn build_spec(
    config: &BastiondConfig,
    who: &Identity,
    settings: &UserSettings,
    image_id: &str,
    kind: ContainerKind,
) -> Spec {
    let shell = kind == ContainerKind::Shell;
    let home = format!("/home/{}", who.name);
    let mut env = vec![
        format!("HOME={home}"),
        format!("USER={}", who.name),
        format!("LOGNAME={}", who.name),
        format!("SHELL={}", config.shell),
    ];
    let mut labels = HashMap::from([
        (labels::USER.to_owned(), who.name.clone()),
        (labels::UID.to_owned(), who.uid.to_string()),
    ]);
    let files = AccountFiles::of(&config.state_dir, &who.name);
    let mut binds = vec![format!(
        "{}:{home}:rw",
        config.home_root.join(&who.name).display()
    )];
    let network = if shell {
        let network = user_network::name_of(&who.name);
        labels.insert(labels::NETWORK.to_owned(), network.clone());
        env.push(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI={CREDENTIALS_FULL_URI}"
        ));
        env.push(format!(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={TOKEN_PATH_IN_CONTAINER}"
        ));
        // The user's own kubeconfig first, then the clusters of the access
        // file (crate::access::kubeconfig; absent files are skipped).
        env.push(format!(
            "KUBECONFIG={}",
            crate::access::kubeconfig::kubeconfig_env(&home)
        ));
        binds.extend(files.binds());
        network
    } else {
        labels.insert(labels::PURPOSE.to_owned(), "transfers".to_owned());
        binds.extend(files.account_binds());
        "none".to_owned()
    };
    if let Some(role) = settings.role.as_ref().filter(|_| shell) {
        env.push(format!("IAM_ROLE={role}"));
        labels.insert(labels::ROLE.to_owned(), role.clone());
    }
    let kube = shell && config.kubeconfig_dir.is_dir();
    if kube {
        env.push(format!("KUBECONFIG_DIR={KUBECONFIG_DIR_IN_CONTAINER}"));
    }
    if shell {
        env.extend(config.env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    if kube {
        binds.push(format!(
            "{}:{KUBECONFIG_DIR_IN_CONTAINER}:ro",
            config.kubeconfig_dir.display()
        ));
    }
    let limits = settings.limits;
    let memory = i64::try_from(limits.memory.as_u64()).unwrap_or(i64::MAX);
    // The only writable places besides the home: in memory, sized.
    let tmp = format!(
        "rw,nosuid,nodev,size={}k,mode=1777",
        limits.tmp.as_u64() / 1024
    );
    labels.insert(
        labels::HOME_SIZE.to_owned(),
        limits.home.as_u64().to_string(),
    );
    let body = ContainerCreateBody {
        image: Some(image_id.to_owned()),
        hostname: Some(who.name.clone()),
        // The container's own processes (init, `sleep`) run as another
        // uid than the user's sessions (each exec names the user's), so
        // the user can neither signal nor ptrace them into starting
        // something outside every session (session_cgroup.rs).
        user: Some(CONTAINER_INIT_USER.into()),
        env: Some(env),
        cmd: Some(vec!["sleep".into(), "infinity".into()]),
        working_dir: Some("/".into()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            init: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(limits.pids),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some((limits.cpus * 1e9) as i64),
            network_mode: Some(network),
            // No writable layer: nothing the user does can grow the
            // container's storage on the host's disk.
            readonly_rootfs: Some(true),
            masked_paths: Some(MASKED_PATHS.iter().map(|p| (*p).to_owned()).collect()),
            tmpfs: Some(HashMap::from([
                ("/tmp".to_owned(), tmp.clone()),
                ("/var/tmp".to_owned(), tmp),
            ])),
            binds: Some(binds),
            ipc_mode: Some("private".into()),
            sysctls: shell
                .then(|| HashMap::from([("net.ipv6.conf.all.disable_ipv6".into(), "1".into())])),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut canonical = serde_json::to_value(&body).unwrap_or_default();
    sort_json(&mut canonical);
    let hash = hex::encode(Sha256::digest(canonical.to_string().as_bytes()));
    let mut body = body;
    body.labels
        .get_or_insert_with(Default::default)
        .insert(labels::SPEC.into(), hash.clone());
    Spec { body, hash }
}

/// Sorts arrays of strings (env, binds) so the hash does not depend on order.
fn sort_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(sort_json);
            if items.iter().all(|v| v.is_string()) {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(sort_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn alice() -> Identity {
        Identity {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec!["bastion-users".into()],
        }
    }

    /// alice's container spec of `kind`, under a config that names a role.
    fn alices_spec(kind: ContainerKind) -> Spec {
        let config = Config::parse("[bastiond]\nrole = \"dev\"\n")
            .unwrap()
            .bastiond;
        let settings = config.resolve("alice", 1000, &alice().groups).unwrap();
        build_spec(&config, &alice(), &settings, "sha256:abc", kind)
    }

    #[test]
    fn the_spec_carries_the_contract_and_the_hardening() {
        let spec = alices_spec(ContainerKind::Shell);
        let labels = spec.body.labels.as_ref().unwrap();
        assert_eq!(labels[labels::USER], "alice");
        assert_eq!(labels[labels::UID], "1000");
        assert_eq!(labels[labels::ROLE], "dev");
        assert!(
            spec.body
                .env
                .as_ref()
                .unwrap()
                .contains(&"IAM_ROLE=dev".to_owned())
        );
        assert_eq!(spec.body.user.as_deref(), Some(CONTAINER_INIT_USER));
        assert_eq!(spec.body.hostname.as_deref(), Some("alice"));
        let host = spec.body.host_config.as_ref().unwrap();
        assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(
            host.security_opt.as_deref(),
            Some(&["no-new-privileges".to_owned()][..])
        );
        assert_eq!(host.network_mode.as_deref(), Some("bastion-net-alice"));
        assert_eq!(labels[labels::NETWORK], "bastion-net-alice");
        assert_eq!(host.privileged, None);
        assert!(host.binds.as_ref().unwrap()[0].ends_with(":/home/alice:rw"));
    }

    #[test]
    fn the_transfer_container_has_no_network_credentials_or_kubeconfigs() {
        let spec = alices_spec(ContainerKind::Transfers);
        let labels = spec.body.labels.as_ref().unwrap();
        assert_eq!(labels[labels::PURPOSE], "transfers");
        assert!(!labels.contains_key(labels::ROLE) && !labels.contains_key(labels::NETWORK));
        let env = spec.body.env.as_ref().unwrap();
        assert!(
            !env.iter()
                .any(|e| e.starts_with("AWS_") || e.starts_with("IAM_ROLE")),
            "{env:?}"
        );
        let host = spec.body.host_config.as_ref().unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        let binds = host.binds.as_ref().unwrap();
        assert!(
            !binds
                .iter()
                .any(|b| b.contains("token") || b.contains("kubeconfigs")),
            "{binds:?}"
        );
        assert_eq!(
            ContainerKind::Transfers.name_of("alice"),
            "bastion-alice-files"
        );
        assert_ne!(alices_spec(ContainerKind::Shell).hash, spec.hash);
    }

    #[test]
    fn the_spec_hash_follows_image_role_and_limits() {
        let config = Config::parse("").unwrap().bastiond;
        let settings = config.resolve("alice", 1000, &alice().groups).unwrap();
        let a = build_spec(
            &config,
            &alice(),
            &settings,
            "sha256:a",
            ContainerKind::Shell,
        )
        .hash;
        assert_eq!(
            a,
            build_spec(
                &config,
                &alice(),
                &settings,
                "sha256:a",
                ContainerKind::Shell
            )
            .hash
        );
        assert_ne!(
            a,
            build_spec(
                &config,
                &alice(),
                &settings,
                "sha256:b",
                ContainerKind::Shell
            )
            .hash
        );
        let mut other = settings.clone();
        other.role = Some("x".into());
        assert_ne!(
            a,
            build_spec(&config, &alice(), &other, "sha256:a", ContainerKind::Shell).hash
        );
        let mut other = settings.clone();
        other.limits.pids = 99;
        assert_ne!(
            a,
            build_spec(&config, &alice(), &other, "sha256:a", ContainerKind::Shell).hash
        );
    }
}
