//! TLS to the PostgreSQL warehouse. Owns libpq's `sslmode` and `sslrootcert` URL parameters —
//! tokio-postgres knows only `disable`, `prefer` and `require`, and no root certificates — and
//! the rustls connector that gives each mode libpq's meaning:
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | not checked (as libpq) |
//! | `require` | always | not checked; checked against `sslrootcert` like `verify-ca` when one is given (as libpq) |
//! | `verify-ca` | always | chain to a root in `sslrootcert` |
//! | `verify-full` | always | chain to a root in `sslrootcert`, and issued for the host connected to |
//!
//! `sslrootcert` is a PEM file of root certificates (a managed database's CA bundle), or
//! `system` for the operating system's trusted roots, which implies `verify-full` (as libpq 16:
//! anyone can get a publicly trusted certificate for a host they control, so weaker checks
//! against public roots prove nothing).
//!
//! `sslcert` and `sslkey` (together) are the client certificate and its private key, PEM
//! files shown to a server that asks for one — with any `sslmode` that makes TLS (with
//! `disable` they are refused: they would never be shown). The key must match the certificate,
//! be readable by its owner and at most its group (`0640`), and not be encrypted (libpq's
//! `sslpassword` is not taken).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A problem with the TLS parameters of a PostgreSQL URL, or with setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum PostgresTlsError {
    #[error(
        "sslmode={0:?} is not supported — use disable, prefer, require, verify-ca or verify-full"
    )]
    UnknownMode(String),
    #[error(
        "sslmode={0} checks the server's certificate but the URL names no root certificate — add sslrootcert=PATH (a PEM file, e.g. your database provider's CA bundle) or sslrootcert=system"
    )]
    NoRootCertificate(&'static str),
    #[error("sslrootcert is empty — give the path of a PEM file of root certificates, or system")]
    EmptyRootCertificate,
    #[error(
        "sslrootcert=system checks against publicly trusted roots, which only proves something together with the host name — use sslmode=verify-full (or leave sslmode out)"
    )]
    SystemRootsNeedFullCheck,
    #[error(
        "cannot read the root certificates in {path} (sslrootcert): {message} — give a PEM file with at least one CERTIFICATE block"
    )]
    RootCertificates { path: PathBuf, message: String },
    #[error(
        "{given} is given without {missing} — a client certificate needs both: sslcert=PATH (its PEM certificate) and sslkey=PATH (its PEM private key)"
    )]
    ClientCertificateHalf {
        given: &'static str,
        missing: &'static str,
    },
    #[error("{0} is empty — give the path of a PEM file")]
    EmptyPath(&'static str),
    #[error(
        "cannot read the client certificate in {path} (sslcert): {message} — give a PEM file with the certificate (and any intermediates) your database's CA issued"
    )]
    ClientCertificate { path: PathBuf, message: String },
    #[error(
        "cannot read the private key in {path} (sslkey): {message} — give an unencrypted PEM key (PKCS#8, PKCS#1 or SEC1; `openssl pkey -in KEY -out KEY.pem` decrypts one)"
    )]
    ClientKey { path: PathBuf, message: String },
    #[error(
        "the private key {path} (sslkey) is open to more than its owner and group's reading (mode {mode:04o}) — `chmod 600` it (or 640; in Kubernetes, mount the secret with defaultMode: 0440 and the pod's fsGroup)"
    )]
    ClientKeyExposed { path: PathBuf, mode: u32 },
    #[error(
        "the private key in {key} (sslkey) is not the key of the certificate in {certificate} (sslcert) — give the key that was made with that certificate"
    )]
    ClientKeyMismatch { certificate: PathBuf, key: PathBuf },
    #[error(
        "sslcert and sslkey are given with sslmode=disable, which never makes TLS, so the certificate would never be shown — remove them, or use an sslmode that makes TLS"
    )]
    ClientCertificateWithoutTls,
    #[error(
        "sslpassword is not supported — decrypt the key (`openssl pkey -in KEY -out KEY.pem`) and remove sslpassword"
    )]
    EncryptedKey,
    #[error("{0} (a certificate revocation list) is not supported — remove it")]
    Unsupported(String),
    #[error("cannot set up TLS for the PostgreSQL connection: {0}")]
    Setup(String),
}

/// How much transport security a connection must have (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, PostgresTlsError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(PostgresTlsError::UnknownMode(other.to_string())),
        }
    }

    /// The mode as tokio-postgres knows it: whether TLS is tried and whether it is a must.
    fn negotiation(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require | Self::VerifyCa | Self::VerifyFull => "require",
        }
    }
}

