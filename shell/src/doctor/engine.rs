//! Checks through the Docker Engine: it answers, the users' image is there
//! and its tools run as a user, the bastion network exists.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{LogsOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::{StreamExt, TryStreamExt};

use super::{Check, Services};
use crate::config::Config;

/// How long the Engine gets for each question.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the image's tools get to run, all of them.
const TOOLS_TIMEOUT: Duration = Duration::from_secs(90);

/// The tools a user's container promises, each with a command that runs
/// it without a cluster or credentials.
const TOOLS: &[(&str, &str)] = &[
    ("kubectl", "kubectl version --client"),
    ("k9s", "k9s version"),
    ("kubectx", "kubectx --help"),
    ("kubens", "kubens --help"),
    ("aws", "aws --version"),
];

/// The image label that says whether k9s is in the image (`absent`).
const K9S_LABEL: &str = "bastion.image.k9s";

pub struct Engine {
    pub check: Check,
    pub client: Option<Docker>,
}

/// The Engine answers a ping.
pub async fn connect(config: &Config, services: &Services) -> Engine {
    let fix = services.restart("dockerd");
    let client = match tokio::time::timeout(
        ENGINE_TIMEOUT,
        crate::contract::docker::connect(config.bastiond.docker_host.as_deref()),
    )
    .await
    {
        Ok(Ok((docker, _))) => docker,
        Ok(Err(e)) => {
            return Engine {
                check: Check::fail("docker", e.to_string(), fix),
                client: None,
            };
        }
        Err(_) => {
            return Engine {
                check: Check::fail("docker", "the Docker Engine did not answer in 5 s", fix),
                client: None,
            };
        }
    };
    let version = tokio::time::timeout(ENGINE_TIMEOUT, client.version()).await;
    match version {
        Ok(Ok(v)) => Engine {
            check: Check::ok(
                "docker",
                format!(
                    "the Docker Engine {} answers",
                    v.version.unwrap_or_default()
                ),
            ),
            client: Some(client),
        },
        Ok(Err(e)) => Engine {
            check: Check::fail(
                "docker",
                format!("the Docker Engine does not answer: {e}"),
                fix,
            ),
            client: None,
        },
        Err(_) => Engine {
            check: Check::fail("docker", "the Docker Engine did not answer in 5 s", fix),
            client: None,
        },
    }
}

/// Every image the config names is present; the default one's tools run.
/// The default image missing is a FAIL (nobody can log in); an image of a
/// group's or user's override, a warn naming whom it keeps out.
pub async fn images(docker: &Docker, config: &Config) -> Vec<Check> {
    let b = &config.bastiond;
    // Each override image, with the groups and users that name it.
    let mut overrides: Vec<(String, Vec<String>)> = Vec::new();
    let named = b
        .groups
        .iter()
        .map(|(g, o)| (format!("group {g}"), o))
        .chain(b.users.iter().map(|(u, o)| (format!("user {u}"), o)));
    for (who, o) in named {
        let Some(image) = o.image.as_ref().filter(|i| **i != b.image) else {
            continue;
        };
        match overrides.iter_mut().find(|(i, _)| i == image) {
            Some((_, whom)) => whom.push(who),
            None => overrides.push((image.clone(), vec![who])),
        }
    }
    let mut checks = Vec::new();
    for (image, whom) in std::iter::once((b.image.clone(), Vec::new())).chain(overrides) {
        let name = format!("image {image}");
        let fix = format!("provisioning/install.sh (builds it), or image/build.sh --tag {image}");
        let inspected = match docker.inspect_image(&image).await {
            Ok(i) => i,
            Err(e) => {
                let missing = matches!(
                    &e,
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }
                );
                checks.push(match (missing, whom.is_empty()) {
                    (true, true) => Check::fail(
                        name,
                        format!("{image} is not in the Docker Engine: no user can log in"),
                        fix,
                    ),
                    (true, false) => Check::warn(
                        name,
                        format!(
                            "{image} is not in the Docker Engine: {} cannot log in",
                            whom.join(", ")
                        ),
                        format!("{fix}; or change their image in bastion.toml"),
                    ),
                    (false, _) => Check::fail(name, format!("cannot inspect {image}: {e}"), fix),
                });
                continue;
            }
        };
        checks.push(Check::ok(
            name,
            format!(
                "present ({})",
                inspected
                    .id
                    .as_deref()
                    .unwrap_or("?")
                    .chars()
                    .take(19)
                    .collect::<String>()
            ),
        ));
        // The tools of the image most users get.
        if whom.is_empty() {
            let k9s_label = inspected
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(K9S_LABEL).cloned());
            checks.extend(tools(docker, &image, k9s_label.as_deref()).await);
        }
    }
    checks
}

