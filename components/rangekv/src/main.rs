//! `rangekv`: one binary for every role.
//!
//! - `rangekv pd`: a placement-driver node.
//! - `rangekv server`: a store.
//! - `rangekv playground`: a local cluster of child processes, optionally with a demo workload.
//! - `rangekv ctl`: inspect a cluster and run raw KV commands.
//! - `rangekv bench`: a raw KV load generator.
//! - `rangekv verify`: a Jepsen-style fault campaign against a local cluster, with checked
//!   histories.
//! - `rangekv cert`: a development CA and certificates for mutual TLS.

mod bench;
mod ctl;
mod playground;
mod tls;
mod verify;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "rangekv",
    version,
    about = "A distributed transactional key-value store"
)]
struct Cli {
    /// Log filter (e.g. `info`, `debug`); `RUST_LOG` also works. Default: `info` for `pd` and
    /// `server`, `warn` for the other commands.
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log lines as text for people (default) or as JSON objects, one a line, for log
    /// collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a placement-driver node.
    Pd(PdArgs),
    /// Run a store.
    Server(ServerArgs),
    /// Start a local cluster (PD + stores, each its own process) and keep it running.
    Playground(playground::PlaygroundArgs),
    /// Inspect a cluster and run raw KV commands.
    Ctl(ctl::CtlArgs),
    /// Generate raw KV load against a cluster.
    Bench(bench::BenchArgs),
    /// Run a workload against a local cluster under faults and check its history; exits 0
    /// only when the history is valid.
    Verify(verify::VerifyArgs),
    /// GET an HTTP endpoint of a node (e.g. `http://127.0.0.1:20180/ready`) and print its
    /// answer; exits 0 only on a 2xx status. For health checks in containers, whose image
    /// holds no other tool.
    Probe {
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
        #[command(flatten)]
        tls: tls::TlsArgs,
    },
    /// Make a development CA (once) and a certificate it signs, for mutual TLS.
    Cert(tls::CertArgs),
}

#[derive(clap::Args)]
struct PdArgs {
    /// TOML config file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Member name.
    #[arg(long)]
    name: Option<String>,
    /// Client address to listen on (host:port).
    #[arg(long)]
    addr: Option<String>,
    /// Address advertised to clients.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Replicas per region.
    #[arg(long)]
    max_replicas: Option<u32>,
    /// Every member of a replicated PD: `pd1=http://host:port,pd2=...` (each member's client
    /// address, which also carries PD-to-PD Raft traffic). Omit for a single node.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// `new` (default): a member with an empty data directory bootstraps a new group.
    /// `existing`: it refuses to start instead (use it when restarting members of a running
    /// group). Ignored when the data directory holds data.
    #[arg(long, value_parser = ["new", "existing"])]
    initial_cluster_state: Option<String>,
    #[command(flatten)]
    tls: tls::TlsArgs,
    /// Print the effective configuration and every problem in it (unknown keys, bad values,
    /// an unusable data directory), then exit without starting: 0 if it is valid, 1 if not.
    #[arg(long)]
    config_check: bool,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// TOML config file (see `etc/server.toml`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (host:port).
    #[arg(long)]
    addr: Option<String>,
    /// Address advertised to other nodes and clients.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Address of the HTTP status server (`/metrics`, `/status`).
    #[arg(long)]
    status_addr: Option<String>,
    /// Print the effective configuration and every problem in it (unknown keys, bad values,
    /// an unusable data directory), then exit without starting: 0 if it is valid, 1 if not.
    #[arg(long)]
    config_check: bool,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// PD endpoints, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pd: Option<Vec<String>>,
    #[command(flatten)]
    tls: tls::TlsArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    // Colors only on a terminal: log files and collectors get plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().with_current_span(false).try_init(),
    };
}

fn read_file(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Makes any panic, on any thread, end the process: a store whose poller or apply worker died
/// would otherwise keep leading and voting for regions it no longer drives or applies. Once
/// the process is gone, the other replicas elect new leaders. The panic is logged first.
fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(%info, "panic: aborting the process");
        print(info);
        std::process::abort();
    }));
}

fn main() -> Result<()> {
    abort_on_panic();
    // Fail points named in the FAILPOINTS environment variable (test builds only; without the
    // `failpoints` feature this does nothing).
    let _fail_points = fail::FailScenario::setup();
    let cli = Cli::parse();
    let log = |default: &str| init_logging(cli.log.as_deref().unwrap_or(default), cli.log_format);
    match cli.cmd {
        Cmd::Pd(args) => {
            log("info");
            run_pd(args)
        }
        Cmd::Server(args) => {
            log("info");
            run_server(args)
        }
        Cmd::Playground(args) => {
            log("warn");
            playground::run(args)
        }
        Cmd::Ctl(args) => {
            log("warn");
            ctl::run(args)
        }
        Cmd::Bench(args) => {
            log("warn");
            bench::run(args)
        }
        Cmd::Probe {
            url,
            timeout_secs,
            tls,
        } => {
            log("warn");
            probe(&url, &tls, std::time::Duration::from_secs(timeout_secs))
        }
        Cmd::Cert(args) => {
            log("warn");
            tls::run_cert(args)
        }
        Cmd::Verify(args) => {
            log("warn");
            let status = verify::run(args)?;
            if status != 0 {
                std::process::exit(status);
            }
            Ok(())
        }
    }
}

