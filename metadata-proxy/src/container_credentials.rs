//! The container-credentials endpoint (169.254.170.2/v1/credentials, what
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` points SDKs at): the container's
//! own token required, its role's credentials in the ECS form.

use std::net::Ipv4Addr;

use http::{Method, Request, StatusCode};
use serde::Serialize;

use crate::audit_events::Endpoint;
use crate::imds::ec2_time;
use crate::metadata_api::{Answer, CallerLookup, MetadataApi, json, refuse, render, text};
use crate::secret::ExposeSecret;
use crate::sts::AssumeRole;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerCredentials<'a> {
    role_arn: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
    account_id: &'a str,
}

#[derive(Serialize)]
struct ContainerError<'a> {
    code: &'a str,
    message: String,
}

impl<L: CallerLookup, S: AssumeRole> MetadataApi<L, S> {
    pub(crate) async fn container_credentials<B>(
        &self,
        request: &Request<B>,
        ip: Option<Ipv4Addr>,
    ) -> Answer {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return refuse("container-credentials", StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(caller) = self.caller(ip).await else {
            return refuse("unknown-caller", StatusCode::NOT_FOUND);
        };
        let error = |status: StatusCode, code: &str, message: &str| {
            (
                "container-credentials",
                json(
                    status,
                    &ContainerError {
                        code,
                        message: message.to_owned(),
                    },
                ),
            )
        };
        let Some(token) = request.headers().get(http::header::AUTHORIZATION) else {
            return error(
                StatusCode::UNAUTHORIZED,
                "MissingToken",
                "send the token from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE in the Authorization header",
            );
        };
        if !caller.token_matches(token.as_bytes()) {
            return error(
                StatusCode::FORBIDDEN,
                "InvalidToken",
                "the Authorization token is not this container's",
            );
        }
        let Some(session) = self.session_of(&caller) else {
            return error(
                StatusCode::NOT_FOUND,
                "NoRole",
                "this container has no IAM role",
            );
        };
        let role = &session.role;
        match self
            .hand_out(&caller, &session, Endpoint::ContainerCredentials)
            .await
        {
            Ok((creds, handed)) => {
                let body = handed.container_body.get_or_init(|| {
                    render(&ContainerCredentials {
                        role_arn: &role.arn,
                        access_key_id: &creds.access_key_id,
                        secret_access_key: creds.secret_access_key.expose_secret(),
                        token: creds.session_token.expose_secret(),
                        expiration: ec2_time(creds.expiration),
                        account_id: &role.account_id,
                    })
                });
                ("container-credentials", text(StatusCode::OK, body.clone()))
            }
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                e.code(),
                "no credentials are available right now; the bastion's metadata proxy log says why",
            ),
        }
    }
}
