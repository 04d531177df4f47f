//! The container's hardening, checked from the attacker's side: from inside
//! a user's session, try the escape and assert it fails. Plus the Docker
//! contract (labels, env) seen from the host.
#![forbid(unsafe_code)]

mod common;

use common::*;

/// Runs a script in the user's container; returns stdout.
fn inside(u: &User, script: &str) -> String {
    let out = ssh_run(u, script);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_field(u: &User, field: &str) -> String {
    inside(u, &format!("grep '^{field}:' /proc/self/status | cut -f2"))
        .trim()
        .to_owned()
}

#[test]
fn the_session_has_no_privileges() {
    let u = e2e_user("bt-harden");
    assert_ne!(inside(&u, "id -u").trim(), "0", "never root");
    assert_eq!(
        status_field(&u, "CapEff"),
        "0000000000000000",
        "no effective capabilities"
    );
    assert_eq!(status_field(&u, "CapPrm"), "0000000000000000");
    assert_eq!(
        status_field(&u, "CapBnd"),
        "0000000000000000",
        "bounding set empty"
    );
    assert_eq!(status_field(&u, "NoNewPrivs"), "1");
    assert_eq!(
        status_field(&u, "Seccomp"),
        "2",
        "default seccomp profile in filter mode"
    );
}

#[test]
fn escapes_to_root_fail() {
    let u = e2e_user("bt-harden");
    let attempts = [
        (
            "no setuid binaries to abuse",
            "find / -xdev -perm /6000 -type f 2>/dev/null | head -5",
        ),
        (
            "su",
            "su -c id root </dev/null >/dev/null 2>&1 && echo ESCAPED",
        ),
        (
            "user namespace",
            "unshare -r id 2>/dev/null && echo ESCAPED",
        ),
        (
            "mount",
            "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m 2>/dev/null && echo ESCAPED",
        ),
        (
            "write /etc/passwd",
            "echo 'x::0:0::/:/bin/sh' >> /etc/passwd 2>/dev/null && echo ESCAPED",
        ),
        (
            "chown to root",
            "touch /tmp/f && chown 0:0 /tmp/f 2>/dev/null && echo ESCAPED",
        ),
        (
            "raw sockets",
            "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)' 2>/dev/null && echo ESCAPED",
        ),
        (
            "setuid via python",
            "python3 -c 'import os; os.setuid(0)' 2>/dev/null && echo ESCAPED",
        ),
        (
            "kernel modules",
            "cat /proc/modules >/dev/null 2>&1; insmod /x.ko 2>/dev/null && echo ESCAPED",
        ),
    ];
    for (what, script) in attempts {
        let out = inside(&u, script);
        assert!(out.trim().is_empty(), "{what}: {out}");
    }
}

#[test]
fn no_docker_socket_and_no_host_paths_but_home_and_kubeconfigs() {
    let u = e2e_user("bt-harden");
    let out = inside(
        &u,
        "for s in /var/run/docker.sock /run/docker.sock /run/containerd/containerd.sock /run/bastion/bastiond.sock; do test -e $s && echo $s; done; find / -xdev -type s 2>/dev/null | grep -v '^/proc' | head",
    );
    assert!(out.trim().is_empty(), "sockets reachable: {out}");
    let mounts = docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Source}}|{{.Destination}}|{{.RW}}\n{{end}}",
        &container_of(&u),
    ]);
    let mut lines: Vec<&str> = mounts.lines().filter(|l| !l.is_empty()).collect();
    lines.sort();
    let home = format!("/var/lib/bastion/homes/{0}|/home/{0}|true", u.name);
    assert!(lines.contains(&home.as_str()), "{mounts}");
    // Besides the home: the kubeconfigs and the user's own account files,
    // all read-only.
    let accounts = format!("/var/lib/bastion/accounts/{}", u.name);
    let read_only = [
        "/etc/bastion/kubeconfigs|/etc/bastion/kubeconfigs|false".to_owned(),
        format!("{accounts}/passwd|/etc/passwd|false"),
        format!("{accounts}/group|/etc/group|false"),
        format!("{accounts}/aws-container-token|/etc/bastion/aws-container-token|false"),
    ];
    for line in &lines {
        assert!(
            *line == home || read_only.iter().any(|r| r == line),
            "unexpected host mount: {line}"
        );
    }
    // The kubeconfig directory is read-only from inside.
    let out = inside(
        &u,
        "touch /etc/bastion/kubeconfigs/x 2>/dev/null && echo WROTE",
    );
    assert!(out.trim().is_empty(), "{out}");
}