/// Where the roots that server certificates are checked against come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCertificates {
    /// No `sslrootcert`: certificates are not checked (`prefer`, `require`).
    Unchecked,
    /// `sslrootcert=system`.
    System,
    /// `sslrootcert=PATH`.
    File(PathBuf),
}

/// A client certificate and its private key (`sslcert`, `sslkey`): PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// The TLS settings of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub roots: RootCertificates,
    /// Shown to a server that asks for one.
    pub client: Option<ClientCertificate>,
}

impl TlsSettings {
    /// Reads `sslmode`, `sslrootcert`, `sslcert` and `sslkey` from a `postgres://` URL and
    /// returns the settings with the URL tokio-postgres is given: those parameters replaced by
    /// the `sslmode` it knows.
    pub fn from_url(url: &str) -> Result<(Self, String), PostgresTlsError> {
        let (address, query) = match url.split_once('?') {
            Some((address, query)) => (address, query),
            None => (url, ""),
        };
        let mut mode = None;
        let mut roots = RootCertificates::Unchecked;
        let mut client_certificate: Option<PathBuf> = None;
        let mut client_key: Option<PathBuf> = None;
        let mut kept: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // The driver decodes names too: an encoded name is still this parameter.
            let key = crate::secret::url_decoded(key);
            match key.as_str() {
                "sslmode" => mode = Some(SslMode::parse(&crate::secret::url_decoded(value))?),
                "sslrootcert" => {
                    let value = crate::secret::url_decoded(value);
                    if value.is_empty() {
                        return Err(PostgresTlsError::EmptyRootCertificate);
                    }
                    roots = if value == "system" {
                        RootCertificates::System
                    } else {
                        RootCertificates::File(PathBuf::from(value))
                    };
                }
                "sslcert" | "sslkey" => {
                    let value = crate::secret::url_decoded(value);
                    let (slot, name) = if key == "sslcert" {
                        (&mut client_certificate, "sslcert")
                    } else {
                        (&mut client_key, "sslkey")
                    };
                    if value.is_empty() {
                        return Err(PostgresTlsError::EmptyPath(name));
                    }
                    *slot = Some(PathBuf::from(value));
                }
                "sslpassword" => return Err(PostgresTlsError::EncryptedKey),
                "sslcrl" | "sslcrldir" => {
                    return Err(PostgresTlsError::Unsupported(key));
                }
                _ => kept.push(pair),
            }
        }
        let mode = match (mode, &roots) {
            (None, RootCertificates::System) => SslMode::VerifyFull,
            (Some(mode), RootCertificates::System) if mode != SslMode::VerifyFull => {
                return Err(PostgresTlsError::SystemRootsNeedFullCheck);
            }
            (Some(mode), _) => mode,
            (None, _) => SslMode::Prefer,
        };
        match (mode, &roots) {
            (SslMode::VerifyCa, RootCertificates::Unchecked) => {
                return Err(PostgresTlsError::NoRootCertificate("verify-ca"));
            }
            (SslMode::VerifyFull, RootCertificates::Unchecked) => {
                return Err(PostgresTlsError::NoRootCertificate("verify-full"));
            }
            _ => {}
        }
        let client = match (client_certificate, client_key) {
            (Some(certificate), Some(key)) => Some(ClientCertificate { certificate, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(PostgresTlsError::ClientCertificateHalf {
                    given: "sslcert",
                    missing: "sslkey",
                });
            }
            (None, Some(_)) => {
                return Err(PostgresTlsError::ClientCertificateHalf {
                    given: "sslkey",
                    missing: "sslcert",
                });
            }
        };
        if client.is_some() && mode == SslMode::Disable {
            return Err(PostgresTlsError::ClientCertificateWithoutTls);
        }
        let negotiation = format!("sslmode={}", mode.negotiation());
        kept.push(&negotiation);
        Ok((
            Self {
                mode,
                roots,
                client,
            },
            format!("{address}?{}", kept.join("&")),
        ))
    }

    /// Checks that the files the settings name hold what rustls can use: the root
    /// certificates, the client certificate and its key (see [`ClientCertificate::read`]).
    pub fn check_files(&self) -> Result<(), PostgresTlsError> {
        if let RootCertificates::File(path) = &self.roots {
            root_store(path)?;
        }
        if let Some(client) = &self.client {
            client.read(&rustls::crypto::aws_lc_rs::default_provider())?;
        }
        Ok(())
    }

