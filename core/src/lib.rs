//! What bastion's two daemons share, written once: the Docker contract
//! between the broker and the metadata proxy (labels, paths, URIs, the
//! Engine connection and its event stream), the config file, the audit
//! trail, secure file access, logging set-up and error-chain formatting.
//!
//! The broker, the login shell and the review CLI live in the `bastion`
//! crate; the metadata proxy in `bastion-metadata-proxy`. Both depend on
//! this crate and on nothing of each other.

#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod contract;
pub mod escape;
pub mod iam_role;
pub mod log_limit;
pub mod logging;
pub mod man_pages;
pub mod open_counts;
pub mod secure_file;
pub mod service_manager;
pub mod session_name;
