//! The IMDS emulator's routes (169.254.169.254): IMDSv2 tokens, listings,
//! the caller's own role (`iam/info`, `security-credentials/ROLE`), and the
//! allow-listed passthrough; with the bodies EC2 answers with.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use http::header::HeaderValue;
use http::{Method, Request, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::audit_events::Endpoint;
use crate::containers::ContainerIdentity;
use crate::imds_token::parse_ttl;
use crate::metadata_api::{
    Answer, CallerLookup, MetadataApi, TOKEN_HEADER, TTL_HEADER, json, refuse, render, text,
};
use crate::role::Role;
use crate::role_session::ResolvedSession;
use crate::secret::ExposeSecret;
use crate::sts::AssumeRole;

/// `YYYY-MM-DDTHH:MM:SSZ`, as EC2 writes times.
pub fn ec2_time(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .expect("formatting a UTC time cannot fail")
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsCredentials<'a> {
    code: &'static str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsError {
    code: String,
    message: String,
    last_updated: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsInfo {
    code: &'static str,
    last_updated: String,
    instance_profile_arn: String,
    instance_profile_id: String,
}

impl<L: CallerLookup, S: AssumeRole> MetadataApi<L, S> {
    pub(crate) async fn imds<B>(&self, request: &Request<B>, ip: Option<Ipv4Addr>) -> Answer {
        let headers = request.headers();
        let path = request.uri().path();
        let method = request.method();
        if path == "/latest/api/token" {
            if method != Method::PUT {
                return refuse("token", StatusCode::METHOD_NOT_ALLOWED);
            }
            // A token request relayed by some HTTP proxy in the container
            // is refused, as EC2 does.
            if headers.contains_key("x-forwarded-for") {
                return refuse("token", StatusCode::FORBIDDEN);
            }
            let ttl = match parse_ttl(headers.get(TTL_HEADER).map(HeaderValue::as_bytes)) {
                Ok(ttl) => ttl,
                Err(_) => return refuse("token", StatusCode::BAD_REQUEST),
            };
            let Some(caller) = self.caller(ip).await else {
                return refuse("unknown-caller", StatusCode::NOT_FOUND);
            };
            let token = self.tokens.issue(&caller.id, ttl, SystemTime::now());
            let mut response = text(StatusCode::OK, token.expose_secret().to_owned());
            response
                .headers_mut()
                .insert(TTL_HEADER, HeaderValue::from(ttl));
            return ("token", response);
        }
        if method != Method::GET && method != Method::HEAD {
            return refuse("bad-method", StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(caller) = self.caller(ip).await else {
            return refuse("unknown-caller", StatusCode::NOT_FOUND);
        };
        match headers.get(TOKEN_HEADER) {
            Some(token) => {
                if let Err(error) =
                    self.tokens
                        .verify(token.as_bytes(), &caller.id, SystemTime::now())
                {
                    tracing::debug!(container = %caller.name, %error, "IMDSv2 token refused");
                    return refuse("unauthorized", StatusCode::UNAUTHORIZED);
                }
            }
            None if self.settings.require_imdsv2 => {
                return refuse("unauthorized", StatusCode::UNAUTHORIZED);
            }
            None => {}
        }
        let Some(rest) = path.strip_prefix("/latest/") else {
            return match path {
                "/" => ("listing", text(StatusCode::OK, "latest")),
                _ => refuse("not-found", StatusCode::NOT_FOUND),
            };
        };
        let session = self.session_of(&caller);
        match rest {
            "" => ("listing", text(StatusCode::OK, self.root_listing())),
            "meta-data" | "meta-data/" => (
                "listing",
                text(StatusCode::OK, self.meta_data_listing(session.is_some())),
            ),
            "meta-data/iam" | "meta-data/iam/" => match session {
                Some(_) => (
                    "listing",
                    text(StatusCode::OK, "info\nsecurity-credentials/"),
                ),
                None => refuse("no-role", StatusCode::NOT_FOUND),
            },
            "meta-data/iam/security-credentials" | "meta-data/iam/security-credentials/" => {
                match session {
                    Some(s) => ("iam-role-list", text(StatusCode::OK, s.role.name.clone())),
                    None => refuse("no-role", StatusCode::NOT_FOUND),
                }
            }
            "meta-data/iam/info" => match session {
                Some(s) => ("iam-info", json(StatusCode::OK, &instance_profile(&s.role))),
                None => refuse("no-role", StatusCode::NOT_FOUND),
            },
            _ => {
                if let Some(name) = rest.strip_prefix("meta-data/iam/security-credentials/") {
                    return match session {
                        Some(s) if name == s.role.name => self.imds_credentials(&caller, &s).await,
                        _ => refuse("other-role", StatusCode::NOT_FOUND),
                    };
                }
                match self.upstream.allowed_entry(rest) {
                    Some(entry) => self.passthrough(entry).await,
                    None => refuse("not-found", StatusCode::NOT_FOUND),
                }
            }
        }
    }

    fn root_listing(&self) -> String {
        let mut items = vec!["meta-data"];
        if self
            .upstream
            .allowed()
            .iter()
            .any(|a| a.starts_with("dynamic/"))
        {
            items.insert(0, "dynamic");
        }
        items.join("\n")
    }

    fn meta_data_listing(&self, has_role: bool) -> String {
        let mut items: Vec<String> = Vec::new();
        if has_role {
            items.push("iam/".to_owned());
        }
        for entry in self.upstream.allowed() {
            if let Some(rest) = entry.strip_prefix("meta-data/") {
                let item = match rest.split_once('/') {
                    Some((dir, _)) => format!("{dir}/"),
                    None => rest.to_owned(),
                };
                if !items.contains(&item) {
                    items.push(item);
                }
            }
        }
        items.sort();
        items.join("\n")
    }

    async fn passthrough(&self, entry: &str) -> Answer {
        match self.upstream.get(entry).await {
            Ok(Some(body)) => ("passthrough", text(StatusCode::OK, body)),
            Ok(None) => refuse("passthrough", StatusCode::NOT_FOUND),
            Err(error) => {
                tracing::warn!(%error, entry, "passthrough to the real IMDS failed");
                refuse("passthrough", StatusCode::BAD_GATEWAY)
            }
        }
    }

    async fn imds_credentials(
        &self,
        caller: &ContainerIdentity,
        session: &ResolvedSession,
    ) -> Answer {
        let request = &session.request;
        match self.hand_out(caller, session, Endpoint::Imds).await {
            Ok((creds, handed)) => {
                // Rendered once per credential: the hot path only clones it.
                let body = handed.imds_body.get_or_init(|| {
                    render(&ImdsCredentials {
                        code: "Success",
                        last_updated: ec2_time(creds.issued_at),
                        kind: "AWS-HMAC",
                        access_key_id: &creds.access_key_id,
                        secret_access_key: creds.secret_access_key.expose_secret(),
                        token: creds.session_token.expose_secret(),
                        expiration: ec2_time(creds.expiration),
                    })
                });
                ("iam-credentials", text(StatusCode::OK, body.clone()))
            }
            Err(error) => {
                let code = if error.code() == "AccessDenied" {
                    "AssumeRoleUnauthorizedAccess".to_owned()
                } else {
                    error.code().to_owned()
                };
                // EC2's error form: 200 with a Code other than Success.
                let body = ImdsError {
                    code,
                    message: format!(
                        "no credentials are available for role {} right now; the bastion's metadata proxy log says why",
                        request.role_arn
                    ),
                    last_updated: ec2_time(SystemTime::now()),
                };
                ("iam-credentials-error", json(StatusCode::OK, &body))
            }
        }
    }
}

/// `iam/info`, synthesized for the container's role.
fn instance_profile(role: &Role) -> ImdsInfo {
    let digest = Sha256::digest(role.arn.as_bytes());
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = digest
        .iter()
        .take(17)
        .map(|b| ALPHABET[(b % 32) as usize] as char)
        .collect();
    let (prefix, _) = role.arn.split_once(":role/").unwrap_or((&role.arn, ""));
    ImdsInfo {
        code: "Success",
        last_updated: ec2_time(SystemTime::now()),
        instance_profile_arn: format!("{prefix}:instance-profile/{}", role.name),
        instance_profile_id: format!("AIPA{id}"),
    }
}
