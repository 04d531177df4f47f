//! Manual pages for every binary, generated from their clap parsers.

use std::path::{Path, PathBuf};

use clap::Command;

/// Writes the manual pages of `commands` (and each of their subcommands)
/// into `dir`; returns the files written.
pub fn write_man_pages(dir: &Path, commands: Vec<Command>) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    for command in commands {
        clap_mangen::generate_to(command, dir)?;
    }
    let mut written: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    written.sort();
    Ok(written)
}