/// `rangekv probe`: see [`Cmd::Probe`].
fn probe(url: &str, tls: &tls::TlsArgs, timeout: std::time::Duration) -> Result<()> {
    let security = tls.manager()?;
    let answer = runtime()?.block_on(async {
        let http = security
            .http_client_builder()
            .no_proxy()
            .timeout(timeout)
            .build()?;
        let resp = http.get(url).send().await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.text().await.unwrap_or_default()))
    });
    match answer {
        Ok((status, body)) => {
            println!("{body}");
            if !status.is_success() {
                eprintln!("{url}: {status}");
                std::process::exit(1);
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            std::process::exit(1);
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn run_pd(args: PdArgs) -> Result<()> {
    let check = args.config_check;
    let cfg = pd_config(args);
    if check {
        finish_config_check(cfg, |c| c.problems(), |c| c.data_dir.clone());
    }
    let cfg = cfg?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
    runtime()?.block_on(async move {
        let pd = placement_driver::start(cfg).await?;
        tracing::info!(addr = %pd.addr(), "PD member started");
        shutdown_signal().await;
        tracing::info!("PD shutting down");
        pd.shutdown().await?;
        Ok(())
    })
}

/// The PD member's configuration: the file's, overridden by flags (not validated).
fn pd_config(args: PdArgs) -> Result<placement_driver::PdConfig> {
    let mut cfg: placement_driver::PdConfig = match &args.config {
        Some(p) => toml::from_str(&read_file(p)?)
            .with_context(|| format!("invalid config {}", p.display()))?,
        None => placement_driver::PdConfig::default(),
    };
    if let Some(v) = args.name {
        cfg.name = v;
    }
    if let Some(v) = args.addr {
        cfg.listen_addr = v;
    }
    if let Some(v) = args.advertise_addr {
        cfg.advertise_addr = v;
    }
    if let Some(v) = args.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = args.max_replicas {
        cfg.max_replicas = v;
    }
    if let Some(v) = args.initial_cluster {
        cfg.initial_cluster = v;
    }
    if let Some(v) = args.initial_cluster_state {
        cfg.initial_cluster_state = v
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid --initial-cluster-state: {e}"))?;
    }
    args.tls.apply(&mut cfg.security);
    Ok(cfg)
}

fn run_server(args: ServerArgs) -> Result<()> {
    let check = args.config_check;
    let cfg = server_config(args);
    if check {
        finish_config_check(cfg, |c| c.problems(), |c| c.data_dir.clone());
    }
    let cfg = cfg?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
    runtime()?.block_on(async move {
        let node = server::node::Node::start(cfg).await?;
        tracing::info!(store_id = node.store_id(), addr = %node.addr(), "store serving");
        shutdown_signal().await;
        tracing::info!("store shutting down");
        node.shutdown().await;
        Ok(())
    })
}

/// The store's configuration: the file's, overridden by flags (not validated beyond what
/// parsing checks: unknown keys and malformed values).
fn server_config(args: ServerArgs) -> Result<server::ServerConfig> {
    let mut cfg = match &args.config {
        Some(p) => toml::from_str(&read_file(p)?)
            .map_err(|e| anyhow::anyhow!("{}: invalid config: {e}", p.display()))?,
        None => server::ServerConfig::default(),
    };
    if let Some(v) = args.addr {
        cfg.addr = v;
    }
    if let Some(v) = args.advertise_addr {
        cfg.advertise_addr = v;
    }
    if let Some(v) = args.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = args.pd {
        cfg.pd_endpoints = v;
    }
    if let Some(v) = args.status_addr {
        cfg.status_addr = v;
    }
    args.tls.apply(&mut cfg.security);
    Ok(cfg)
}

/// Ends `--config-check`: prints the effective configuration `cfg` (as TOML) or why there is
/// none, then every problem — its own (`problems`) and its data directory's (`data_dir`);
/// exits 0 if there are none, else 1.
fn finish_config_check<C: serde::Serialize>(
    cfg: Result<C>,
    problems: impl FnOnce(&C) -> Vec<String>,
    data_dir: impl FnOnce(&C) -> PathBuf,
) -> ! {
    let checked = cfg.and_then(|cfg| {
        let mut found = problems(&cfg);
        found.extend(dir_problem("data_dir", &data_dir(&cfg)));
        Ok((toml::to_string_pretty(&cfg)?, found))
    });
    let problems = match checked {
        Ok((effective, problems)) => {
            println!("{effective}");
            problems
        }
        Err(e) => vec![format!("{e:#}")],
    };
    if problems.is_empty() {
        println!("config check: ok");
        std::process::exit(0);
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    eprintln!("config check: {} problem(s)", problems.len());
    std::process::exit(1)
}

/// Why `dir` cannot serve as the data directory named `what`, if it cannot: it is not a
/// directory, or neither it nor (when it does not exist yet) its nearest existing ancestor
/// takes a new file.
fn dir_problem(what: &str, dir: &std::path::Path) -> Option<String> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(std::path::Path::new("."));
    if !existing.is_dir() {
        return Some(format!(
            "{what} {}: {} is not a directory",
            dir.display(),
            existing.display()
        ));
    }
    let base = if existing.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        existing
    };
    match tempfile::tempfile_in(base) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "{what} {}: cannot create files in {}: {e}",
            dir.display(),
            base.display()
        )),
    }
}
