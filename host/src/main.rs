//! `callhost`: the PBX module host's command line.

use std::path::PathBuf;

use anyhow::Result;
use callhost::{commands, http, simulate, Host};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "callhost", version, about = "PBX module host")]
struct Cli {
    /// The data directory (database, modules, instances, logs).
    #[arg(long, global = true, env = "CALLHOST_DATA", default_value = "./data")]
    data: PathBuf,
    /// How the host's own log (stderr) is written: `text` for people,
    /// `json` for log shippers (one JSON object a line).
    #[arg(
        long,
        global = true,
        env = "CALLHOST_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Install, list and remove module packages.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Configured instances of modules.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// The PBX directory: users, groups, numbers, address book, state.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Keys whose package signatures this host accepts.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// A user's call list, newest first.
    Calls {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a call scenario through the engine and the active instances.
    Simulate { scenario: PathBuf },
    /// Serve the PBX on SIP (registrar, calls, anchored RTP) until SIGTERM.
    Serve,
    /// The authenticated HTTP admin API and its tokens.
    #[command(subcommand)]
    Api(ApiCommand),
    /// Administrators of the web UI.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Certificates for SIP over TLS.
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Write a self-signed certificate and key for a test setup
    /// (`<data>/tls/sip-cert.pem`, `sip-key.pem`).
    SelfSigned {
        /// A DNS name or IP address the certificate is for (repeatable;
        /// default: localhost and the IP of `sip.listen`).
        #[arg(long = "name")]
        names: Vec<String>,
        /// The directory to write to.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Add an administrator. The password is read from standard input
    /// (asked for twice on a terminal, without echo; one line otherwise).
    Add { name: String },
    /// Set an administrator's password (read as for `add`); their
    /// sessions end.
    Password { name: String },
    /// List administrators.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an administrator; their sessions end.
    Remove { name: String },
}

#[derive(Subcommand)]
enum ApiCommand {
    /// Serve the HTTP admin API until SIGTERM or SIGINT.
    Serve {
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Tokens for the API's `Authorization: Bearer` header.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it; it is shown only this once (the host
    /// keeps its SHA-256).
    Create { name: String },
    /// List tokens: names and creation times.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: requests with it are refused from now on.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum ModuleCommand {
    /// Install a package; an installed module of the same id is replaced and
    /// its instances keep their configuration.
    Install {
        file: PathBuf,
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// List installed modules with version and ABI.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a module (refused while it has instances, unless --with-instances).
    Remove {
        id: String,
        /// Delete the module's instances too (export them first).
        #[arg(long)]
        with_instances: bool,
    },
}

#[derive(Subcommand)]
enum InstanceCommand {
    /// Create an instance of an installed module (active unless --inactive).
    Create {
        module: String,
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        description: Option<String>,
        /// Create it deactivated.
        #[arg(long)]
        inactive: bool,
    },
    /// Replace an instance's configuration (refused with the field named).
    Configure { name: String, file: PathBuf },
    /// Activate an instance (also clears a fault: another try).
    Activate { name: String },
    /// Deactivate an instance; its configuration stays.
    Deactivate { name: String },
    /// Delete an instance; its files are kept aside under instances/.deleted/.
    Delete { name: String },
    /// Move an instance to a 1-based position in the execution order.
    Order { name: String, position: usize },
    /// List instances in execution order with status and level.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The configuration in force, defaults filled in.
    Show { name: String },
    /// Read the instance's log, optionally only down to a level.
    Log {
        name: String,
        #[arg(long)]
        level: Option<String>,
    },
    /// Set an instance's log level: ERROR, WARN, INFO, DEBUG or TRACE.
    SetLevel { name: String, level: String },
    /// Print an instance (configuration, description, level) as TOML.
    Export { name: String },
    /// Create an instance from an exported file.
    Import {
        file: PathBuf,
        /// Overwrite an existing instance of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// An instance's own assets (prompts such as a recording notice):
    /// add FILE, list, remove FILE.
    Asset {
        #[command(subcommand)]
        command: AssetCommand,
    },
    /// Run a module's admin action; prints JSON.
    Action {
        name: String,
        action: String,
        /// Passed to the module as they are, `--flags` included.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AssetCommand {
    /// Copy a sound file in (checked to decode); a module names it
    /// `instance/<file name>`.
    Add { name: String, file: PathBuf },
    /// The instance's assets.
    List { name: String },
    /// Delete an asset.
    Remove { name: String, asset: String },
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Replace the directory from a TOML file (call lists are kept).
    Load { file: PathBuf },
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Trust a public key file (e.g. target/modules/signing-key.pub).
    Add { key_file: PathBuf },
}

fn main() {
    let cli = Cli::parse();
    // The API server logs its requests (info) unless told otherwise.
    let default_filter = match cli.command {
        Command::Api(ApiCommand::Serve { .. }) => "warn,callhost::http=info",
        Command::Serve => "warn,callhost=info,callhost_sip=info",
        _ => "warn",
    };
    let log = init_logging(cli.log_format, default_filter);
    let change = cli.command.change();
    let data = cli.data.clone();
    let result = run(cli);
    if let Some((action, target)) = change {
        audit_cli_change(&data, action, target, &result);
    }
    // Instance log lines are written by a thread of their own, and so is
    // the host's log: both are flushed before the process ends.
    callhost::instance_log::flush(std::time::Duration::from_secs(2));
    drop(log);
    match result {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        }
    }
}

/// The host's own log on stderr: `CALLHOST_LOG` (or `default_filter`)
/// says what, `format` how. Lines are handed to a writer thread (never
/// waiting for stderr: a stalled reader would stall calls otherwise; lines
/// beyond its buffer are dropped instead). Colours only on a terminal,
/// and not with `NO_COLOR`. The returned guard flushes the log when dropped.
fn init_logging(
    format: LogFormat,
    default_filter: &str,
) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal as _;
    // `CALLHOST_LOG=` (empty) means the default.
    let filter = std::env::var("CALLHOST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| tracing_subscriber::EnvFilter::try_new(value).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_filter));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("callhost-log")
        .finish(std::io::stderr());
    report_dropped_lines(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(colour).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .init(),
    }
    guard
}

/// Says on stderr, at most every ten seconds, how many log lines the
/// writer dropped: a lost line is known to be lost. Its own thread; it may
/// wait for stderr, nothing else waits for it.
fn report_dropped_lines(counter: tracing_appender::non_blocking::ErrorCounter) {
    let spawned = std::thread::Builder::new()
        .name("callhost-log-drops".into())
        .spawn(move || {
            let mut reported = 0;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(10));
                let dropped = counter.dropped_lines();
                if dropped > reported {
                    eprintln!(
                        "callhost: {} log lines dropped (stderr did not keep up), {dropped} in all",
                        dropped - reported
                    );
                    reported = dropped;
                }
            }
        });
    if let Err(error) = spawned {
        eprintln!("callhost: cannot watch for dropped log lines: {error}");
    }
}

fn run(cli: Cli) -> Result<String> {
    let mut host = Host::open(&cli.data)?;
    let host_ref = &host;
    Ok(match cli.command {
        Command::Module(command) => match command {
            ModuleCommand::Install {
                file,
                allow_unsigned,
            } => commands::module_install(host_ref, &file, allow_unsigned)?,
            ModuleCommand::List { json } => commands::module_list(host_ref, json)?,
            ModuleCommand::Remove { id, with_instances } => {
                commands::module_remove(host_ref, &id, with_instances)?
            }
        },
        Command::Instance(command) => match command {
            InstanceCommand::Create {
                module,
                name,
                config,
                description,
                inactive,
            } => commands::instance_create(
                host_ref,
                &module,
                &name,
                config.as_deref(),
                description.as_deref(),
                inactive,
            )?,
            InstanceCommand::Configure { name, file } => {
                commands::instance_configure(host_ref, &name, &file)?
            }
            InstanceCommand::Activate { name } => {
                host.db.set_active(&name, true)?;
                format!("activated {name}")
            }
            InstanceCommand::Deactivate { name } => {
                host.db.set_active(&name, false)?;
                format!("deactivated {name}")
            }
            InstanceCommand::Delete { name } => commands::instance_delete(host_ref, &name)?,
            InstanceCommand::Order { name, position } => {
                host.db.reorder(&name, position)?;
                format!("{name} is now at position {position}")
            }
            InstanceCommand::List { json } => commands::instance_list(host_ref, json)?,
            InstanceCommand::Show { name } => commands::instance_show(host_ref, &name)?,
            InstanceCommand::Log { name, level } => {
                commands::instance_log(host_ref, &name, level.as_deref())?
            }
            InstanceCommand::SetLevel { name, level } => {
                commands::instance_set_level(host_ref, &name, &level)?
            }
            InstanceCommand::Export { name } => commands::instance_export(host_ref, &name)?,
            InstanceCommand::Import { file, replace } => {
                commands::instance_import(host_ref, &file, replace)?
            }
            InstanceCommand::Asset { command } => match command {
                AssetCommand::Add { name, file } => {
                    commands::instance_asset_add(host_ref, &name, &file)?
                }
                AssetCommand::List { name } => commands::instance_asset_list(host_ref, &name)?,
                AssetCommand::Remove { name, asset } => {
                    commands::instance_asset_remove(host_ref, &name, &asset)?
                }
            },
            InstanceCommand::Action { name, action, args } => {
                commands::instance_action(host_ref, &name, &action, args)?
            }
        },
        Command::Directory(DirectoryCommand::Load { file }) => {
            commands::directory_load(&mut host, &file)?
        }
        Command::Trust(TrustCommand::Add { key_file }) => {
            let path = callhost::library::trust(&host.data, &key_file)?;
            format!("trusted {}", path.display())
        }
        Command::Calls { user, json } => commands::call_list(host_ref, &user, json)?,
        Command::Simulate { scenario } => {
            let scenario = simulate::Scenario::load(&scenario)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            simulate::run(host_ref, &scenario, &mut out, &mut std::io::stderr())?;
            String::new()
        }
        Command::Serve => {
            callhost::serve::run(host, |banner| {
                println!("{banner}");
                use std::io::Write as _;
                std::io::stdout().flush().ok();
            })?;
            String::new()
        }
        Command::Api(ApiCommand::Serve { listen }) => {
            http::serve_api(host, listen)?;
            String::new()
        }
        Command::Admin(command) => match command {
            AdminCommand::Add { name } => commands::admin_add(host_ref, &name, &read_password()?)?,
            AdminCommand::Password { name } => {
                commands::admin_password(host_ref, &name, &read_password()?)?
            }
            AdminCommand::List { json } => commands::admin_list(host_ref, json)?,
            AdminCommand::Remove { name } => commands::admin_remove(host_ref, &name)?,
        },
        Command::Api(ApiCommand::Token(command)) => match command {
            TokenCommand::Create { name } => {
                let token = commands::api_token_create(host_ref, &name)?;
                eprintln!("created API token {name}; it is shown only this once:");
                token
            }
            TokenCommand::List { json } => commands::api_token_list(host_ref, json)?,
            TokenCommand::Revoke { name } => commands::api_token_revoke(host_ref, &name)?,
        },
        Command::Tls(TlsCommand::SelfSigned { names, out, force }) => {
            commands::tls_self_signed(host_ref, &names, out.as_deref(), force)?
        }
    })
}

impl Command {
    /// What a command that changes something changes, for the audit log
    /// (`None`: it only reads, or it is a server whose requests are
    /// audited one by one).
    fn change(&self) -> Option<(String, String)> {
        let change = |action: &str, target: &str| Some((action.to_string(), target.to_string()));
        match self {
            Command::Module(ModuleCommand::Install { file, .. }) => {
                change("module install", &file.display().to_string())
            }
            Command::Module(ModuleCommand::Remove { id, .. }) => change("module remove", id),
            Command::Module(ModuleCommand::List { .. }) => None,
            Command::Instance(command) => match command {
                InstanceCommand::Create { name, .. } => change("instance create", name),
                InstanceCommand::Configure { name, .. } => change("instance configure", name),
                InstanceCommand::Activate { name } => change("instance activate", name),
                InstanceCommand::Deactivate { name } => change("instance deactivate", name),
                InstanceCommand::Delete { name } => change("instance delete", name),
                InstanceCommand::Order { name, .. } => change("instance order", name),
                InstanceCommand::SetLevel { name, .. } => change("instance set-level", name),
                InstanceCommand::Import { file, .. } => {
                    change("instance import", &file.display().to_string())
                }
                InstanceCommand::Asset {
                    command: AssetCommand::Add { name, .. },
                } => change("instance asset add", name),
                InstanceCommand::Asset {
                    command: AssetCommand::Remove { name, .. },
                } => change("instance asset remove", name),
                // An action may change the module's state (purge, rotate-key).
                InstanceCommand::Action { name, action, .. } => {
                    change(&format!("instance action {action}"), name)
                }
                InstanceCommand::List { .. }
                | InstanceCommand::Show { .. }
                | InstanceCommand::Log { .. }
                | InstanceCommand::Export { .. }
                | InstanceCommand::Asset {
                    command: AssetCommand::List { .. },
                } => None,
            },
            Command::Directory(DirectoryCommand::Load { file }) => {
                change("directory load", &file.display().to_string())
            }
            Command::Trust(TrustCommand::Add { key_file }) => {
                change("trust add", &key_file.display().to_string())
            }
            Command::Api(ApiCommand::Token(TokenCommand::Create { name })) => {
                change("api token create", name)
            }
            Command::Api(ApiCommand::Token(TokenCommand::Revoke { name })) => {
                change("api token revoke", name)
            }
            Command::Admin(AdminCommand::Add { name }) => change("admin add", name),
            Command::Admin(AdminCommand::Password { name }) => change("admin password", name),
            Command::Admin(AdminCommand::Remove { name }) => change("admin remove", name),
            Command::Tls(TlsCommand::SelfSigned { .. }) => change("tls self-signed", ""),
            // Calls on the stored directory fill the users' call lists.
            Command::Simulate { scenario } => change("simulate", &scenario.display().to_string()),
            Command::Api(ApiCommand::Token(TokenCommand::List { .. }))
            | Command::Api(ApiCommand::Serve { .. })
            | Command::Admin(AdminCommand::List { .. })
            | Command::Calls { .. }
            | Command::Serve => None,
        }
    }
}

/// A change made with the CLI goes to the audit log as one made over HTTP
/// does: who (`cli:$USER (uid N)`), what, on what, how it ended. A log that cannot
/// be written is said on stderr; the change itself stands.
fn audit_cli_change(
    data: &std::path::Path,
    action: String,
    target: String,
    result: &Result<String>,
) {
    let outcome = match result {
        Ok(_) => "ok".to_string(),
        Err(error) => format!("error: {error:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    // The process's user id is what the system vouches for; $USER is what
    // the environment says.
    let uid = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").map_or_else(|_| "?".into(), |m| m.uid().to_string())
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "?".into());
    let entry = callhost::db::AuditEntry {
        id: 0,
        at: callhost::db::now(),
        actor: format!("cli:{user} (uid {uid})"),
        source: "local".into(),
        action,
        target,
        outcome,
    };
    let written = callhost::db::Db::open(data).and_then(|db| db.audit(&entry));
    if let Err(error) = written {
        eprintln!("warning: the audit log was not written: {error:#}");
    }
}

/// A new password: from a terminal without echo, twice; else the first
/// line of standard input (scripts).
fn read_password() -> Result<String> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            anyhow::bail!("the two passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
