//! The PostgreSQL server the PostgreSQL tests use: PG_TEST_URL, required when
//! PG_TEST_REQUIRED is set (as in CI), else the tests say they were skipped; and the
//! vocabulary their warehouses are opened with.

/// PG_TEST_URL, or `None` (said on stderr) when it is not set and not required.
pub fn admin_url(tests: &str) -> Option<String> {
    let Ok(url) = std::env::var("PG_TEST_URL") else {
        assert!(
            std::env::var_os("PG_TEST_REQUIRED").is_none(),
            "PG_TEST_REQUIRED is set but PG_TEST_URL is not: point it at a PostgreSQL server (postgres://USER@HOST:PORT/DATABASE)"
        );
        eprintln!(
            "skipped: PG_TEST_URL is not set — set it to a PostgreSQL server (e.g. postgres://postgres@127.0.0.1:5432/test) to run the {tests}"
        );
        return None;
    };
    Some(url)
}

/// The shipped vocabulary (`mappings/vocabulary.toml`).
pub fn shipped_vocabulary() -> crmsync::vocabulary::Vocabulary {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/vocabulary.toml");
    let text = std::fs::read_to_string(&path).expect("vocabulary file");
    let mut diagnostics = crmsync::diagnostics::Diagnostics::default();
    let vocabulary = crmsync::vocabulary::Vocabulary::parse(
        &crmsync::diagnostics::SourceFile::new("vocabulary.toml", text),
        &mut diagnostics,
    );
    assert!(diagnostics.is_empty(), "{diagnostics}");
    vocabulary
}
