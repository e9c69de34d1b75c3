//! TLS to the PostgreSQL warehouse against a real server (PG_TEST_URL, as in
//! tests/engine_postgres.rs): `sslmode=require` straight to the server when it has TLS on, and
//! every certificate check — the server's, and the client certificate a server may ask for —
//! through a TLS front of our own: certificates made with the `openssl` command for the test,
//! the SSLRequest answered and the session handed to the real server, as a managed database's
//! TLS-terminating proxy does.

mod pg_common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crmsync::store::postgres::PostgresStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

/// The first eight bytes a client sends to ask for TLS.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A database of its own on the PG_TEST_URL server, dropped at the end.
struct TestDatabase {
    admin_url: String,
    name: String,
    user: String,
    upstream: SocketAddr,
}

impl TestDatabase {
    async fn create(label: &str) -> Option<TestDatabase> {
        let admin_url = pg_common::admin_url("PostgreSQL TLS tests")?;
        let config: tokio_postgres::Config = admin_url.parse().expect("PG_TEST_URL parses");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            other => panic!("PG_TEST_URL must name a TCP host for these tests, not {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("PG_TEST_URL's host resolves")
            .next()
            .expect("an address");
        let user = config.get_user().unwrap_or("postgres").to_string();
        let name = format!("crmsync_tls_{label}_{}", std::process::id());
        let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .unwrap_or_else(|error| panic!("cannot reach PG_TEST_URL {admin_url}: {error}"));
        tokio::spawn(connection);
        for statement in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            client
                .batch_execute(&statement)
                .await
                .expect("creates a test database");
        }
        Some(TestDatabase {
            admin_url,
            name,
            user,
            upstream,
        })
    }

    async fn drop_it(self) {
        let (client, connection) = tokio_postgres::connect(&self.admin_url, NoTls)
            .await
            .expect("reconnects");
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drops the test database");
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| {
            panic!("these tests make certificates with the openssl command, which did not run: {error} — install openssl")
        });
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A certificate authority and a certificate it issued, with its key.
struct Certificates {
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
}

/// A certificate authority and a server certificate it issued for `names` (DNS names and IP
/// addresses, as subjectAltName entries like `DNS:localhost`).
fn certificates(dir: &Path, label: &str, names: &str) -> Certificates {
    issued(dir, label, names, "serverAuth")
}

/// A certificate authority and a client certificate it issued.
fn client_certificates(dir: &Path, label: &str) -> Certificates {
    issued(dir, label, "DNS:crmsync", "clientAuth")
}

/// A certificate authority and a certificate it issued for `names` and `usage` (an
/// extendedKeyUsage: `serverAuth`, `clientAuth`).
fn issued(dir: &Path, label: &str, names: &str, usage: &str) -> Certificates {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca, ca_key) = (format!("{label}-ca.pem"), format!("{label}-ca.key"));
    let subject = format!("/CN=crmsync test CA {label}");
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca]);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &args);
    let (csr, key, cert) = (
        format!("{label}.csr"),
        format!("{label}.key"),
        format!("{label}.pem"),
    );
    let mut args = vec!["req", "-subj", "/CN=crmsync test leaf"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    let extensions = format!("{label}.ext");
    std::fs::write(
        dir.join(&extensions),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\nsubjectAltName={names}\n"
        ),
    )
    .expect("writes the extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-extfile",
            &extensions,
        ],
    );
    Certificates {
        ca: dir.join(ca),
        certificate: dir.join(cert),
        key: dir.join(key),
    }
}

/// A self-signed server certificate (its own root, as PostgreSQL's documentation makes one)
/// for `names`: (certificate, key).
fn self_signed(dir: &Path, names: &str) -> Certificates {
    let san = format!("subjectAltName={names}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "self.key",
            "-out",
            "self.pem",
            "-addext",
            &san,
        ],
    );
    Certificates {
        ca: dir.join("self.pem"),
        certificate: dir.join("self.pem"),
        key: dir.join("self.key"),
    }
}

/// A TLS front for the real server: answers the SSLRequest, makes the handshake with
/// `certificates`, then hands the session to `upstream`. Counts finished handshakes.
async fn tls_front(certificates: &Certificates, upstream: SocketAddr) -> (u16, Arc<AtomicUsize>) {
    front(Some(certificates), None, upstream).await
}

