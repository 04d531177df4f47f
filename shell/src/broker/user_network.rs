//! Each user's own network: `bastion-net-<user>`, a bridge (`bst<uid>`)
//! with a /29 of `[bastiond.network] users_subnet`, no IPv6, no traffic
//! between containers, and only that user's container on it.
//!
//! On a shared network the Engine's embedded DNS answers every member's
//! name, hostname and alias, and reverse lookups of their addresses; ARP
//! and connection errors tell which addresses are taken. Alone on its own
//! network, a container can learn nothing of any other user: its DNS knows
//! only itself, its bridge has no other member, and the firewall
//! (provisioning/metadata-proxy-iptables.sh) drops all traffic from users'
//! bridges to the users' subnet alike, taken or not.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use ipnet::Ipv4Net;

use super::identity::Identity;
use crate::config::{NetworkConfig, USER_BRIDGE_PREFIX, USER_NETWORK_PREFIX};

/// Label of bastion's networks: `gateway` (the proxy's) or `user`.
pub const NETWORK_LABEL: &str = "bastion.network";
/// The user a user network belongs to.
pub const NETWORK_USER_LABEL: &str = "bastion.user";

/// Why a user's network could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum UserNetworkError {
    #[error("the Docker Engine is not reachable: {0}")]
    Unreachable(#[source] DockerError),
    #[error("Docker Engine failed to {action} network {name}: {source}")]
    Docker {
        action: &'static str,
        name: String,
        #[source]
        source: DockerError,
    },
    #[error("a network named {name} exists but does not belong to bastion user {user}")]
    NotOurs { name: String, user: String },
    #[error(
        "no free /{USER_NETWORK_PREFIX} left in users_subnet {pool}: enlarge [bastiond.network] users_subnet"
    )]
    PoolExhausted { pool: Ipv4Net },
}

/// The name of `user`'s network.
pub fn name_of(user: &str) -> String {
    format!("bastion-net-{user}")
}

/// The Linux bridge of the network of `uid` (at most 15 characters).
pub fn bridge_of(uid: u32) -> String {
    format!("{USER_BRIDGE_PREFIX}{uid}")
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Makes `who`'s network exist; returns its name. `alloc` serialises the
/// choice of subnets between users.
pub async fn ensure(
    docker: &Docker,
    alloc: &tokio::sync::Mutex<()>,
    config: &NetworkConfig,
    who: &Identity,
) -> Result<String, UserNetworkError> {
    let name = name_of(&who.name);
    if let Some(found) = inspect(docker, &name, who).await? {
        return Ok(found);
    }
    let _alloc = alloc.lock().await;
    // Made meanwhile by a login of the same user?
    if let Some(found) = inspect(docker, &name, who).await? {
        return Ok(found);
    }
    let mut taken = subnets_in_use(docker).await?;
    loop {
        let subnet =
            free_subnet(config.users_subnet, &taken).ok_or(UserNetworkError::PoolExhausted {
                pool: config.users_subnet,
            })?;
        match docker.create_network(request(&name, who, subnet)).await {
            Ok(_) => {
                tracing::info!(user = %who.name, network = %name, %subnet, "created the user's network");
                return Ok(name);
            }
            // Another network (not ours, or made by hand) has that subnet.
            Err(e) if status_of(&e) == Some(403) || overlaps(&e) => {
                tracing::debug!(%subnet, error = %e, "subnet taken; trying the next");
                taken.insert(subnet);
            }
            Err(e) if status_of(&e) == Some(409) => {
                return match inspect(docker, &name, who).await? {
                    Some(found) => Ok(found),
                    None => Err(UserNetworkError::Docker {
                        action: "create",
                        name,
                        source: e,
                    }),
                };
            }
            Err(e) if super::container::is_unreachable(&e) => {
                return Err(UserNetworkError::Unreachable(e));
            }
            Err(source) => {
                return Err(UserNetworkError::Docker {
                    action: "create",
                    name,
                    source,
                });
            }
        }
    }
}

fn overlaps(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { message, .. } if message.contains("overlap"))
}

/// The network `name` if it exists and is `who`'s.
async fn inspect(
    docker: &Docker,
    name: &str,
    who: &Identity,
) -> Result<Option<String>, UserNetworkError> {
    match docker.inspect_network(name, None).await {
        Ok(network) => {
            let labels = network.labels.unwrap_or_default();
            let ours = labels.get(NETWORK_LABEL).map(String::as_str) == Some("user")
                && labels.get(NETWORK_USER_LABEL) == Some(&who.name);
            if ours {
                Ok(Some(name.to_owned()))
            } else {
                Err(UserNetworkError::NotOurs {
                    name: name.to_owned(),
                    user: who.name.clone(),
                })
            }
        }
        Err(e) if status_of(&e) == Some(404) => Ok(None),
        Err(e) if super::container::is_unreachable(&e) => Err(UserNetworkError::Unreachable(e)),
        Err(source) => Err(UserNetworkError::Docker {
            action: "inspect",
            name: name.to_owned(),
            source,
        }),
    }
}

