//! Command lines of the binaries whose docs `bastionctl` writes besides
//! its own: `bastiond`'s arguments, and `bastion-shell`'s forms (described
//! here for its manual page only: the shell parses its arguments by hand,
//! [`crate::client::parse`], accepting exactly the forms sshd and login
//! use), and the writing of manual pages and shell completions.

use std::path::PathBuf;

pub use bastion_core::man_pages::write_man_pages;

use clap::{Arg, ArgAction, Command, CommandFactory, Parser};

/// The bastion session broker: runs each SSH login in the user's container.
#[derive(Debug, Parser)]
#[command(name = "bastiond", version)]
pub struct BastiondArgs {
    /// Configuration file (root-owned, not group/world-writable).
    #[arg(long, default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = crate::logging::Format::Text)]
    pub log_format: crate::logging::Format,
}

/// `bastion-shell`'s command line, for its manual page.
pub fn shell_command() -> Command {
    Command::new("bastion-shell")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The login shell of bastion's users: hands the session to bastiond, which runs it in the user's own container")
        .long_about(crate::client::USAGE)
        .arg(
            Arg::new("login")
                .short('l')
                .long("login")
                .action(ArgAction::SetTrue)
                .help("An interactive login shell (also -i, or no argument)"),
        )
        .arg(
            Arg::new("command")
                .short('c')
                .value_name("COMMAND")
                .help("Run COMMAND in the user's container (later arguments are ignored)"),
        )
}

/// The commands whose manual pages `bastionctl man` writes, besides
/// `bastionctl`'s own (which the binary adds: its parser lives there).
pub fn documented_commands() -> Vec<Command> {
    vec![BastiondArgs::command(), shell_command()]
}

/// Writes `shell`'s completion script for each of `commands` to `out`.
pub fn write_completions(
    shell: clap_complete::Shell,
    commands: Vec<Command>,
    out: &mut dyn std::io::Write,
) {
    for mut command in commands {
        let name = command.get_name().to_owned();
        clap_complete::generate(shell, &mut command, name, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binary_gets_a_manual_page_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(dir.path(), documented_commands()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["bastion-shell.1", "bastiond.1"]);
        let shell_page = std::fs::read_to_string(dir.path().join("bastion-shell.1")).unwrap();
        assert!(shell_page.contains("COMMAND"), "{shell_page}");
        let mut bash = Vec::new();
        write_completions(clap_complete::Shell::Bash, documented_commands(), &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        assert!(
            bash.contains("_bastiond()") && bash.contains("--log-format"),
            "{bash}"
        );
    }
}
