//! Shared set-up of the integration tests: real Docker Engine, real moto
//! (STS and the stand-in for the real IMDS), real iptables rules, and the
//! user image. A missing prerequisite fails the test with what to install;
//! nothing is skipped.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bastion_core::config::Config;
use bastion_metadata_proxy::credential_cache::Tuning;
use bastion_metadata_proxy::secret::Secret;
use bastion_metadata_proxy::server::{ProxyOptions, RunningProxy, start};
use bastion_metadata_proxy::sts::StsSettings;

pub const IMAGE: &str = "bastion/user:latest";
/// The tests' own user network, beside bastion0 (which a demo or the
/// end-to-end tests may be using, with the installed proxy on its gateway).
/// Also the Linux bridge name, with its own iptables chains.
pub const NETWORK: &str = "bastion-mpt";
pub const SUBNET: &str = "172.30.200.0/24";
pub const GATEWAY: &str = "172.30.200.1";
pub const PROXY_PORT: u16 = 8775;
pub const ACCOUNT: &str = "123456789012";
/// moto's venv python, running the demo's AWS stand-in
/// (`provisioning/sts-demo-server.py`: all of moto on loopback, with the
/// IMDS token endpoint answering as the real one does).
pub const MOTO_PYTHON: &str = "/opt/bastion/moto/bin/python";
pub const AWS_STAND_IN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../provisioning/sts-demo-server.py"
);

/// Tests that own the DNAT target port run one at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

pub fn docker(args: &[&str]) -> String {
    let (ok, out, err) = run(Command::new("docker").args(args));
    assert!(ok, "docker {args:?} failed: {err}");
    out
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Root, Docker, the user image, the bastion network, the iptables rules
/// and moto: checked (and where ours to make, made) once per test binary.
pub fn prerequisites() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        root_docker_image_moto();
        ensure_network(NETWORK, SUBNET, GATEWAY, "bastion.network=true");
        let script = repo_root().join("provisioning/metadata-proxy-iptables.sh");
        let port = PROXY_PORT.to_string();
        let (ok, out, err) = run(Command::new(&script).args([
            "apply",
            "--bridge",
            NETWORK,
            "--gateway",
            GATEWAY,
            "--port",
            &port,
            "--users-bridges",
            "none",
        ]));
        assert!(ok, "{} apply failed: {out} {err}", script.display());
    });
}

