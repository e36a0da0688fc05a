//! Handshakes against a real listener: who is admitted, who is refused, and rotation of the
//! certificate files while the listener runs.

use std::path::Path;
use std::time::Duration;

use security::certs::{self, Issued};
use security::client::connect_tls;
use security::{accept, Alpn, SecurityConfig, SecurityManager};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn hosts() -> Vec<String> {
    certs::default_hosts()
}

fn manager(issued: &Issued, allowed_cn: &[&str]) -> SecurityManager {
    SecurityManager::new(issued.security_config(allowed_cn)).expect("load certificates")
}

/// An echo server on a fresh port, served with `security`.
async fn echo_server(security: &SecurityManager) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut accepted = accept(listener, security, Alpn::Grpc);
    tokio::spawn(async move {
        use axum::serve::Listener as _;
        loop {
            let (mut conn, _) = accepted.accept().await;
            tokio::spawn(async move {
                let mut buf = [0u8; 4];
                if conn.read_exact(&mut buf).await.is_ok() {
                    let _ = conn.write_all(&buf).await;
                    let _ = conn.flush().await;
                }
            });
        }
    });
    port
}

/// Sends "ping" through TLS as `client` and expects it back. (In TLS 1.3 the server judges the
/// client's certificate after the client's side of the handshake completed, so a refusal shows
/// on the first read.)
async fn ping(client: &SecurityManager, port: u16) -> std::io::Result<()> {
    let fut = async {
        let mut tls = connect_tls(client, "127.0.0.1", port, Alpn::Grpc).await?;
        tls.write_all(b"ping").await?;
        tls.flush().await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("a handshake neither completes nor fails")
}

#[tokio::test]
async fn a_client_of_the_same_ca_is_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let server = certs::issue(dir.path(), "server", "server", &hosts()).unwrap();
    let client = certs::issue(dir.path(), "client", "client", &hosts()).unwrap();
    let port = echo_server(&manager(&server, &[])).await;
    ping(&manager(&client, &[]), port).await.unwrap();
}

#[tokio::test]
async fn a_plaintext_client_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = certs::issue(dir.path(), "server", "server", &hosts()).unwrap();
    let port = echo_server(&manager(&server, &[])).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(b"ping").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf))
        .await
        .expect("the server neither answers nor closes");
    // Closed or reset, and never an echo.
    assert!(
        read.is_err() || !buf.starts_with(b"ping"),
        "echoed: {buf:?}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let server = certs::issue(dir.path(), "server", "server", &hosts()).unwrap();
    let stranger = certs::issue(other.path(), "client", "client", &hosts()).unwrap();
    let port = echo_server(&manager(&server, &[])).await;
    // The stranger trusts the cluster's CA (so its own check passes) but holds a certificate
    // of another CA.
    let mut cfg = stranger.security_config(&[]);
    cfg.ca_path = server.ca.clone();
    let stranger = SecurityManager::new(cfg).unwrap();
    assert!(ping(&stranger, port).await.is_err());
}

#[tokio::test]
async fn a_disallowed_common_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = certs::issue(dir.path(), "server", "server", &hosts()).unwrap();
    let allowed = certs::issue(dir.path(), "client", "rangekv-client", &hosts()).unwrap();
    let other = certs::issue(dir.path(), "intruder", "intruder", &hosts()).unwrap();
    let port = echo_server(&manager(&server, &["rangekv-client", "server"])).await;
    ping(&manager(&allowed, &[]), port).await.unwrap();
    assert!(ping(&manager(&other, &[]), port).await.is_err());
}

#[tokio::test]
async fn a_server_certificate_must_name_the_host_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let server = certs::issue(dir.path(), "server", "server", &["db.example".into()]).unwrap();
    let client = certs::issue(dir.path(), "client", "client", &hosts()).unwrap();
    let port = echo_server(&manager(&server, &[])).await;
    assert!(ping(&manager(&client, &[]), port).await.is_err());
}

fn copy(from: &Issued, to: &Issued) {
    // Key first, as `certs::issue` does; each file replaced atomically.
    for (a, b) in [
        (&from.key, &to.key),
        (&from.cert, &to.cert),
        (&from.ca, &to.ca),
    ] {
        let tmp = b.with_extension("new");
        std::fs::copy(a, &tmp).unwrap();
        std::fs::rename(&tmp, b).unwrap();
    }
}

#[tokio::test]
async fn certificates_are_rotated_by_replacing_the_files() {
    let old = tempfile::tempdir().unwrap();
    let new = tempfile::tempdir().unwrap();
    let server = certs::issue(old.path(), "server", "server", &hosts()).unwrap();
    let old_client = certs::issue(old.path(), "client", "client", &hosts()).unwrap();
    let new_server = certs::issue(new.path(), "server", "server", &hosts()).unwrap();
    let new_client = certs::issue(new.path(), "client", "client", &hosts()).unwrap();
    let security = manager(&server, &[]);
    let port = echo_server(&security).await;
    ping(&manager(&old_client, &[]), port).await.unwrap();
    assert!(ping(&manager(&new_client, &[]), port).await.is_err());

    // The cluster moves to a new CA: the server's files are replaced while it runs.
    copy(&new_server, &server);
    ping(&manager(&new_client, &[]), port).await.unwrap();
    assert!(ping(&manager(&old_client, &[]), port).await.is_err());

    // A replacement that does not load (a key that is not PEM) keeps the loaded certificates.
    std::fs::write(&server.key, "not a key").unwrap();
    ping(&manager(&new_client, &[]), port).await.unwrap();
    // Nor does a key that is not the certificate's (as while the files are being replaced).
    std::fs::copy(&old_client.key, &server.key).unwrap();
    ping(&manager(&new_client, &[]), port).await.unwrap();
}

#[test]
fn the_security_section_reads_tikv_names_and_reports_problems() {
    let dir = tempfile::tempdir().unwrap();
    let issued = certs::issue(dir.path(), "node", "node", &hosts()).unwrap();
    let text = format!(
        "ca-path = {:?}\ncert-path = {:?}\nkey-path = {:?}\ncert-allowed-cn = [\"node\"]\n",
        issued.ca, issued.cert, issued.key
    );
    let cfg: SecurityConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg, issued.security_config(&["node"]));
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());

    assert!(toml::from_str::<SecurityConfig>("ca-pth = \"x\"").is_err());
    let partial = SecurityConfig {
        ca_path: issued.ca.clone(),
        ..Default::default()
    };
    let problems = partial.problems();
    assert!(
        problems.iter().any(|p| p.contains("cert-path")),
        "{problems:?}"
    );
    let missing = SecurityConfig {
        key_path: Path::new("/nonexistent/key.pem").into(),
        ..issued.security_config(&[])
    };
    assert!(missing
        .validate()
        .unwrap_err()
        .contains("/nonexistent/key.pem"));
    let cn_only = SecurityConfig {
        cert_allowed_cn: vec!["x".into()],
        ..Default::default()
    };
    assert!(cn_only.validate().is_err());
    assert!(SecurityConfig::default().validate().is_ok());
}

#[test]
fn common_names_are_read_from_issued_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let issued = certs::issue(dir.path(), "node", "store-1", &hosts()).unwrap();
    let pem = std::fs::read(&issued.cert).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    assert_eq!(
        security::server::common_names(&der).unwrap(),
        vec!["store-1"]
    );
    assert!(certs::issue(dir.path(), "../x", "x", &hosts()).is_err());
}