#[test]
fn limits_from_the_config_are_in_force() {
    let u = e2e_user("bt-harden");
    inside(&u, "true");
    let host = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.PidsLimit}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.Privileged}}",
        &container_of(&u),
    ]);
    assert_eq!(
        host, "512 2147483648 2000000000 false",
        "defaults of [bastiond.limits]"
    );
    // And seen from inside (cgroup v1 or v2).
    let pids = inside(
        &u,
        "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
    );
    assert_eq!(pids.trim(), "512");
    let mem = inside(
        &u,
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    );
    assert_eq!(mem.trim(), "2147483648");
    // The pids limit bites: a fork bomb is contained (forks until refused).
    let out = inside(&u, &fork_until_refused(3, 0));
    let started: usize = out.trim().parse().unwrap_or(usize::MAX);
    assert!(started < 512, "{out}");
}

#[test]
fn the_network_is_the_users_own_bridge_without_ipv6() {
    let u = e2e_user("bt-harden");
    inside(&u, "true");
    let own = format!("bastion-net-{}", u.name);
    let nets = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        &container_of(&u),
    ]);
    assert_eq!(nets.trim(), own);
    let icc = docker(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.enable_icc\"}} {{.EnableIPv6}} {{len .Containers}}",
        &own,
    ]);
    assert_eq!(icc, "false false 1", "alone on its own network");
    let v6 = inside(
        &u,
        "cat /proc/sys/net/ipv6/conf/all/disable_ipv6; cat /proc/net/if_inet6 2>/dev/null | wc -l",
    );
    assert_eq!(
        v6.split_whitespace().collect::<Vec<_>>(),
        ["1", "0"],
        "{v6}"
    );
}

