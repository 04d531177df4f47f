//! `bastionctl`: checks for ops and tools for security reviewers. The logic
//! lives in [`bastion::ctl`] and [`bastion::review`]; this only parses.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bastion::config::Config;
use bastion::review::{
    self, ListOptions, OutputFormat, PlayOptions, PruneOptions, ReviewContext, SearchOptions,
};
use clap::{Parser, Subcommand};
use time::OffsetDateTime;

/// Administer and review the bastion.
#[derive(Parser)]
#[command(name = "bastionctl", version)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = bastion::config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration file; names the bad key and line.
    Check {
        /// Print the effective value of one setting instead (for scripts):
        /// sshd.listen, bastiond.socket, bastiond.health_socket,
        /// bastiond.image, bastiond.network.name, bastiond.network.subnet,
        /// bastiond.network.users_subnet, metadata_proxy.port,
        /// metadata_proxy.admin_listen, recording.log_dir, recording.audit_log.
        #[arg(long, value_name = "KEY")]
        get: Option<String>,
    },
    /// Recorded sessions.
    #[command(subcommand)]
    Sessions(SessionsCmd),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Access as code: the access file (who, which keys, which IAM role,
    /// which clusters at which level).
    Access {
        /// The access file.
        #[arg(long, default_value = bastion::access::DEFAULT_PATH)]
        access: PathBuf,
        #[command(subcommand)]
        command: AccessCmd,
    },
    /// Check a running bastion end to end: one line per check (ok, warn,
    /// FAIL), each warn or FAIL with the command that fixes it. Exit 1 on
    /// any FAIL.
    Doctor {
        /// Machine-readable output (for monitoring).
        #[arg(long)]
        json: bool,
        /// Where install.sh put its helper scripts.
        #[arg(long, value_name = "DIR", default_value = bastion::doctor::DEFAULT_LIB_DIR)]
        lib_dir: PathBuf,
        /// The bastion sshd's config.
        #[arg(long, value_name = "FILE", default_value = bastion::doctor::DEFAULT_SSHD_CONFIG)]
        sshd_config: PathBuf,
    },
    /// Write the manual pages of bastionctl, bastiond and bastion-shell.
    Man {
        /// Directory to write them to (e.g. /usr/local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print shell completions for bastionctl, bastiond and bastion-shell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum SessionsCmd {
    /// List sessions (oldest first).
    List {
        #[arg(long)]
        user: Option<String>,
        /// RFC 3339, a date (2026-11-23) or an age (2h, 7d).
        #[arg(long, value_parser = review::parse_time)]
        since: Option<OffsetDateTime>,
        #[arg(long, value_parser = review::parse_time)]
        until: Option<OffsetDateTime>,
        #[arg(long)]
        container: Option<String>,
        /// Only sessions that ended with a non-zero exit code.
        #[arg(long)]
        exit_nonzero: bool,
        #[arg(long)]
        json: bool,
    },
    /// Everything about one session (ID or a unique prefix).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Replay a session in this terminal.
    Play {
        id: String,
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Longest pause, in seconds.
        #[arg(long)]
        idle_limit: Option<f64>,
    },
    /// Regex over what sessions showed (escapes stripped); exit 1 on no match.
    Search {
        pattern: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A self-contained HTML page with the player and the metadata.
    Export {
        id: String,
        /// Where to write the page (`-`: standard output, not a terminal).
        #[arg(long, value_name = "FILE")]
        html: PathBuf,
    },
    /// Delete old recordings (logged in the audit trail).
    Prune {
        #[arg(long, value_parser = review::parse_age)]
        older_than: Duration,
        /// Only this user's recordings.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum AccessCmd {
    /// Validate the access file; every problem with its line and key; exit 1 on any.
    Check,
    /// Show what apply would change; exit 0 when nothing, 2 when changes are pending.
    Plan {
        #[command(flatten)]
        iam: IamArgs,
    },
    /// Make the host match the access file (users, keys, locks), under a lock.
    Apply {
        #[command(flatten)]
        iam: IamArgs,
        /// Lock up to this many users at once (apply refuses to lock more
        /// than 5 users and a quarter of the group otherwise).
        #[arg(long, value_name = "N", default_value_t = 0)]
        allow_locks: usize,
    },
    /// Put a user into the access file (keys from FILE, enabled) and apply it.
    AddUser {
        name: String,
        /// Their public key(s), one a line (a .pub file).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Also a member of this access-file group (created without levels).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Write RBAC, EKS access entries or aws-auth, and IAM roles for review.
    Render {
        /// Output folder (created; an earlier render's files are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct IamArgs {
    /// Also the users' IAM roles, through the IAM API (default credentials).
    #[arg(long)]
    iam: bool,
    /// The IAM API's URL (default: the SDK's, or AWS_ENDPOINT_URL_IAM).
    #[arg(long, value_name = "URL", requires = "iam")]
    iam_endpoint: Option<String>,
}

impl IamArgs {
    fn options(&self) -> bastion::ctl::IamOptions {
        bastion::ctl::IamOptions {
            enabled: self.iam,
            endpoint: self.iam_endpoint.clone(),
        }
    }
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain and the recordings' hashes; exit 1 on tampering.
    Verify {
        /// The live audit log (default: [recording] audit_log) or its directory.
        path: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Access { access, command } = &cli.command {
        return access_command(&cli.config, access, command);
    }
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // `bastionctl sessions list | head` is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bastionctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// bastionctl's own command and the others `bastionctl` documents.
fn documented() -> Vec<clap::Command> {
    let mut commands = vec![<Cli as clap::CommandFactory>::command()];
    commands.extend(bastion::cli::documented_commands());
    commands
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match &cli.command {
        Command::Man { out } => {
            for page in bastion::cli::write_man_pages(out, documented())? {
                println!("wrote {}", page.display());
            }
            return Ok(true);
        }
        Command::Completions { shell } => {
            bastion::cli::write_completions(*shell, documented(), &mut std::io::stdout());
            return Ok(true);
        }
        _ => {}
    }
    if let Command::Doctor {
        json,
        lib_dir,
        sshd_config,
    } = &cli.command
    {
        let options = bastion::doctor::DoctorOptions {
            config: cli.config.clone(),
            lib_dir: lib_dir.clone(),
            sshd_config: sshd_config.clone(),
        };
        let report = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(bastion::doctor::run(&options));
        if *json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.text());
        }
        return Ok(!report.failed());
    }
    if let Command::Check { get: Some(key) } = &cli.command {
        let config = Config::load(&cli.config)?;
        return match bastion::ctl::get(&config, key) {
            Some(value) => {
                println!("{value}");
                Ok(true)
            }
            None => anyhow::bail!(
                "--get {key}: not a key it prints (one of: {})",
                bastion::ctl::gettable_keys().collect::<Vec<_>>().join(", ")
            ),
        };
    }
    if let Command::Check { .. } = cli.command {
        return match bastion::ctl::check(&cli.config) {
            Ok(summary) => {
                println!("{summary}");
                Ok(true)
            }
            Err(e) => {
                eprintln!("bastionctl: {e}");
                Ok(false)
            }
        };
    }
    let config = Config::load(&cli.config)?;
    let ctx = ReviewContext::from_config(&config.recording);
    let mut out = std::io::stdout().lock();
    let format = |json: bool| {
        if json {
            OutputFormat::Json
        } else {
            OutputFormat::Table
        }
    };
    let ok = match cli.command {
        Command::Check { .. }
        | Command::Doctor { .. }
        | Command::Man { .. }
        | Command::Completions { .. }
        | Command::Access { .. } => {
            unreachable!("handled above")
        }
        Command::Sessions(SessionsCmd::List {
            user,
            since,
            until,
            container,
            exit_nonzero,
            json,
        }) => {
            let opts = ListOptions {
                user,
                since,
                until,
                container,
                exit_nonzero,
                format: format(json),
            };
            review::list(&ctx, &opts, &mut out)?;
            true
        }
        Command::Sessions(SessionsCmd::Show { id, json }) => {
            review::show(&ctx, &id, format(json), &mut out)?;
            true
        }
        Command::Sessions(SessionsCmd::Play {
            id,
            speed,
            idle_limit,
        }) => {
            let opts = PlayOptions { speed, idle_limit };
            review::play(&ctx, &id, opts, &mut out, &mut std::io::stderr())?;
            true
        }
        Command::Sessions(SessionsCmd::Search {
            pattern,
            user,
            json,
        }) => {
            review::search(
                &ctx,
                &SearchOptions {
                    pattern,
                    user,
                    json,
                },
                &mut out,
            )? > 0
        }
        Command::Sessions(SessionsCmd::Export { id, html }) => {
            let stdout = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                review::StandardOutput::Terminal
            } else {
                review::StandardOutput::NotATerminal
            };
            review::export_html(&ctx, &id, &html, &mut out, stdout)?;
            true
        }
        Command::Sessions(SessionsCmd::Prune {
            older_than,
            user,
            dry_run,
        }) => {
            review::prune(
                &ctx,
                PruneOptions {
                    older_than,
                    user,
                    dry_run,
                },
                &mut out,
            )?;
            true
        }
        Command::Audit(AuditCmd::Verify { path }) => {
            review::verify_audit(&ctx, path.as_deref(), &mut out)?
        }
    };
    out.flush()?;
    Ok(ok)
}

/// `bastionctl access …`. Exit codes: 0 done (plan: nothing pending),
/// 1 the access file cannot be used (its problems, one a line) or a step
/// failed, 2 (plan only) changes are pending.
fn access_command(
    config: &std::path::Path,
    access: &std::path::Path,
    command: &AccessCmd,
) -> ExitCode {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    };
    let result = match command {
        AccessCmd::Check => bastion::ctl::access_check(config, access).map(|summary| {
            emit(&format!("{summary}\n"));
            ExitCode::SUCCESS
        }),
        AccessCmd::Render { out } => {
            bastion::ctl::access_render(config, access, out).map(|files| {
                for file in files {
                    emit(&format!("wrote {}\n", file.display()));
                }
                ExitCode::SUCCESS
            })
        }
        AccessCmd::Plan { iam } => runtime()
            .block_on(bastion::ctl::access_plan(config, access, &iam.options()))
            .map(|outcome| {
                emit(&outcome.shown);
                if outcome.changes == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                }
            }),
        AccessCmd::AddUser { name, key, groups } => runtime()
            .block_on(bastion::ctl::access_add_user(
                config, access, name, key, groups,
            ))
            .map(|outcome| {
                emit(&format!("{}Applied.\n", outcome.shown));
                ExitCode::SUCCESS
            }),
        AccessCmd::Apply { iam, allow_locks } => runtime()
            .block_on(bastion::ctl::access_apply(
                config,
                access,
                &iam.options(),
                *allow_locks,
            ))
            .map(|outcome| {
                emit(&format!("{}Applied.\n", outcome.shown));
                ExitCode::SUCCESS
            }),
    };
    result.unwrap_or_else(|e| {
        eprintln!("bastionctl: {e}");
        ExitCode::FAILURE
    })
}

/// Writes to standard output; a closed pipe (`plan | head`) is not an error.
fn emit(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