    /// The connector for tokio-postgres.
    pub fn connector(&self) -> Result<TlsConnector, PostgresTlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let setup = |error: rustls::Error| PostgresTlsError::Setup(error.to_string());
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.roots, self.mode) {
            (RootCertificates::Unchecked, _) => Arc::new(Unchecked(Arc::clone(&provider))),
            (RootCertificates::System, _) => Arc::new(
                rustls_platform_verifier::Verifier::new(Arc::clone(&provider)).map_err(setup)?,
            ),
            (RootCertificates::File(path), mode) => Arc::new(RootFileVerifier::new(
                path,
                mode == SslMode::VerifyFull,
                Arc::clone(&provider),
            )?),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            Some(client) => {
                let (chain, key) = client.read(builder.crypto_provider())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| client.key_error(error.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(TlsConnector {
            config: Arc::new(config),
        })
    }
}

/// The URL with a relative `sslrootcert`, `sslcert` or `sslkey` made relative to `base_dir`
/// (the configuration file's directory, as crmsync's other file paths).
pub fn with_file_paths_resolved(url: &str, base_dir: &Path) -> String {
    let Some((address, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name @ ("sslrootcert" | "sslcert" | "sslkey"), value)) => {
                let decoded = crate::secret::url_decoded(value);
                let path = PathBuf::from(&decoded);
                let system_roots = name == "sslrootcert" && decoded == "system";
                if decoded.is_empty() || system_roots || path.is_absolute() {
                    pair.to_string()
                } else {
                    let resolved = base_dir.join(path);
                    format!("{name}={}", percent_encoded(&resolved.to_string_lossy()))
                }
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{address}?{}", pairs.join("&"))
}

/// `%XX` escapes for everything but letters, digits, `-._~/`.
fn percent_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl ClientCertificate {
    /// The certificate chain and the private key, read from their files: a key its group may
    /// read at most (it is the password), unencrypted, and the key of the chain's first
    /// certificate.
    fn read(
        &self,
        provider: &CryptoProvider,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PostgresTlsError> {
        let chain = read_certificates(&self.certificate).map_err(|message| {
            PostgresTlsError::ClientCertificate {
                path: self.certificate.clone(),
                message,
            }
        })?;
        // The permissions and the key come from one opened file.
        let file =
            std::fs::File::open(&self.key).map_err(|error| self.key_error(error.to_string()))?;
        let metadata = file
            .metadata()
            .map_err(|error| self.key_error(error.to_string()))?;
        check_key_permissions(&self.key, &metadata)?;
        let key =
            PrivateKeyDer::from_pem_reader(std::io::BufReader::new(file)).map_err(|error| {
                self.key_error(match error {
                    rustls::pki_types::pem::Error::NoItemsFound => {
                        "no unencrypted private key in it".to_string()
                    }
                    other => other.to_string(),
                })
            })?;
        match rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), provider) {
            Ok(_) => Ok((chain, key)),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(PostgresTlsError::ClientKeyMismatch {
                    certificate: self.certificate.clone(),
                    key: self.key.clone(),
                })
            }
            Err(error) => Err(self.key_error(error.to_string())),
        }
    }

    fn key_error(&self, message: String) -> PostgresTlsError {
        PostgresTlsError::ClientKey {
            path: self.key.clone(),
            message,
        }
    }
}

