//! A development certificate authority and the certificates it signs (`rangekv cert`).
//!
//! A directory holds `ca.pem` and `ca-key.pem` (made on first use) and, per issued name,
//! `<name>.pem` and `<name>-key.pem`. Certificates carry the common name asked for and the
//! hosts (DNS names or IP addresses) servers are dialled by. Fit for tests, playgrounds and
//! trying TLS out; a production cluster's certificates come from the operator's own CA.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// What a directory of issued certificates is made of.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";

/// Paths of one issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Issued {
    /// The `[security]` section that uses this certificate.
    pub fn security_config(&self, allowed_cn: &[&str]) -> crate::SecurityConfig {
        crate::SecurityConfig {
            ca_path: self.ca.clone(),
            cert_path: self.cert.clone(),
            key_path: self.key.clone(),
            cert_allowed_cn: allowed_cn.iter().map(|s| s.to_string()).collect(),
        }
    }
}

fn err(e: rcgen::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes `contents` to `path` atomically (a reader sees the old or the new file, never half),
/// readable only by the owner.
fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    }
    fs::rename(&tmp, path)
}

/// Makes a CA in `dir` (`ca.pem`, `ca-key.pem`) unless one is there; returns the CA cert path.
pub fn ensure_ca(dir: &Path, common_name: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    if cert_path.exists() && key_path.exists() {
        return Ok(cert_path);
    }
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(err)?;
    write_private(&key_path, &key.serialize_pem())?;
    write_private(&cert_path, &cert.pem())?;
    Ok(cert_path)
}

/// Issues `<name>.pem` / `<name>-key.pem` in `dir`, signed by the CA there (made if missing),
/// for `common_name` and `hosts`; usable by servers and clients alike. Replaces an earlier
/// certificate of the same name (rotation).
pub fn issue(dir: &Path, name: &str, common_name: &str, hosts: &[String]) -> io::Result<Issued> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "ca" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad certificate name {name:?}"),
        ));
    }
    let ca = ensure_ca(dir, "rangekv development CA")?;
    let ca_key = KeyPair::from_pem(&fs::read_to_string(dir.join(CA_KEY))?).map_err(err)?;
    let ca_pem = fs::read_to_string(&ca)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(err)?;

    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let issued = Issued {
        ca,
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    // Key first: a reader that sees the new certificate must find its key (the manager also
    // keeps the previous pair while a mismatched one is on disk).
    write_private(&issued.key, &key.serialize_pem())?;
    write_private(&issued.cert, &cert.pem())?;
    Ok(issued)
}

/// The hosts a development certificate names by default: this machine by loopback.
pub fn default_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}
