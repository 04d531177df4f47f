//! How each cluster learns who a user is: EKS access entries (the API's
//! requests and the `aws eks` commands), or the `aws-auth` ConfigMap.
//!
//! Either way the role maps to the Kubernetes groups of the user's levels
//! and to the username `bastion:{{SessionName}}`: the session name is the
//! user (the metadata proxy asks STS for it), so the cluster's audit log
//! names the person, not only the role.

use serde_json::{Value, json};

use super::{RenderError, yaml_documents};
use crate::access::{AccessFile, Cluster};
use crate::config::Config;
use crate::session_name::session_name;

/// The Kubernetes username of every bastion user's role.
pub const USERNAME: &str = "bastion:{{SessionName}}";

/// One user's access entry on one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    pub user: String,
    pub principal_arn: String,
    pub kubernetes_groups: Vec<String>,
}

/// The entries of the enabled users who have a level on `cluster`, in file
/// order.
pub fn access_entries(
    access: &AccessFile,
    config: &Config,
    cluster: &Cluster,
) -> Result<Vec<AccessEntry>, RenderError> {
    let mut entries = Vec::new();
    for user in access.enabled_users() {
        let groups = access.kubernetes_groups(user, &cluster.name);
        if groups.is_empty() {
            continue;
        }
        let role = access
            .effective_role(config, user)
            .map_err(|e| RenderError::Invalid(format!("user {}: {e}", user.name)))?;
        entries.push(AccessEntry {
            user: user.name.clone(),
            principal_arn: role.arn,
            kubernetes_groups: groups.into_iter().collect(),
        });
    }
    Ok(entries)
}

/// `access-entries.json`: the bodies of CreateAccessEntry requests.
pub fn entries_json(entries: &[AccessEntry]) -> String {
    let bodies: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "principalArn": e.principal_arn,
                "kubernetesGroups": e.kubernetes_groups,
                "username": USERNAME,
                "type": "STANDARD",
                "tags": { "bastion:user": e.user, "bastion:session-name": session_name(&e.user) },
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&bodies).expect("entries serialize");
    text.push('\n');
    text
}

/// `access-entries.sh`: the same entries as `aws eks` commands.
pub fn entries_commands(cluster: &Cluster, entries: &[AccessEntry]) -> String {
    let mut out = format!(
        "#!/bin/sh\n\
         # EKS access entries of cluster {name} ({eks} in {region}), written by\n\
         # `bastionctl access render`. The levels are the ClusterRoles of\n\
         # rbac.yaml, bound to the Kubernetes groups below, so no EKS access\n\
         # policy is associated (associate-access-policy would add AWS's own\n\
         # rights on top of them). An existing entry is updated with\n\
         # `aws eks update-access-entry` and the same groups and username.\n\
         set -eu\n",
        name = cluster.name,
        eks = cluster.eks_name(),
        region = cluster.region,
    );
    for entry in entries {
        out.push_str(&format!(
            "\n# {user}\naws eks create-access-entry --region {region} --cluster-name {eks} \\\n    --principal-arn {arn} --type STANDARD \\\n    --username {username} \\\n    --kubernetes-groups {groups}\n",
            user = entry.user,
            region = quote(&cluster.region),
            eks = quote(cluster.eks_name()),
            arn = quote(&entry.principal_arn),
            username = quote(USERNAME),
            groups = entry
                .kubernetes_groups
                .iter()
                .map(|g| quote(g))
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    out
}

/// `aws-auth.yaml`: the whole ConfigMap, nodes' roles first (a ConfigMap
/// without them would cut the nodes off the cluster).
pub fn aws_auth(
    access: &AccessFile,
    config: &Config,
    cluster: &Cluster,
) -> Result<String, RenderError> {
    let mut map_roles: Vec<Value> = cluster
        .node_roles
        .iter()
        .map(|arn| {
            json!({
                "rolearn": without_path(arn),
                "username": "system:node:{{EC2PrivateDNSName}}",
                "groups": ["system:bootstrappers", "system:nodes"],
            })
        })
        .collect();
    for entry in access_entries(access, config, cluster)? {
        map_roles.push(json!({
            "rolearn": without_path(&entry.principal_arn),
            "username": USERNAME,
            "groups": entry.kubernetes_groups,
        }));
    }
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "aws-auth",
            "namespace": "kube-system",
            "labels": { "app.kubernetes.io/managed-by": "bastion" },
        },
        "data": {
            "mapRoles": serde_yaml_ng::to_string(&map_roles).expect("mapRoles serialize"),
        },
    });
    Ok(yaml_documents(&[config_map]))
}

/// aws-auth matches role ARNs without their IAM path
/// (`role/team/x` → `role/x`), a documented EKS limitation.
fn without_path(arn: &str) -> String {
    match arn.split_once(":role/") {
        Some((head, path)) => format!("{head}:role/{}", path.rsplit('/').next().unwrap_or(path)),
        None => arn.to_owned(),
    }
}

/// A POSIX shell single-quoted word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_auth_drops_the_role_path() {
        assert_eq!(
            without_path("arn:aws:iam::123456789012:role/team/alice"),
            "arn:aws:iam::123456789012:role/alice"
        );
        assert_eq!(
            without_path("arn:aws:iam::123456789012:role/alice"),
            "arn:aws:iam::123456789012:role/alice"
        );
    }

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
        assert_eq!(quote(USERNAME), "'bastion:{{SessionName}}'");
    }
}
