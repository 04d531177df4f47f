//! Setting up what a new container needs on the host before it exists: the
//! user's home (its own file system when limited), the account files and
//! the container-credentials token, and the user's network.

use std::collections::HashMap;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use sha2::{Digest, Sha256};

use super::accounts::AccountFiles;
use super::spec::{ContainerKind, Spec};
use super::{ContainerError, ContainerManager, home, is_unreachable, status_of};
use crate::broker::identity::Identity;
use crate::broker::user_network;
use crate::config::{BastiondConfig, UserSettings};
use crate::contract::labels;

impl ContainerManager {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create(
        &self,
        config: &BastiondConfig,
        who: &Identity,
        settings: &UserSettings,
        kind: ContainerKind,
        spec: Spec,
        name: &str,
        image_id: &str,
    ) -> Result<String, ContainerError> {
        self.prepare_home(config, who, settings).await?;
        let docker_err = |action, source| ContainerError::Docker {
            action,
            name: name.to_owned(),
            source,
        };
        let image = self.image_accounts.get(&self.docker, image_id).await?;
        let files = AccountFiles::of(&config.state_dir, &who.name);
        let who_owned = who.clone();
        let mut body = spec.body;
        if kind == ContainerKind::Transfers {
            // No credentials there: only the account files.
            tokio::task::spawn_blocking(move || files.write_accounts(&image, &who_owned))
                .await
                .expect("account files writer panicked")?;
        } else {
            self.prepare_credentials(config, who, &mut body, files, image, who_owned)
                .await?;
        }
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| docker_err("create", e))?;
        tracing::info!(user = %who.name, container = %name, id = %created.id, ?kind, "created container");
        Ok(created.id)
    }

    /// What a shell container needs besides its account files: its
    /// credentials token (label, environment, file) and the user's network.
    async fn prepare_credentials(
        &self,
        config: &BastiondConfig,
        who: &Identity,
        body: &mut bollard::models::ContainerCreateBody,
        files: AccountFiles,
        image: std::sync::Arc<super::accounts::ImageAccounts>,
        who_owned: Identity,
    ) -> Result<(), ContainerError> {
        let token = random_token();
        body.labels.get_or_insert_with(Default::default).insert(
            labels::CREDENTIALS_TOKEN_SHA256.into(),
            hex::encode(Sha256::digest(&token)),
        );
        // Debian 12's AWS CLI (2.9) ignores the token file, gets a 401 and
        // gives up instead of falling back to IMDS: give it the token too.
        // It is the user's own secret, like the file; only root sees the
        // container's environment from outside.
        body.env.get_or_insert_with(Default::default).push(format!(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN={}",
            String::from_utf8_lossy(&token)
        ));
        // The account files are in place before the container can start.
        tokio::task::spawn_blocking(move || files.write(&image, &who_owned, &token))
            .await
            .expect("account files writer panicked")?;
        user_network::ensure(&self.docker, &self.network_alloc, &config.network, who).await?;
        Ok(())
    }

    /// Makes the user's home ready (mounted, when it has a size limit).
    pub(super) async fn prepare_home(
        &self,
        config: &BastiondConfig,
        who: &Identity,
        settings: &UserSettings,
    ) -> Result<(), ContainerError> {
        let (home_root, state_dir) = (config.home_root.clone(), config.state_dir.clone());
        let (who, size) = (who.clone(), settings.limits.home);
        tokio::task::spawn_blocking(move || home::ensure(&home_root, &state_dir, &who, size))
            .await
            .expect("home preparation panicked")?;
        Ok(())
    }

    /// Creates the gateway network when missing: a bridge named after it,
    /// with no container, whose gateway address is where the metadata
    /// proxy listens for every user's network.
    pub async fn ensure_network(&self, config: &BastiondConfig) -> Result<(), ContainerError> {
        let net = &config.network;
        match self.docker.inspect_network(&net.name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) if is_unreachable(&e) => return Err(ContainerError::DockerUnavailable(e)),
            Err(source) => {
                return Err(ContainerError::Network {
                    name: net.name.clone(),
                    source,
                });
            }
        }
        let request = NetworkCreateRequest {
            name: net.name.clone(),
            driver: Some("bridge".into()),
            enable_ipv6: Some(false),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(net.subnet.to_string()),
                    gateway: Some(net.gateway().to_string()),
                    ..Default::default()
                }]),
                options: None,
            }),
            options: Some(HashMap::from([
                ("com.docker.network.bridge.name".into(), net.name.clone()),
                (
                    "com.docker.network.bridge.enable_icc".into(),
                    "false".into(),
                ),
                (
                    "com.docker.network.bridge.enable_ip_masquerade".into(),
                    "true".into(),
                ),
            ])),
            labels: Some(HashMap::from([(
                user_network::NETWORK_LABEL.into(),
                "gateway".into(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = %net.name, subnet = %net.subnet, "created network");
                Ok(())
            }
            // Created meanwhile by someone else.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(source) => Err(ContainerError::Network {
                name: net.name.clone(),
                source,
            }),
        }
    }
}

/// The container-credentials token: 32 random bytes, hex.
fn random_token() -> Vec<u8> {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes).into_bytes()
}