/// A TLS front, as [`tls_front`], that asks every client for a certificate issued by the
/// authority in `client_ca` and refuses a handshake without one.
async fn client_checking_front(
    certificates: &Certificates,
    client_ca: &Path,
    upstream: SocketAddr,
) -> (u16, Arc<AtomicUsize>) {
    front(Some(certificates), Some(client_ca), upstream).await
}

/// A server that says yes to TLS but cannot make a handshake (it answers the SSLRequest with
/// `S`, then closes), and takes a client that starts without TLS through to `upstream`.
async fn broken_tls_front(upstream: SocketAddr) -> u16 {
    front(None, None, upstream).await.0
}

async fn front(
    certificates: Option<&Certificates>,
    client_ca: Option<&Path>,
    upstream: SocketAddr,
) -> (u16, Arc<AtomicUsize>) {
    let Some(certificates) = certificates else {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut first = [0u8; 8];
                    if client.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    if first == SSL_REQUEST {
                        let _ = client.write_all(b"S").await;
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    if server.write_all(&first).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        return (port, Arc::new(AtomicUsize::new(0)));
    };
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&certificates.certificate)
        .expect("reads the server certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("parses it");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&certificates.key)
        .expect("reads the server key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for root in
                rustls::pki_types::CertificateDer::pem_file_iter(path).expect("reads the client CA")
            {
                roots.add(root.expect("parses it")).expect("a usable root");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let port = listener.local_addr().expect("address").port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if client.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
                    return;
                }
                if client.write_all(b"S").await.is_err() {
                    return;
                }
                let Ok(mut secured) = acceptor.accept(client).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut secured, &mut server).await;
            });
        }
    });
    (port, handshakes)
}

fn url(database: &TestDatabase, host: &str, port: u16, tls: &str) -> String {
    format!(
        "postgres://{}@{host}:{port}/{}?{tls}",
        database.user, database.name
    )
}

#[tokio::test]
async fn certificates_are_checked_as_each_sslmode_says() {
    let Some(database) = TestDatabase::create("checks").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let good = certificates(dir.path(), "good", "DNS:localhost,IP:127.0.0.1");
    let other = certificates(dir.path(), "other", "DNS:localhost,IP:127.0.0.1");
    let misnamed = certificates(dir.path(), "misnamed", "DNS:db.example.com");
    let vocabulary = pg_common::shipped_vocabulary();
    let (port, handshakes) = tls_front(&good, database.upstream).await;
    let root = |certificates: &Certificates| certificates.ca.display().to_string();

    // Checked chain and name, by DNS name and by IP address: the warehouse opens (and
    // migrates) through the TLS front.
    for host in ["localhost", "127.0.0.1"] {
        let tls = format!("sslmode=verify-full&sslrootcert={}", root(&good));
        PostgresStore::connect(&url(&database, host, port, &tls), None, &vocabulary)
            .await
            .unwrap_or_else(|error| panic!("verify-full to {host}: {error}"));
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 2);

    // Unchecked modes encrypt all the same.
    for tls in ["sslmode=require", "sslmode=prefer", ""] {
        PostgresStore::connect(&url(&database, "localhost", port, tls), None, &vocabulary)
            .await
            .unwrap_or_else(|error| panic!("{tls:?}: {error}"));
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 5);

    // A server certificate from another authority is refused by every checking mode,
    // including `require` given a root file (as libpq).
    for mode in ["verify-full", "verify-ca", "require"] {
        let tls = format!("sslmode={mode}&sslrootcert={}", root(&other));
        let error =
            PostgresStore::connect(&url(&database, "localhost", port, &tls), None, &vocabulary)
                .await
                .expect_err("a certificate from an unknown authority");
        let message = error.to_string();
        assert!(
            message.contains("certificate") && message.contains("UnknownIssuer"),
            "{mode}: {message}"
        );
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 5);

    // A certificate for another host: verify-full refuses it, verify-ca takes it.
    let (misnamed_port, _) = tls_front(&misnamed, database.upstream).await;
    let tls = format!("sslmode=verify-full&sslrootcert={}", root(&misnamed));
    let error = PostgresStore::connect(
        &url(&database, "127.0.0.1", misnamed_port, &tls),
        None,
        &vocabulary,
    )
    .await
    .expect_err("a certificate for another name");
    assert!(error.to_string().contains("not valid for name"), "{error}");
    let tls = format!("sslmode=verify-ca&sslrootcert={}", root(&misnamed));
    PostgresStore::connect(
        &url(&database, "localhost", misnamed_port, &tls),
        None,
        &vocabulary,
    )
    .await
    .unwrap_or_else(|error| panic!("verify-ca ignores the name: {error}"));
    // ... but not the chain: a wrong authority with a wrong name is refused.
    let tls = format!("sslmode=verify-ca&sslrootcert={}", root(&other));
    let error = PostgresStore::connect(
        &url(&database, "127.0.0.1", misnamed_port, &tls),
        None,
        &vocabulary,
    )
    .await
    .expect_err("a certificate from an unknown authority, for another name");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");

    // A self-signed server certificate given as its own root.
    let own = tempfile::tempdir().expect("temp dir");
    let selfsigned = self_signed(own.path(), "DNS:localhost");
    let (self_port, _) = tls_front(&selfsigned, database.upstream).await;
    let tls = format!("sslmode=verify-full&sslrootcert={}", root(&selfsigned));
    PostgresStore::connect(
        &url(&database, "localhost", self_port, &tls),
        None,
        &vocabulary,
    )
    .await
    .unwrap_or_else(|error| panic!("a self-signed certificate as its own root: {error}"));
    let error = PostgresStore::connect(
        &url(&database, "127.0.0.1", self_port, &tls),
        None,
        &vocabulary,
    )
    .await
    .expect_err("its name is still checked");
    assert!(error.to_string().contains("not valid for name"), "{error}");

    database.drop_it().await;
}