/// Runs each tool as an unprivileged user (nobody) in a throw-away
/// container of `image`: no network, no capabilities, read-only.
async fn tools(docker: &Docker, image: &str, k9s_label: Option<&str>) -> Vec<Check> {
    let script = TOOLS
        .iter()
        .map(|(tool, cmd)| {
            format!(
                "if command -v {tool} >/dev/null 2>&1; then out=$({cmd} 2>&1 </dev/null); echo \"{tool} $? $(printf '%s' \"$out\" | head -n 1 | cut -c1-100)\"; else echo \"{tool} absent\"; fi"
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let outcome = tokio::time::timeout(TOOLS_TIMEOUT, run_probe(docker, image, &script)).await;
    let output = match outcome {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            return vec![Check::fail(
                "image tools",
                format!("cannot run a container of {image}: {e}"),
                format!("image/build.sh --tag {image} --refresh"),
            )];
        }
        Err(_) => {
            return vec![Check::fail(
                "image tools",
                format!(
                    "the tools of {image} did not finish in {} s",
                    TOOLS_TIMEOUT.as_secs()
                ),
                format!("image/build.sh --tag {image} --refresh"),
            )];
        }
    };
    TOOLS
        .iter()
        .map(|(tool, _)| {
            let name = format!("tool {tool}");
            let line = output
                .lines()
                .find(|l| l.split(' ').next() == Some(tool))
                .unwrap_or_default();
            let mut words = line.splitn(3, ' ').skip(1);
            match (words.next(), words.next()) {
                (Some("absent"), _) if *tool == "k9s" => Check::warn(
                    name,
                    format!(
                        "k9s is not in {image}{}: users are told so at login",
                        if k9s_label == Some("absent") { " (built without it)" } else { "" }
                    ),
                    "provisioning/install.sh --k9s FILE (the k9s release tarball; see docs/image.md)",
                ),
                (Some("absent"), _) => Check::fail(
                    name,
                    format!("{tool} is not in {image}"),
                    format!("image/build.sh --tag {image} --refresh"),
                ),
                (Some("0"), first) => Check::ok(name, first.unwrap_or("").trim().to_owned()),
                (Some(code), first) => Check::fail(
                    name,
                    format!(
                        "{tool} exits {code} as a user: {}",
                        first.unwrap_or("").trim()
                    ),
                    format!("image/build.sh --tag {image} --refresh"),
                ),
                (None, _) => Check::fail(
                    name,
                    format!("no answer from {tool} in {image}"),
                    format!("image/build.sh --tag {image} --refresh"),
                ),
            }
        })
        .collect()
}

/// Runs `script` with sh in a container of `image` as nobody, and returns
/// what it printed. The container is removed whatever happens.
async fn run_probe(
    docker: &Docker,
    image: &str,
    script: &str,
) -> Result<String, bollard::errors::Error> {
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        user: Some("65534:65534".into()),
        env: Some(vec!["HOME=/tmp".into(), "TERM=dumb".into()]),
        labels: Some(HashMap::from([(
            "bastion.probe".to_owned(),
            "doctor".to_owned(),
        )])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([("/tmp".to_owned(), "size=64m".to_owned())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let probe = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await?;
    let result = async {
        docker.start_container(&probe.id, None).await?;
        let _ = docker
            .wait_container(&probe.id, None)
            .try_collect::<Vec<_>>()
            .await;
        let logs = docker
            .logs(
                &probe.id,
                Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
            )
            .map(|chunk| chunk.map(|c| c.into_bytes()))
            .try_collect::<Vec<_>>()
            .await?;
        Ok(String::from_utf8_lossy(&logs.concat()).into_owned())
    }
    .await;
    let _ = docker
        .remove_container(
            &probe.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    result
}

/// The bastion network (the gateway where the proxy listens) exists.
pub async fn network(docker: &Docker, config: &Config, services: &Services) -> Check {
    let name = &config.bastiond.network.name;
    match docker
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(_) => Check::ok(
            "network",
            format!("{name} ({}) exists", config.bastiond.network.subnet),
        ),
        Err(e) => Check::fail(
            "network",
            format!(
                "the Docker network {name} is missing ({e}): the proxy has no gateway to listen on"
            ),
            format!(
                "{} (bastiond creates it at start)",
                services.restart("bastiond")
            ),
        ),
    }
}