/// Refuses a key file that anyone but its owner may write, or anyone beyond its owner and
/// group may read (libpq allows `0600`, and `0640` for a key root owns).
#[cfg(unix)]
fn check_key_permissions(
    path: &Path,
    metadata: &std::fs::Metadata,
) -> Result<(), PostgresTlsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o037 != 0 {
        return Err(PostgresTlsError::ClientKeyExposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_permissions(
    _path: &Path,
    _metadata: &std::fs::Metadata,
) -> Result<(), PostgresTlsError> {
    Ok(())
}

/// The roots in a PEM file, and the certificates themselves (see [`RootFileVerifier`]).
fn root_store(
    path: &Path,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), PostgresTlsError> {
    let certificates = read_roots(path)?;
    let mut store = RootCertStore::empty();
    for certificate in &certificates {
        store
            .add(certificate.clone())
            .map_err(|error| PostgresTlsError::RootCertificates {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
    }
    Ok((store, certificates))
}

fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, PostgresTlsError> {
    read_certificates(path).map_err(|message| PostgresTlsError::RootCertificates {
        path: path.to_path_buf(),
        message,
    })
}

/// The certificates in a PEM file (at least one), or why there are none.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| error.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())?;
    if certificates.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(certificates)
}

/// Accepts any server certificate (`prefer` and `require` without root certificates, as
/// libpq): the connection is encrypted, the server not authenticated. The handshake's
/// signatures are still checked, so the server must hold the certificate's key.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks server certificates against the roots of an `sslrootcert` file: the chain, then
/// (`verify-full`) the host name, which must be among the certificate's subjectAltNames (the
/// CN alone is not used). A server certificate that is itself in the file — a self-signed
/// certificate given as its own root, as PostgreSQL's documentation sets one up — is trusted
/// as it is, the name still checked.
#[derive(Debug)]
struct RootFileVerifier {
    roots: RootCertStore,
    pinned: Vec<CertificateDer<'static>>,
    check_name: bool,
    /// The handshake's signatures are checked as for any certificate.
    handshake: Unchecked,
}

impl RootFileVerifier {
    fn new(
        path: &Path,
        check_name: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, PostgresTlsError> {
        let (roots, pinned) = root_store(path)?;
        Ok(Self {
            roots,
            pinned,
            check_name,
            handshake: Unchecked(provider),
        })
    }
}

impl ServerCertVerifier for RootFileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let pinned = self
            .pinned
            .iter()
            .any(|root| root.as_ref() == end_entity.as_ref());
        if !pinned {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &self.roots,
                intermediates,
                now,
                self.handshake.0.signature_verification_algorithms.all,
            )?;
        }
        if self.check_name {
            rustls::client::verify_server_name(&parsed, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.handshake.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS hook, backed by rustls.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for TlsConnector
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = HostConnect;
    type Error = std::convert::Infallible;

    /// `host` is empty for a Unix socket, where the server declines TLS and no handshake is
    /// made: the name is read only if one is.
    fn make_tls_connect(&mut self, host: &str) -> Result<HostConnect, Self::Error> {
        Ok(HostConnect {
            config: Arc::clone(&self.config),
            host: host.to_string(),
        })
    }
}

/// A TLS handshake about to be made with one host.
pub struct HostConnect {
    config: Arc<rustls::ClientConfig>,
    host: String,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for HostConnect
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<TlsStream<S>, std::io::Error>> + Send>,
    >;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let host = ServerName::try_from(self.host)
                .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
            let stream = connector.connect(host, stream).await?;
            Ok(TlsStream(stream))
        })
    }
}

/// An encrypted connection to the server.
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> tokio_postgres::tls::TlsStream for TlsStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// No channel binding: SCRAM authenticates without it (`channel_binding=prefer`, the
    /// default, falls back to plain SCRAM-SHA-256).
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

impl<S> tokio::io::AsyncRead for TlsStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl<S> tokio::io::AsyncWrite for TlsStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Result<(TlsSettings, String), PostgresTlsError> {
        TlsSettings::from_url(&with_file_paths_resolved(url, Path::new("/etc/crmsync")))
    }

    #[test]
    fn libpq_modes_become_what_tokio_postgres_knows() {
        let (tls, url) = settings("postgres://u@db:5432/w").expect("no parameters");
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(tls.roots, RootCertificates::Unchecked);
        assert_eq!(url, "postgres://u@db:5432/w?sslmode=prefer");

        let (tls, url) = settings(
            "postgres://u@db/w?application_name=x&sslmode=verify-full&sslrootcert=certs/rds%20ca.pem",
        )
        .expect("verify-full");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.roots,
            RootCertificates::File(PathBuf::from("/etc/crmsync/certs/rds ca.pem"))
        );
        assert_eq!(url, "postgres://u@db/w?application_name=x&sslmode=require");

        let (tls, url) =
            settings("postgres://u@db/w?sslmode=verify-ca&sslrootcert=/ca.pem").expect("ca");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.roots, RootCertificates::File(PathBuf::from("/ca.pem")));
        assert!(url.ends_with("?sslmode=require"));

        let (tls, url) = settings("postgres://u@db/w?sslmode=disable").expect("disable");
        assert_eq!(tls.mode, SslMode::Disable);
        assert!(url.ends_with("?sslmode=disable"));
    }

    #[test]
    fn root_paths_are_escaped_and_an_empty_one_is_refused() {
        assert_eq!(percent_encoded("/etc/my ca&x.pem"), "/etc/my%20ca%26x.pem");
        let error = settings("postgres://u@db/w?sslrootcert=").expect_err("empty");
        assert!(matches!(error, PostgresTlsError::EmptyRootCertificate));
    }

    #[test]
    fn system_roots_mean_a_full_check() {
        let (tls, _) = settings("postgres://u@db/w?sslrootcert=system").expect("system");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.roots, RootCertificates::System);
        for weaker in ["require", "verify-ca", "prefer", "disable"] {
            let error = settings(&format!(
                "postgres://u@db/w?sslmode={weaker}&sslrootcert=system"
            ))
            .expect_err("weaker than verify-full");
            assert!(matches!(error, PostgresTlsError::SystemRootsNeedFullCheck));
        }
    }

    #[test]
    fn checks_without_roots_and_unknown_modes_are_refused_with_the_fix() {
        let error = settings("postgres://u@db/w?sslmode=verify-full").expect_err("no roots");
        assert!(
            error.to_string().contains("add sslrootcert=PATH"),
            "{error}"
        );
        let error = settings("postgres://u@db/w?sslmode=allow").expect_err("allow");
        assert!(error.to_string().contains("verify-full"), "{error}");
        let error = settings("postgres://u@db/w?sslmode=require&sslpassword=x")
            .expect_err("an encrypted key's password");
        assert!(error.to_string().contains("decrypt the key"), "{error}");
        let error = settings("postgres://u@db/w?sslmode=require&sslcrl=revoked.pem")
            .expect_err("a revocation list");
        assert!(
            error
                .to_string()
                .starts_with("sslcrl (a certificate revocation list)"),
            "{error}"
        );
    }

    #[test]
    fn a_client_certificate_comes_as_a_pair_of_files_relative_to_the_configuration() {
        let (tls, url) = settings(
            "postgres://u@db/w?sslcert=client%20cert.pem&sslmode=require&sslkey=/secrets/client.key",
        )
        .expect("a pair");
        assert_eq!(
            tls.client,
            Some(ClientCertificate {
                certificate: PathBuf::from("/etc/crmsync/client cert.pem"),
                key: PathBuf::from("/secrets/client.key"),
            })
        );
        assert_eq!(url, "postgres://u@db/w?sslmode=require");
        let (tls, _) = settings("postgres://u@db/w?sslmode=require").expect("none");
        assert_eq!(tls.client, None);

        let error = settings("postgres://u@db/w?sslcert=me.pem").expect_err("no key");
        assert_eq!(
            error.to_string(),
            "sslcert is given without sslkey — a client certificate needs both: sslcert=PATH (its PEM certificate) and sslkey=PATH (its PEM private key)"
        );
        let error = settings("postgres://u@db/w?sslkey=me.key").expect_err("no certificate");
        assert!(
            error
                .to_string()
                .starts_with("sslkey is given without sslcert"),
            "{error}"
        );
        let error = settings("postgres://u@db/w?sslcert=&sslkey=me.key").expect_err("empty");
        assert!(
            matches!(error, PostgresTlsError::EmptyPath("sslcert")),
            "{error}"
        );
        // Never shown without TLS.
        let error = settings("postgres://u@db/w?sslmode=disable&sslcert=me.pem&sslkey=me.key")
            .expect_err("no TLS");
        assert!(
            matches!(error, PostgresTlsError::ClientCertificateWithoutTls),
            "{error}"
        );
        // An encoded name is the parameter all the same (the driver decodes it too).
        let (tls, url) =
            settings("postgres://u@db/w?ssl%63ert=me.pem&sslkey=me.key").expect("a pair");
        assert!(tls.client.is_some());
        assert!(!url.contains("me.pem"), "{url}");
    }

    #[test]
    fn a_connection_without_a_host_name_is_set_up_and_fails_only_if_it_tries_tls() {
        use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
        let (tls, _) = settings("postgres://u@db/w").expect("prefer");
        let mut connector = tls.connector().expect("connector");
        // A Unix socket: tokio-postgres asks for a connector with an empty host name.
        let connect = MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut connector, "")
            .expect("no name is needed before a handshake");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let refused = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binds");
            let address = listener.local_addr().expect("address");
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connects");
            connect
                .connect(stream)
                .await
                .err()
                .expect("a handshake needs a name")
        });
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::InvalidInput,
            "{refused}"
        );
    }

    #[test]
    fn a_root_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("writes");
        let tls = TlsSettings {
            mode: SslMode::VerifyFull,
            roots: RootCertificates::File(empty.clone()),
            client: None,
        };
        let error = tls.check_files().expect_err("no certificate");
        assert!(error.to_string().contains("no certificate"), "{error}");
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            roots: RootCertificates::File(dir.path().join("missing.pem")),
            client: None,
        };
        assert!(missing.check_files().is_err());
    }
}
