//! TLS on the command line: the three flags every command that connects to a cluster takes
//! (`--ca-path`, `--cert-path`, `--key-path`, as TiKV's tools name them; also from the
//! environment, so a container's health check inherits them), and `rangekv cert`, which makes
//! a development CA and certificates.

use std::path::PathBuf;

use anyhow::{Context, Result};
use security::{SecurityConfig, SecurityManager};

/// TLS flags of a command. Set all three to connect with mutual TLS; on `pd` and `server`
/// they override the config file's `[security]` paths.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// CA certificate (PEM) the cluster's certificates are signed by.
    #[arg(long, env = "RANGEKV_CA_PATH")]
    pub ca_path: Option<PathBuf>,
    /// This process's certificate (PEM).
    #[arg(long, env = "RANGEKV_CERT_PATH")]
    pub cert_path: Option<PathBuf>,
    /// This process's private key (PEM).
    #[arg(long, env = "RANGEKV_KEY_PATH")]
    pub key_path: Option<PathBuf>,
}

impl TlsArgs {
    /// Overrides `cfg`'s paths with the flags given.
    pub fn apply(&self, cfg: &mut SecurityConfig) {
        if let Some(p) = &self.ca_path {
            cfg.ca_path = p.clone();
        }
        if let Some(p) = &self.cert_path {
            cfg.cert_path = p.clone();
        }
        if let Some(p) = &self.key_path {
            cfg.key_path = p.clone();
        }
    }

    /// The security of a client command: plaintext without flags, mutual TLS with all three.
    pub fn manager(&self) -> Result<SecurityManager> {
        let mut cfg = SecurityConfig::default();
        self.apply(&mut cfg);
        cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        SecurityManager::new(cfg).context("loading the TLS certificates")
    }
}

/// `rangekv cert`: issue a certificate (and the CA, if the directory has none).
#[derive(clap::Args)]
pub struct CertArgs {
    /// Directory of the CA (`ca.pem`, `ca-key.pem`) and the certificates it issues.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// File name of the certificate: `<name>.pem` and `<name>-key.pem`.
    #[arg(long, default_value = "node")]
    pub name: String,
    /// Common name of the certificate (what `cert-allowed-cn` lists).
    #[arg(long, default_value = "rangekv")]
    pub common_name: String,
    /// Hosts the certificate names (DNS names or IP addresses servers are dialled by),
    /// comma-separated. Default: localhost, 127.0.0.1, ::1.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
}

pub fn run_cert(args: CertArgs) -> Result<()> {
    let hosts = if args.hosts.is_empty() {
        security::certs::default_hosts()
    } else {
        args.hosts
    };
    let issued = security::certs::issue(&args.dir, &args.name, &args.common_name, &hosts)
        .with_context(|| format!("issuing a certificate in {}", args.dir.display()))?;
    println!("CA:          {}", issued.ca.display());
    println!(
        "certificate: {} (CN {}, hosts {})",
        issued.cert.display(),
        args.common_name,
        hosts.join(",")
    );
    println!("key:         {}", issued.key.display());
    println!(
        "use: --ca-path {} --cert-path {} --key-path {}",
        issued.ca.display(),
        issued.cert.display(),
        issued.key.display()
    );
    Ok(())
}
