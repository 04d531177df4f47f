//! bastion: the login shell (`bastion-shell`), the session broker (`bastiond`)
//! and the admin/review CLI (`bastionctl`).
//!
//! `unsafe` is denied crate-wide and allowed only in [`sys`]. What the
//! metadata proxy shares with the broker lives in `bastion_core` and is
//! re-exported here under the same paths.

pub use bastion_core::{
    audit, config, contract, iam_role, log_limit, logging, open_counts, secure_file,
    service_manager, session_name,
};

pub mod access;
pub mod broker;
pub mod cli;
pub mod client;
pub mod ctl;
pub mod doctor;
pub mod protocol;
pub mod recording;
pub mod review;
pub mod sys;