#[tokio::test]
async fn prefer_goes_on_without_tls_when_the_handshake_fails_and_require_does_not() {
    let Some(database) = TestDatabase::create("fallback").await else {
        return;
    };
    let vocabulary = pg_common::shipped_vocabulary();
    let port = broken_tls_front(database.upstream).await;
    // By address: a name with several addresses reports only the last one's failure.
    for tls in ["sslmode=prefer", ""] {
        PostgresStore::connect(&url(&database, "127.0.0.1", port, tls), None, &vocabulary)
            .await
            .unwrap_or_else(|error| panic!("{tls:?} falls back: {error}"));
    }
    let error = PostgresStore::connect(
        &url(&database, "127.0.0.1", port, "sslmode=require"),
        None,
        &vocabulary,
    )
    .await
    .expect_err("require does not fall back");
    assert!(error.to_string().contains("TLS"), "{error}");
    database.drop_it().await;
}

#[tokio::test]
async fn require_is_tls_with_the_server_itself_and_disable_is_not() {
    let Some(database) = TestDatabase::create("direct").await else {
        return;
    };
    let (client, connection) = tokio_postgres::connect(&database.admin_url, NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    let ssl: String = client
        .query_one("SHOW ssl", &[])
        .await
        .expect("asks")
        .get(0);
    if ssl != "on" {
        eprintln!(
            "skipped: the PG_TEST_URL server has ssl = {ssl}; the certificate checks above still ran through the test's TLS front"
        );
        database.drop_it().await;
        return;
    }
    let vocabulary = pg_common::shipped_vocabulary();
    let (host, port) = (database.upstream.ip().to_string(), database.upstream.port());
    for (tls, encrypted) in [("sslmode=require", true), ("sslmode=disable", false)] {
        let store = PostgresStore::connect(&url(&database, &host, port, tls), None, &vocabulary)
            .await
            .unwrap_or_else(|error| panic!("{tls}: {error}"));
        let seen = store.is_encrypted().await.expect("asks the server");
        assert_eq!(seen, encrypted, "{tls}");
    }
    database.drop_it().await;
}

#[tokio::test]
async fn a_client_certificate_is_shown_to_a_server_that_asks_for_one() {
    let Some(database) = TestDatabase::create("client").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let server = certificates(dir.path(), "server", "DNS:localhost,IP:127.0.0.1");
    let client = client_certificates(dir.path(), "client");
    let stranger = client_certificates(dir.path(), "stranger");
    for key in [&client.key, &stranger.key] {
        private(key);
    }
    let vocabulary = pg_common::shipped_vocabulary();
    let (port, handshakes) = client_checking_front(&server, &client.ca, database.upstream).await;
    let with = |certificates: &Certificates, mode: &str| {
        format!(
            "{mode}&sslcert={}&sslkey={}",
            certificates.certificate.display(),
            certificates.key.display()
        )
    };

    // With the certificate the front's authority issued, in a checking and an unchecked mode.
    let checked = format!("sslmode=verify-full&sslrootcert={}", server.ca.display());
    for mode in [checked.as_str(), "sslmode=require"] {
        let tls = with(&client, mode);
        PostgresStore::connect(&url(&database, "localhost", port, &tls), None, &vocabulary)
            .await
            .unwrap_or_else(|error| panic!("{mode} with the client certificate: {error}"));
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 2);

    // Without one, or with one from another authority, the server refuses the handshake;
    // the error says what to do.
    for (tls, says) in [
        (checked.clone(), "add sslcert=PATH&sslkey=PATH"),
        (
            with(&stranger, &checked),
            "the server refused the client certificate (sslcert)",
        ),
    ] {
        let error =
            PostgresStore::connect(&url(&database, "localhost", port, &tls), None, &vocabulary)
                .await
                .expect_err("the server wants a certificate of its authority");
        let message = error.to_string();
        assert!(
            message.contains("received fatal alert") && message.contains(says),
            "{tls}: {message}"
        );
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 2);
    database.drop_it().await;
}

#[test]
fn client_certificate_files_are_checked_before_any_connection() {
    use crmsync::store::postgres_tls::TlsSettings;
    let dir = tempfile::tempdir().expect("temp dir");
    let client = client_certificates(dir.path(), "files");
    let settings = |certificate: &Path, key: &Path| {
        let url = format!(
            "postgres://u@db/w?sslmode=require&sslcert={}&sslkey={}",
            certificate.display(),
            key.display()
        );
        TlsSettings::from_url(&url).expect("parameters parse").0
    };

    // Why check_files refuses a pair.
    let refusal = |certificate: &Path, key: &Path| {
        settings(certificate, key)
            .check_files()
            .expect_err("the pair is refused")
            .to_string()
    };
    let chmod = |mode: u32| {
        std::fs::set_permissions(&client.key, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };

    // A key others can read is refused, with the fix.
    chmod(0o644);
    let message = refusal(&client.certificate, &client.key);
    assert!(
        message.contains("(mode 0644)") && message.contains("chmod 600"),
        "{message}"
    );
    private(&client.key);
    settings(&client.certificate, &client.key)
        .check_files()
        .expect("a private key and its certificate");
    // A group may read it (a secret mounted for the pod's group), not write it.
    chmod(0o640);
    settings(&client.certificate, &client.key)
        .check_files()
        .expect("group-readable");
    chmod(0o660);
    let message = refusal(&client.certificate, &client.key);
    assert!(message.contains("(mode 0660)"), "{message}");
    private(&client.key);

    // Another certificate's key is not this certificate's.
    let other = client_certificates(dir.path(), "other");
    private(&other.key);
    let message = refusal(&client.certificate, &other.key);
    assert!(
        message.contains("is not the key of the certificate in"),
        "{message}"
    );

    // The files swapped: no certificate in the key file, no key in the certificate file.
    let swapped = dir.path().join("swapped.key");
    std::fs::copy(&client.certificate, &swapped).expect("copies");
    private(&swapped);
    let message = refusal(&client.certificate, &swapped);
    assert!(
        message.contains("no unencrypted private key in it"),
        "{message}"
    );
    let message = refusal(&client.key, &client.key);
    assert!(
        message.contains("(sslcert): no certificate in it"),
        "{message}"
    );
    // A missing key says which file.
    let missing = dir.path().join("missing.key");
    let message = refusal(&client.certificate, &missing);
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

/// Makes a key file readable by its owner only.
fn private(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}
