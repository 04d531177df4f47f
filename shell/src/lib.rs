//! bastion: the login shell (`bastion-shell`), the session broker (`bastiond`)
//! and the admin/review CLI (`bastionctl`).
//!
//! `unsafe` is denied crate-wide and allowed only in [`sys`].

pub mod audit;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod contract;
pub mod ctl;
pub mod log_limit;
pub mod logging;
pub mod open_counts;
pub mod protocol;
pub mod recording;
pub mod review;
pub mod secure_file;
pub mod sys;
