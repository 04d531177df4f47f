//! The three levels as ClusterRoles, and the bindings of the Kubernetes
//! groups in use (`bastion:CLUSTER:LEVEL` cluster-wide,
//! `bastion:CLUSTER:NAMESPACE:LEVEL` in one namespace, through a
//! RoleBinding to the same ClusterRole).
//!
//! RBAC only adds, so "everything except roles and bindings" is spelled
//! out: Kubernetes' own API groups but `rbac.authorization.k8s.io`, plus
//! the cluster's `extra_api_groups`, with the verbs that read and write
//! objects and never `bind`, `escalate`, `impersonate`, `approve` or
//! `sign` (each a way to more rights than the level's).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::yaml_documents;
use crate::access::grants::{Level, Scope, kubernetes_group};
use crate::access::{AccessFile, Cluster};

/// Kubernetes' own API groups (besides the core group), except
/// `rbac.authorization.k8s.io`.
pub const API_GROUPS: &[&str] = &[
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "metrics.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
];

/// What the user level reads in the core group: everything but secrets.
pub const CORE_READABLE: &[&str] = &[
    "componentstatuses",
    "configmaps",
    "endpoints",
    "events",
    "limitranges",
    "namespaces",
    "nodes",
    "persistentvolumeclaims",
    "persistentvolumes",
    "pods",
    "pods/log",
    "podtemplates",
    "replicationcontrollers",
    "resourcequotas",
    "serviceaccounts",
    "services",
];

pub const READ_VERBS: &[&str] = &["get", "list", "watch"];
pub const WRITE_VERBS: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

/// The ClusterRole of `level` (`bastion:LEVEL`).
pub fn cluster_role(level: Level, cluster: &Cluster) -> Value {
    let groups = |core: bool| -> Vec<String> {
        core.then(String::new)
            .into_iter()
            .chain(API_GROUPS.iter().map(|g| (*g).to_owned()))
            .chain(cluster.extra_api_groups.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let read_write: Vec<&str> = READ_VERBS.iter().chain(WRITE_VERBS).copied().collect();
    let rules = match level {
        Level::Admin => json!([
            { "apiGroups": ["*"], "resources": ["*"], "verbs": ["*"] },
            { "nonResourceURLs": ["*"], "verbs": ["*"] },
        ]),
        Level::Poweruser => json!([
            { "apiGroups": groups(true), "resources": ["*"], "verbs": read_write },
            { "nonResourceURLs": ["*"], "verbs": ["get"] },
        ]),
        Level::User => json!([
            { "apiGroups": [""], "resources": CORE_READABLE, "verbs": READ_VERBS },
            { "apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"] },
            { "apiGroups": groups(false), "resources": ["*"], "verbs": READ_VERBS },
            { "nonResourceURLs": ["*"], "verbs": ["get"] },
        ]),
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": { "name": format!("bastion:{level}"), "labels": labels() },
        "rules": rules,
    })
}

fn labels() -> Value {
    json!({ "app.kubernetes.io/managed-by": "bastion" })
}

/// The (scope, level) pairs some enabled user has on `cluster`, sorted.
pub fn bindings_in_use(access: &AccessFile, cluster: &Cluster) -> BTreeSet<(Scope, Level)> {
    access
        .enabled_users()
        .filter_map(|user| access.levels_of(user).remove(&cluster.name))
        .flatten()
        .collect()
}

/// The binding of one group to its level's ClusterRole.
pub fn binding(cluster: &Cluster, scope: &Scope, level: Level) -> Value {
    let group = kubernetes_group(&cluster.name, scope, level);
    let mut metadata = json!({ "name": group, "labels": labels() });
    let kind = match scope {
        Scope::Cluster => "ClusterRoleBinding",
        Scope::Namespace(ns) => {
            metadata["namespace"] = json!(ns);
            "RoleBinding"
        }
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": format!("bastion:{level}"),
        },
        "subjects": [{
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": group,
        }],
    })
}

/// `CLUSTER/rbac.yaml`.
pub fn render(access: &AccessFile, cluster: &Cluster) -> String {
    let mut docs: Vec<Value> = Level::ALL
        .iter()
        .map(|level| cluster_role(*level, cluster))
        .collect();
    docs.extend(
        bindings_in_use(access, cluster)
            .iter()
            .map(|(scope, level)| binding(cluster, scope, *level)),
    );
    yaml_documents(&docs)
}
