//! Keeping secrets out of what the HTTP stack logs: query parameters that carry credentials
//! (`hapikey`, `access_token`, …) lose their values, and so does a URL's password; transport
//! errors are described without their URL.

/// Query parameters whose values are credentials.
const SECRET_PARAMETERS: [&str; 8] = [
    "hapikey",
    "access_token",
    "token",
    "refresh_token",
    "client_secret",
    "code",
    "assertion",
    "password",
];

/// `url` fit for a log line: credential-bearing query values and any password replaced.
pub fn redact_url(url: &str) -> String {
    let without_password = crate::secret::url_without_password(url);
    let Some((base, query)) = without_password.split_once('?') else {
        return without_password;
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_PARAMETERS
                    .iter()
                    .any(|secret| name.eq_ignore_ascii_case(secret)) =>
            {
                format!("{name}=[redacted]")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", redacted.join("&"))
}

/// What went wrong with a request that got no answer, without the URL (whose query could
/// hold a credential).
pub fn describe_error(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    format!("{kind}: {}", error.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_urls_before_they_are_logged() {
        assert_eq!(
            redact_url("https://api.hubapi.com/crm/v3/objects/contacts?limit=100&hapikey=abc123"),
            "https://api.hubapi.com/crm/v3/objects/contacts?limit=100&hapikey=[redacted]"
        );
        assert_eq!(
            redact_url("https://x.example/path?Access_Token=t&after=5"),
            "https://x.example/path?Access_Token=[redacted]&after=5"
        );
        assert_eq!(
            redact_url("https://api.hubapi.com/crm/v3/owners"),
            "https://api.hubapi.com/crm/v3/owners"
        );
        assert!(!redact_url("https://user:hunter2@db.example/x").contains("hunter2"));
    }
}