/// The IPv4 subnets of every network the Engine knows.
async fn subnets_in_use(docker: &Docker) -> Result<HashSet<Ipv4Net>, UserNetworkError> {
    let networks = docker
        .list_networks(Some(ListNetworksOptionsBuilder::new().build()))
        .await
        .map_err(|e| {
            if super::container::is_unreachable(&e) {
                UserNetworkError::Unreachable(e)
            } else {
                UserNetworkError::Docker {
                    action: "list",
                    name: "(all)".into(),
                    source: e,
                }
            }
        })?;
    Ok(networks
        .into_iter()
        .filter_map(|n| n.ipam?.config)
        .flatten()
        .filter_map(|c| c.subnet?.parse().ok())
        .collect())
}

/// The first /29 of `pool` that overlaps none of `taken`.
fn free_subnet(pool: Ipv4Net, taken: &HashSet<Ipv4Net>) -> Option<Ipv4Net> {
    pool.subnets(USER_NETWORK_PREFIX).ok()?.find(|candidate| {
        !taken
            .iter()
            .any(|t| t.contains(&candidate.network()) || candidate.contains(&t.network()))
    })
}

fn request(name: &str, who: &Identity, subnet: Ipv4Net) -> NetworkCreateRequest {
    let gateway: Ipv4Addr = subnet.hosts().next().unwrap_or(subnet.network());
    NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".into()),
        enable_ipv6: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(gateway.to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
        options: Some(HashMap::from([
            ("com.docker.network.bridge.name".into(), bridge_of(who.uid)),
            (
                "com.docker.network.bridge.enable_icc".into(),
                "false".into(),
            ),
            (
                "com.docker.network.bridge.enable_ip_masquerade".into(),
                "true".into(),
            ),
        ])),
        labels: Some(HashMap::from([
            (NETWORK_LABEL.into(), "user".into()),
            (NETWORK_USER_LABEL.into(), who.name.clone()),
            ("bastion.uid".into(), who.uid.to_string()),
        ])),
        ..Default::default()
    }
}

/// Removes `user`'s network (when their container is removed for good);
/// a network still in use or already gone is left as it is.
pub async fn remove(docker: &Docker, user: &str) {
    let name = name_of(user);
    match docker.remove_network(&name).await {
        Ok(()) => tracing::info!(user, network = %name, "removed the user's network"),
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => {
            tracing::warn!(user, network = %name, error = %e, "cannot remove the user's network")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_the_first_free_29s() {
        let pool: Ipv4Net = "172.31.0.0/16".parse().unwrap();
        let mut taken = HashSet::new();
        assert_eq!(
            free_subnet(pool, &taken),
            Some("172.31.0.0/29".parse().unwrap())
        );
        taken.insert("172.31.0.0/29".parse().unwrap());
        taken.insert("172.31.0.8/30".parse().unwrap());
        assert_eq!(
            free_subnet(pool, &taken),
            Some("172.31.0.16/29".parse().unwrap())
        );
        // A larger network elsewhere covering the start of the pool.
        taken.insert("172.31.0.0/24".parse().unwrap());
        assert_eq!(
            free_subnet(pool, &taken),
            Some("172.31.1.0/29".parse().unwrap())
        );
        let tiny: Ipv4Net = "10.0.0.0/28".parse().unwrap();
        let full: HashSet<Ipv4Net> = [
            "10.0.0.0/29".parse().unwrap(),
            "10.0.0.8/29".parse().unwrap(),
        ]
        .into_iter()
        .collect();
        assert_eq!(free_subnet(tiny, &full), None);
    }

    #[test]
    fn names_fit_docker_and_linux() {
        assert_eq!(name_of("alice"), "bastion-net-alice");
        assert!(bridge_of(u32::MAX).len() <= 15);
        let alice = Identity {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let request = request(
            "bastion-net-alice",
            &alice,
            "172.31.0.8/29".parse().unwrap(),
        );
        let options = request.options.unwrap();
        assert_eq!(options["com.docker.network.bridge.name"], "bst1000");
        assert_eq!(options["com.docker.network.bridge.enable_icc"], "false");
        assert_eq!(request.enable_ipv6, Some(false));
        let ipam = request.ipam.unwrap().config.unwrap();
        assert_eq!(ipam[0].gateway.as_deref(), Some("172.31.0.9"));
    }
}
