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

/// Whether a URL carries a password: `scheme://user:password@host/…` or a `password=` query
/// parameter.
pub fn url_has_password(url: &str) -> bool {
    url_without_password(url) != url
}

/// The URL with its password removed: the userinfo keeps only the user, and `password=` (and
/// libpq's `sslpassword=`, a client key's passphrase) query parameters are dropped.
pub fn url_without_password(url: &str) -> String {
    redact_url(url, None)
}

/// Replaces a URL's password (userinfo or query parameter) with `replacement`, or removes it
/// when `replacement` is `None`.
fn redact_url(url: &str, replacement: Option<&str>) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    // The userinfo ends at the last `@` before the query, whatever it contains.
    match before_query.rsplit_once('@') {
        Some((userinfo, host_and_path)) => {
            match (userinfo.split_once(':'), replacement) {
                (Some((user, _)), Some(mask)) => out.push_str(&format!("{user}:{mask}")),
                (Some((user, _)), None) => out.push_str(user),
                (None, _) => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host_and_path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        let kept: Vec<String> = query
            .split('&')
            .filter_map(|pair| {
                let key = pair.split('=').next().unwrap_or_default();
                // Names are compared decoded: `pass%77ord` is a password to the driver too.
                let name = url_decoded(key);
                if !name.eq_ignore_ascii_case("password")
                    && !name.eq_ignore_ascii_case("sslpassword")
                {
                    Some(pair.to_string())
                } else {
                    replacement.map(|mask| format!("{key}={mask}"))
                }
            })
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

/// A URL part with its `%XX` escapes decoded (two hex digits; nothing else is decoded).
pub fn url_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| value.get(at + 1..at + 3))
            .flatten()
            .filter(|hex| hex.bytes().all(|digit| digit.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                at += 3;
            }
            None => {
                out.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a key may hold a secret, for masking excerpts: any key whose last segment names a
/// token, secret, password or key (`hapikey`, `api_token`, `client_secret_env`…). Masking a
/// harmless value is better than showing a secret someone pasted in the wrong place.
fn is_secret_key(key: &str) -> bool {
    let last = key
        .rsplit('.')
        .next()
        .unwrap_or(key)
        .trim_matches(['"', '\''])
        .to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "key",
        "assertion",
        "credential",
    ]
    .iter()
    .any(|word| last.contains(word))
}

/// A line of a config file as it may be shown in an excerpt. Values of secret-named keys
/// (bare, quoted or dotted keys, in inline tables too), strings that look like credentials,
/// URL passwords and credential-like words in comments become `<redacted>`.
pub fn mask_line(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let next_significant = |from: usize| chars[from..].iter().copied().find(|c| !c.is_whitespace());
    let mut out = String::with_capacity(line.len());
    let mut current_key: Option<String> = None;
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if c == '#' {
            let comment: String = chars[index..].iter().collect();
            let masked: Vec<String> = comment
                .split(' ')
                .map(|word| {
                    if looks_like_secret(word) {
                        "<redacted>".to_string()
                    } else {
                        word.to_string()
                    }
                })
                .collect();
            out.push_str(&masked.join(" "));
            break;
        }
        if c == '"' || c == '\'' {
            // A string: find its end (basic strings may escape quotes).
            let mut end = index + 1;
            while end < chars.len() && chars[end] != c {
                if c == '"' && chars[end] == '\\' {
                    end += 1;
                }
                end += 1;
            }
            let content: String = chars[index + 1..end.min(chars.len())].iter().collect();
            let closed = end < chars.len();
            let is_key = closed && next_significant(end + 1) == Some('=');
            out.push(c);
            if is_key {
                out.push_str(&content);
                current_key = Some(content);
            } else if current_key.as_deref().is_some_and(is_secret_key)
                || looks_like_secret(&content)
                || !closed
            {
                out.push_str("<redacted>");
            } else {
                out.push_str(&redact_url(&content, Some("<redacted>")));
            }
            if closed {
                out.push(c);
            }
            index = end + 1;
            continue;
        }
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | ':') {
            let start = index;
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric()
                    || matches!(chars[index], '_' | '-' | '.' | '+' | ':'))
            {
                index += 1;
            }
            let word: String = chars[start..index].iter().collect();
            if next_significant(index) == Some('=') {
                current_key = Some(word.clone());
                out.push_str(&word);
            } else if current_key.as_deref().is_some_and(is_secret_key) {
                out.push_str("<redacted>");
            } else {
                out.push_str(&word);
            }
            continue;
        }
        out.push(c);
        index += 1;
    }
    out
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
        assert_eq!(
            mask_line("auth = { method = \"private_app\", token = \"abc\" }"),
            "auth = { method = \"private_app\", token = \"<redacted>\" }"
        );
        assert_eq!(
            mask_line("\"token\" = \"abc\""),
            "\"token\" = \"<redacted>\""
        );
        assert_eq!(mask_line("password = 'abc'"), "password = '<redacted>'");
        assert_eq!(
            mask_line("extra.token = \"abc\""),
            "extra.token = \"<redacted>\""
        );
        assert_eq!(mask_line("password = 12345"), "password = <redacted>");
        assert_eq!(mask_line("hapikey = \"abc\""), "hapikey = \"<redacted>\"");
        assert_eq!(
            mask_line("api_token = \"abc\""),
            "api_token = \"<redacted>\""
        );
        assert_eq!(mask_line("# old: pat-na1-abc"), "# old: <redacted>");
        assert_eq!(
            mask_line("url = \"postgres://u@h/db?sslmode=require&password=pw\""),
            "url = \"postgres://u@h/db?sslmode=require&password=<redacted>\""
        );
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
    fn url_passwords_are_found_and_removed() {
        assert!(url_has_password("postgres://u:pw@h:5432/db"));
        assert!(url_has_password("postgres://u:pa/ss@h/db"));
        assert!(url_has_password("postgres://u@h/db?password=pw"));
        assert!(!url_has_password("postgres://u@h/db?sslmode=require"));
        assert_eq!(
            url_without_password("postgres://u:pa/ss@h/db"),
            "postgres://u@h/db"
        );
        assert_eq!(
            url_without_password("postgres://u@h/db?password=pw&sslmode=require"),
            "postgres://u@h/db?sslmode=require"
        );
        assert!(url_has_password(
            "postgres://u@h/db?sslmode=require&sslpassword=pw"
        ));
        assert!(url_has_password("postgres://u@h/db?pass%77ord=pw"));
        assert_eq!(url_decoded("a%2Fb%20c"), "a/b c");
        for kept in ["%+1", "%", "%4", "%zz", "100%"] {
            assert_eq!(url_decoded(kept), kept);
        }
        assert_eq!(
            url_without_password("postgres://u@h/db?sslpassword=pw&sslmode=require"),
            "postgres://u@h/db?sslmode=require"
        );
    }

    #[test]
    fn secret_shapes_are_recognised() {
        assert!(looks_like_secret("pat-na1-11111111-2222"));
        assert!(looks_like_secret("-----BEGIN PRIVATE KEY-----\nabc"));
        assert!(!looks_like_secret("HUBSPOT_TOKEN"));
        assert_eq!(redacted("abc"), "<redacted, 3 characters>");
    }
}