/// issue 9, class 7: nothing inside a container reveals another user's
/// name, address or existence: not the Engine's DNS (names, hostnames,
/// aliases, reverse lookups), not the network (neighbours, or which
/// addresses answer how), not the proxy.
#[test]
fn users_cannot_enumerate_each_other() {
    let a = e2e_user("bt-enum-a");
    let b = e2e_user("bt-enum-b");
    inside(&a, "true");
    inside(&b, "true");
    let b_ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &container_of(&b),
    ]);
    let b_id = docker(&["inspect", "-f", "{{.Id}}", &container_of(&b)]);
    let short = &b_id[..12];
    let script = format!(
        r#"
for n in bastion-{b} {b} {short} bastion-{b}.bastion-net-{b} {b}.bastion0 bastion-{b}.bastion0; do
  getent hosts "$n" && echo "FOUND name $n"
done
getent hosts {b_ip} && echo "FOUND reverse {b_ip}"
python3 - <<'PY'
import socket, struct, random
# Ask the Engine's DNS directly, forward and reverse.
def query(name, qtype):
    q = struct.pack(">HHHHHH", random.randint(0, 65535), 0x0100, 1, 0, 0, 0)
    for part in name.split("."):
        q += bytes([len(part)]) + part.encode()
    q += b"\x00" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.sendto(q, ("127.0.0.11", 53))
        r = s.recv(4096)
        return struct.unpack(">H", r[6:8])[0]
    except OSError:
        return 0
    finally:
        s.close()
# The probe works: the container's own name is answered.
if not query("bastion-{a}", 1):
    print("PROBE BROKEN")
for name in ["bastion-{b}", "{b}", "{short}"]:
    if query(name, 1):
        print("FOUND dns", name)
rev = ".".join(reversed("{b_ip}".split("."))) + ".in-addr.arpa"
if query(rev, 12):
    print("FOUND ptr", rev)
PY
ip neigh 2>/dev/null | grep -v FAILED | grep -q . && ip neigh | sed 's/^/neighbour /'
# The host's block devices (each home is a loop device named after its user).
cat /sys/block/loop*/loop/backing_file /sys/class/block/*/loop/backing_file 2>/dev/null | sed 's/^/FOUND backing /'
grep -h loop /proc/diskstats /proc/partitions 2>/dev/null | sed 's/^/FOUND disk /'
# Host-wide tables and counters: terminals, locks, device events.
cat /proc/sys/kernel/pty/nr 2>/dev/null | sed 's/^/FOUND ptys /'
cat /proc/locks 2>/dev/null | sed 's/^/FOUND lock /'
cat /proc/key-users 2>/dev/null | sed 's/^/FOUND keys /'
cat /sys/kernel/uevent_seqnum 2>/dev/null | sed 's/^/FOUND uevents /'
ls /sys/fs/ext4 2>/dev/null | grep . | sed 's/^/FOUND ext4 /'
echo done
"#,
        a = a.name,
        b = b.name,
    );
    let out = inside(&a, &script);
    assert!(
        out.contains("done") && !out.contains("PROBE BROKEN"),
        "{out}"
    );
    assert!(!out.contains("FOUND"), "{out}");
    // Another user's address, a free address next to it and a made-up one
    // in the users' networks: all look the same (dropped alike).
    let probe = |ip: &str| {
        inside(
            &a,
            &format!("timeout 3 bash -c 'echo > /dev/tcp/{ip}/22' 2>&1; echo rc=$?"),
        )
    };
    let free = {
        let mut octets: Vec<u8> = b_ip.split('.').map(|o| o.parse().unwrap()).collect();
        octets[3] += 3;
        octets
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(".")
    };
    let results: Vec<String> = [b_ip.as_str(), free.as_str(), "172.31.250.2"]
        .iter()
        .map(|ip| probe(ip).replace(ip, "IP"))
        .collect();
    assert!(
        results.iter().all(|r| r == &results[0]) && results[0].contains("rc=124"),
        "addresses answer differently: {results:?}"
    );
}

/// issue 9, class 4: one user cannot fill the disk that holds everyone's
/// audit trail: their home is a file system of its own, /tmp and /var/tmp
/// are sized in memory, the rest of the container is read-only, and their
/// recordings stop at their budget (then their logins are refused, nobody
/// else's, until old recordings are pruned).
#[test]
fn one_user_cannot_fill_the_disk() {
    let u = e2e_user("bt-disk");
    let other = e2e_user("bt-disk-other");
    // What the user's writes can take from the host's disk: their home
    // file system's image (blocks it has allocated) and the container's
    // writable layer. Measured on these two rather than by the disk's free
    // space, which other tests running alongside change.
    let image = format!("/var/lib/bastion/home-images/{}.ext4", u.name);
    let footprint = || {
        let allocated = std::fs::metadata(&image)
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or_else(|e| panic!("{image}: {e}"));
        let layer: u64 = docker(&["inspect", "--size", "-f", "{{.SizeRw}}", &container_of(&u)])
            .trim()
            .parse()
            .unwrap();
        (allocated, layer)
    };
    ssh_text(&u, "true");
    let (_, layer_before) = footprint();
    let fill = |path: &str| {
        format!(
            "dd if=/dev/zero of={path} bs=1M count=200 2>&1 | grep -q 'No space left on device' && echo FULL; ls -s --block-size=1M {path} | cut -d' ' -f1; rm -f {path}"
        )
    };
    for (path, limit_mib) in [("~/fill", 64), ("/tmp/fill", 32), ("/var/tmp/fill", 32)] {
        let out = ssh_text(&u, &fill(path));
        assert!(out.starts_with("FULL"), "{path}: {out}");
        let written: u64 = out.lines().last().unwrap().trim().parse().unwrap();
        assert!(
            written <= limit_mib,
            "{path}: {written} MiB written past {limit_mib} MiB"
        );
    }
    // Nowhere else: the container's own file system is read-only.
    let out = ssh_text(
        &u,
        "for d in / /etc /usr /var /var/lib /opt /srv /root /home /run /var/log; do \
           touch $d/.bastion-fill 2>/dev/null && echo WROTE $d; done; echo done",
    );
    assert_eq!(out.trim(), "done", "{out}");
    let (image_after, layer_after) = footprint();
    assert!(
        image_after <= (64 << 20) + (4 << 20),
        "the home image takes {image_after} bytes of the host's disk, past its 64 MiB limit"
    );
    assert!(
        layer_after.saturating_sub(layer_before) < 1 << 20,
        "the container's writable layer grew from {layer_before} to {layer_after} bytes"
    );
    // Their recordings stop at their budget (2 MiB here). Sessions live at
    // once share it: each reserves what its recording may take, so
    // concurrent sessions cannot take more between them.
    let _ = bastionctl_prune(&u.name);
    let concurrent: Vec<_> = (0..4)
        .map(|_| {
            let u = u.clone();
            std::thread::spawn(move || {
                ssh_run(&u, "sleep 2; head -c 600000 /dev/zero | base64 -w 100")
            })
        })
        .collect();
    let outcomes: Vec<_> = concurrent.into_iter().map(|t| t.join().unwrap()).collect();
    let refused_now = outcomes
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("used up their space"))
        .count();
    assert!(refused_now >= 1, "{outcomes:?}");
    let used: u64 = std::fs::read_dir(format!("/var/log/bastion/sessions/{}", u.name))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    assert!(
        used <= (2 << 20) + (64 << 10),
        "{used} bytes of recordings for a 2 MiB budget"
    );
    let _ = bastionctl_prune(&u.name);
    // The session that reaches what its recording may take is ended
    // (nothing of it goes unrecorded): what follows never reaches the
    // client, and the user is told why.
    let out = ssh_run(
        &u,
        "head -c 3000000 /dev/zero | base64 -w 100; echo AFTER-THE-CAP",
    );
    assert_eq!(
        out.status.code(),
        Some(125),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("AFTER-THE-CAP"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could no longer be recorded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = ssh_run(&u, "echo should-not-run");
    assert_eq!(refused.status.code(), Some(125), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("used up their space"), "{stderr}");
    assert!(String::from_utf8_lossy(&refused.stdout).is_empty());
    // Nobody else is affected.
    assert_eq!(ssh_text(&other, "echo fine").trim(), "fine");
    // Pruning frees the budget.
    bastionctl_prune(&u.name);
    assert_eq!(ssh_text(&u, "echo back").trim(), "back");
}

fn bastionctl_prune(user: &str) -> std::process::Output {
    run_ok(
        std::process::Command::new("/usr/local/bin/bastionctl").args([
            "sessions",
            "prune",
            "--older-than",
            "0s",
            "--user",
            user,
        ]),
    )
}

#[test]
fn the_docker_contract_labels_and_env() {
    let u = e2e_user("bt-harden");
    inside(&u, "true");
    let c = container_of(&u);
    let label = |k: &str| {
        docker(&[
            "inspect",
            "-f",
            &format!("{{{{index .Config.Labels \"{k}\"}}}}"),
            &c,
        ])
    };
    assert_eq!(label("bastion.user"), u.name);
    let uid = run_ok(std::process::Command::new("id").args(["-u", &u.name])).stdout;
    assert_eq!(label("bastion.uid"), String::from_utf8_lossy(&uid).trim());
    assert_eq!(label("bastion.credentials-token-sha256").len(), 64);
    let role = label("bastion.role");
    assert_eq!(
        role, "e2e-role",
        "the role of the user's group from the config"
    );
    let env = inside(&u, "echo IAM_ROLE=$IAM_ROLE");
    assert_eq!(env.trim(), format!("IAM_ROLE={role}"));
    // The container-credentials token is the user's alone, and its hash is the label.
    let token_sha = inside(
        &u,
        "stat -c %a /etc/bastion/aws-container-token; sha256sum < /etc/bastion/aws-container-token | cut -d' ' -f1",
    );
    let lines: Vec<&str> = token_sha.lines().collect();
    assert_eq!(lines[0], "400");
    assert_eq!(lines[1], label("bastion.credentials-token-sha256"));
}