/// A moto server on 127.0.0.1 (STS, and the stand-in for the real IMDS:
/// it serves `placement/region` and a "host role" we must never leak),
/// through the demo's stand-in ([`AWS_STAND_IN`]).
pub struct Moto {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// A moto on a given port: STS coming back where it was.
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let child = Command::new(MOTO_PYTHON)
            .args([AWS_STAND_IN, &port.to_string(), "127.0.0.1"])
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("cannot start moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not listen within 30 s: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Proxy options as a bastion host has them, pointed at `moto`.
pub fn options(moto: &Moto, audit_log: Option<&Path>) -> ProxyOptions {
    let text = format!(
        "[metadata_proxy]\nadmin_listen = \"127.0.0.1:8786\"\naccount_id = \"{ACCOUNT}\"\nsts_endpoint = \"{}\"\nsts_region = \"us-east-1\"\nimds_upstream = \"{}\"\npassthrough = [\"meta-data/placement/region\", \"meta-data/instance-id\"]\nsession_tags = true\n[bastiond.network]\nname = \"{NETWORK}\"\nsubnet = \"{SUBNET}\"\n",
        moto.endpoint(),
        moto.endpoint()
    );
    let config = Config::parse(&text).expect("test config is valid");
    let mut options = ProxyOptions::from_config(&config);
    options.audit_log = audit_log.map(|p| (p.to_owned(), false));
    options.sts = StsSettings {
        static_credentials: Some(("testing".into(), Secret::from("testing"))),
        ..options.sts
    };
    options.tuning = Tuning {
        scan_interval: Duration::from_millis(500),
        ..options.tuning
    };
    options
}

pub async fn start_proxy(options: ProxyOptions) -> RunningProxy {
    match start(options).await {
        Ok(proxy) => proxy,
        Err(e) => panic!(
            "the proxy did not start: {e} (is another bastion-metadata-proxy on {GATEWAY}:{PROXY_PORT}? stop it first)"
        ),
    }
}

/// A labelled user container on the bastion network, removed on drop.
pub struct TestContainer {
    pub name: String,
    pub id: String,
    pub ip: Ipv4Addr,
    pub pid: u32,
    pub token: String,
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

impl TestContainer {
    /// `user`'s container with `role` (label `bastion.role`) as bastiond
    /// makes it; `ip` pins the address (IP reuse tests).
    pub fn start(user: &str, role: Option<&str>, ip: Option<Ipv4Addr>) -> Self {
        Self::start_with_labels(user, role, ip, true)
    }

    pub fn start_with_labels(
        user: &str,
        role: Option<&str>,
        ip: Option<Ipv4Addr>,
        labelled: bool,
    ) -> Self {
        Self::start_on_network(NETWORK, user, role, ip, labelled)
    }

    /// [`TestContainer::start_with_labels`] on another network.
    pub fn start_on_network(
        network: &str,
        user: &str,
        role: Option<&str>,
        ip: Option<Ipv4Addr>,
        labelled: bool,
    ) -> Self {
        use sha2::Digest;
        let name = format!("bastion-{user}");
        let token = hex::encode(rand::random::<[u8; 32]>());
        let token_sha = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--network".into(),
            network.into(),
        ];
        if let Some(ip) = ip {
            args.extend(["--ip".into(), ip.to_string()]);
        }
        // Marks the tests' own containers (for anyone cleaning up).
        args.extend(["--label".into(), "bastion.test=metadata-proxy".into()]);
        if labelled {
            args.extend([
                "--label".into(),
                format!("bastion.user={user}"),
                "--label".into(),
                "bastion.uid=1000".into(),
                "--label".into(),
                format!("bastion.credentials-token-sha256={token_sha}"),
            ]);
            if let Some(role) = role {
                args.extend([
                    "--label".into(),
                    format!("bastion.role={role}"),
                    "-e".into(),
                    format!("IAM_ROLE={role}"),
                ]);
            }
        }
        args.extend([
            "-e".into(),
            "AWS_DEFAULT_REGION=us-east-1".into(),
            "--entrypoint".into(),
            "sleep".into(),
            IMAGE.into(),
            "infinity".into(),
        ]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = docker(&argv);
        let ip: Ipv4Addr = docker(&[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            &id,
        ])
        .parse()
        .expect("container has an IPv4 address on the bastion network");
        let pid: u32 = docker(&["inspect", "--format", "{{.State.Pid}}", &id])
            .parse()
            .unwrap();
        Self {
            name,
            id,
            ip,
            pid,
            token,
        }
    }

    /// Runs `cmd` in the container with extra environment.
    pub fn exec(&self, env: &[(&str, &str)], cmd: &[&str]) -> (bool, String, String) {
        let mut c = Command::new("docker");
        c.arg("exec");
        for (k, v) in env {
            c.args(["-e", &format!("{k}={v}")]);
        }
        c.arg(&self.id).args(cmd);
        run(&mut c)
    }

    /// Why the container may have stopped answering: its state, and a
    /// hint when it is no longer running (something else stopped it: an
    /// installed bastiond's reaper stops every `bastion.user` container
    /// whose user has had no session for `idle_stop_after`).
    pub fn diagnosis(&self) -> String {
        let (_, state, _) = run(Command::new("docker").args([
            "inspect",
            "--format",
            "{{.State.Status}}",
            &self.id,
        ]));
        if state == "running" {
            format!("container {} is running", self.name)
        } else {
            format!(
                "container {} is {state:?}: stopped behind the test's back (is a bastiond running whose reaper stops idle bastion.user containers? see /var/log/bastion/bastiond.log)",
                self.name
            )
        }
    }

    pub fn remove(&self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs `f` on a thread inside the network namespace of process `pid`:
/// sockets it opens are the container's.
pub fn in_netns<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = fs::File::open(format!("/proc/{pid}/ns/net")).expect("container netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into the container's network namespace");
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request (`Connection: close`) over a fresh connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(parse_reply(&raw))
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub const IMDS: &str = "169.254.169.254";
pub const ECS: &str = "169.254.170.2";

pub fn imds_addr() -> SocketAddr {
    SocketAddr::from(([169, 254, 169, 254], 80))
}

pub fn ecs_addr() -> SocketAddr {
    SocketAddr::from(([169, 254, 170, 2], 80))
}

/// From inside `container`, through the real DNAT path.
pub fn from_container(
    c: &TestContainer,
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    try_from_container(c, addr, method, host, path, headers)
        .unwrap_or_else(|e| panic!("request from the container failed: {e}"))
}

/// [`from_container`], returning a failed connection instead of panicking
/// (waiting for a proxy to listen).
pub fn try_from_container(
    c: &TestContainer,
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let (method, host, path) = (method.to_owned(), host.to_owned(), path.to_owned());
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    in_netns(c.pid, move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http(addr, &method, &host, &path, &headers)
    })
}

/// The caller ARN STS (moto) sees for these credentials.
pub async fn caller_arn(moto: &Moto, access_key_id: &str, secret: &str, token: &str) -> String {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .credentials_provider(aws_credential_types::Credentials::new(
            access_key_id,
            secret,
            Some(token.to_owned()),
            None,
            "test",
        ))
        .load()
        .await;
    let out = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity against moto");
    out.arn().unwrap().to_owned()
}

/// A root-owned 0600 config file for the binary.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("bastion.toml");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The network of the STS fault tests (tests/sts_faults.rs): their own, so
/// that they never compete with the other tests (or an installed proxy) for
/// a listening address. No DNAT: the tests call the proxy at its own
/// address from inside a container, as the DNAT would deliver it.
pub const FAULTS_NETWORK: &str = "bastion-mpf";
pub const FAULTS_SUBNET: &str = "172.30.201.0/24";
pub const FAULTS_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 30, 201, 1);

/// Root, Docker, the user image, moto and [`FAULTS_NETWORK`].
pub fn faults_prerequisites() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        root_docker_image_moto();
        let gateway = FAULTS_GATEWAY.to_string();
        ensure_network(
            FAULTS_NETWORK,
            FAULTS_SUBNET,
            &gateway,
            "bastion.test=metadata-proxy",
        );
    });
}

