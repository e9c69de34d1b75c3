//! From a config file to a working Salesforce connector: the JWT bearer flow with the key
//! file the config names, against the emulator; the config's rate, concurrency and reserve
//! are taken.

mod salesforce_common;

use crmsync::config::{self, EnvVars};
use crmsync::diagnostics::SourceFile;
use crmsync::http::client::ClientSettings;
use crmsync::salesforce::connect::{connect, reader};
use crmsync::salesforce::describe::ObjectDescribe;
use salesforce_common::{quiet, start};

#[tokio::test]
async fn a_config_file_connects_to_the_org() {
    let emulator = start(quiet(100)).await;
    let info = emulator.info();
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "[hubspot]\nenabled = false\n\n[salesforce]\nlogin_url = \"{}\"\nobjects = [\"Lead\"]\nrequests_per_second = 50\nmax_concurrent_requests = 2\nbulk_threshold = 1000\n\n[salesforce.auth]\nmethod = \"jwt_bearer\"\nclient_id = \"{}\"\nusername = \"{}\"\nprivate_key_file = \"{}\"\n",
        info.salesforce_login_url,
        info.salesforce_client_id,
        info.salesforce_username,
        info.salesforce_private_key_file.display()
    );
    let source = SourceFile::new("crmsync.toml", text);
    let (config, problems) = config::parse(
        Some(&source),
        dir.path(),
        &EnvVars::from_pairs(std::iter::empty::<(&str, &str)>()),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        config.salesforce.api_budget_reserve_percent, 10,
        "the default reserve"
    );
    assert_eq!(config.salesforce.requests_per_second, 50);
    assert_eq!(config.salesforce.max_concurrent_requests, 2);
    assert_eq!(config.salesforce.bulk_threshold, 1_000);
    let client = connect(&config.salesforce, ClientSettings::default()).expect("connector");
    let describe = ObjectDescribe::load(&client, "Lead")
        .await
        .expect("describe");
    assert!(describe.field("Email").is_some());
    assert_eq!(reader(&client, &config.salesforce).bulk_threshold, 1_000);
}
