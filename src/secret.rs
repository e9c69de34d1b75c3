//! Secrets by reference.
//!
//! Config files never hold a secret: they name where it lives, an environment variable
//! (`token_env = "HUBSPOT_TOKEN"`) or a file (`private_key_file = "/run/secrets/sf.pem"`).
//! A [`SecretRef`] is resolved only when a connection needs it, into a
//! [`secrecy::SecretString`] whose `Debug` output is redacted. Errors name the reference, never
//! the value.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

/// Where a secret lives.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "SecretRef::Env({name})"),
            SecretRef::File(path) => write!(f, "SecretRef::File({})", path.display()),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "environment variable {name}"),
            SecretRef::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// Why a secret could not be read. The messages never contain the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "environment variable {name} is not set — export it (or mount it) before starting crmsync"
    )]
    MissingEnv { name: String },
    #[error("environment variable {name} is empty — set it to the secret's value")]
    EmptyEnv { name: String },
    #[error(
        "cannot read secret file {path}: {source} — check the path and that crmsync may read it"
    )]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {path} is empty — write the secret into it")]
    EmptyFile { path: PathBuf },
}

impl SecretRef {
    /// Reads the secret. Surrounding whitespace (a trailing newline in a mounted file) is
    /// removed; a PEM key keeps its inner line breaks.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(value) if value.trim().is_empty() => {
                    Err(SecretError::EmptyEnv { name: name.clone() })
                }
                Ok(value) => Ok(SecretString::from(value.trim().to_string())),
                Err(_) => Err(SecretError::MissingEnv { name: name.clone() }),
            },
            SecretRef::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                if text.trim().is_empty() {
                    return Err(SecretError::EmptyFile { path: path.clone() });
                }
                Ok(SecretString::from(text.trim().to_string()))
            }
        }
    }
}

/// Key names that would hold a secret's value if written literally in a config file.
pub const LITERAL_SECRET_KEYS: [&str; 9] = [
    "token",
    "access_token",
    "refresh_token",
    "client_secret",
    "private_key",
    "password",
    "api_key",
    "secret",
    "assertion",
];

/// Whether a string looks like a credential whatever key it sits under: HubSpot private-app
/// tokens, PEM keys, bearer strings, Salesforce session ids.
pub fn looks_like_secret(value: &str) -> bool {
    let value = value.trim();
    value.starts_with("pat-")
        || value.contains("-----BEGIN")
        || value.to_ascii_lowercase().starts_with("bearer ")
        || (value.starts_with("00D") && value.contains('!') && value.len() > 40)
}

/// Shows a secret-bearing value safely: its length only.
pub fn redacted(value: &str) -> String {
    format!("<redacted, {} characters>", value.chars().count())
}

/// A line of a config file as it may be shown in an excerpt: the value of a secret-named key,
/// any string that looks like a credential, and the password of a URL are replaced by
/// `<redacted>`.
pub fn mask_line(line: &str) -> String {
    let key = line.split('=').next().unwrap_or_default().trim();
    let secret_key = LITERAL_SECRET_KEYS.contains(&key);
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else {
            // An unterminated string: hide the remainder to be safe.
            out.push_str("<redacted>");
            return out;
        };
        let value = &after[..close];
        if secret_key || looks_like_secret(value) {
            out.push_str("<redacted>");
        } else {
            out.push_str(&mask_url_password(value));
        }
        out.push('"');
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// `scheme://user:password@host` becomes `scheme://user:<redacted>@host`.
fn mask_url_password(value: &str) -> String {
    if let Some((scheme, rest)) = value.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:<redacted>@{host}");
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn excerpts_hide_secret_values() {
        assert_eq!(mask_line("token = \"abc\""), "token = \"<redacted>\"");
        assert_eq!(
            mask_line("tokn = \"pat-na1-xyz\" # typo"),
            "tokn = \"<redacted>\" # typo"
        );
        assert_eq!(
            mask_line("url = \"postgres://u:pw@h/db\""),
            "url = \"postgres://u:<redacted>@h/db\""
        );
        assert_eq!(mask_line("objects = [\"Lead\"]"), "objects = [\"Lead\"]");
    }

    #[test]
    fn file_secrets_are_trimmed_and_debug_is_redacted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "pat-na1-abcdef\n").expect("write secret");
        let secret = SecretRef::File(path.clone()).resolve().expect("resolves");
        assert_eq!(secret.expose_secret(), "pat-na1-abcdef");
        assert!(!format!("{secret:?}").contains("abcdef"));
        std::fs::write(&path, "\n").expect("write empty");
        assert!(matches!(
            SecretRef::File(path).resolve(),
            Err(SecretError::EmptyFile { .. })
        ));
    }

    #[test]
    fn secret_shapes_are_recognised() {
        assert!(looks_like_secret("pat-na1-11111111-2222"));
        assert!(looks_like_secret("-----BEGIN PRIVATE KEY-----\nabc"));
        assert!(!looks_like_secret("HUBSPOT_TOKEN"));
        assert_eq!(redacted("abc"), "<redacted, 3 characters>");
    }
}