/// Root, a Docker Engine that answers, the user image and moto.
fn root_docker_image_moto() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the metadata proxy's integration tests run as root (Docker, iptables, network namespaces): run them with sudo, e.g. `sudo ./test.sh`"
    );
    let (ok, _, err) = run(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]));
    assert!(
        ok,
        "the Docker Engine does not answer ({err}): `apt-get install docker.io` and start dockerd (`provisioning/bastion-service start dockerd`)"
    );
    let (ok, _, _) = run(Command::new("docker").args(["image", "inspect", IMAGE]));
    assert!(
        ok,
        "the user image {IMAGE} is missing: build it with image/build.sh (provisioning/install.sh --test does)"
    );
    assert!(
        Path::new(MOTO_PYTHON).exists(),
        "moto is missing: `python3 -m venv /opt/bastion/moto && /opt/bastion/moto/bin/pip install 'moto[server]'` (provisioning/sts-demo.sh install does it)"
    );
}

/// A bridge network `name` (also the Linux bridge's name) without traffic
/// between its containers, made unless it exists.
fn ensure_network(name: &str, subnet: &str, gateway: &str, label: &str) {
    let (exists, _, _) = run(Command::new("docker").args(["network", "inspect", name]));
    if !exists {
        let bridge = format!("com.docker.network.bridge.name={name}");
        docker(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            subnet,
            "--gateway",
            gateway,
            "--opt",
            &bridge,
            "--opt",
            "com.docker.network.bridge.enable_icc=false",
            "--label",
            label,
            name,
        ]);
    }
}

/// One connection a [`SilentSts`] accepted.
#[derive(Debug, Clone)]
pub struct HeldConnection {
    /// What the client sent (an STS query-protocol request: the body
    /// names the action, e.g. `Action=GetCallerIdentity`).
    pub received: String,
    pub opened: Instant,
    /// When the client gave up and closed it; `None` while it waits.
    pub closed: Option<Instant>,
}

/// A hanging STS: a real TCP listener that accepts every connection, reads
/// what the client sends and never answers (a real fault, not a mock: an
/// endpoint behind a black-holing middlebox or a wedged server looks
/// exactly so). It records each connection, and when the client closed it.
pub struct SilentSts {
    pub port: u16,
    connections: std::sync::Arc<std::sync::Mutex<Vec<HeldConnection>>>,
}

impl SilentSts {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::<HeldConnection>::new()));
        let record = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let index = {
                    let mut all = record.lock().unwrap();
                    all.push(HeldConnection {
                        received: String::new(),
                        opened: Instant::now(),
                        closed: None,
                    });
                    all.len() - 1
                };
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => record.lock().unwrap()[index]
                                .received
                                .push_str(&String::from_utf8_lossy(&buf[..n])),
                        }
                    }
                    record.lock().unwrap()[index].closed = Some(Instant::now());
                });
            }
        });
        Self { port, connections }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The connections so far whose request contains `action`.
    pub fn held(&self, action: &str) -> Vec<HeldConnection> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.received.contains(action))
            .cloned()
            .collect()
    }
}
