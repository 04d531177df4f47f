//! The crate's only `unsafe`: taking ownership of file descriptors received
//! over SCM_RIGHTS. Every block says why it is sound.
#![allow(unsafe_code)]
