//! Salesforce sessions and requests against the emulator over HTTP: each sign-in flow (JWT
//! bearer with the connected app's key, refresh token, client credentials) gives a session on
//! the instance the token answer names; an expired session is replaced once, mid-run, without
//! losing a page; the org's API budget stops a run at the configured reserve or at the
//! allocation's end, never in a retry loop; the concurrent-request limit and server errors
//! are waited out; refusals keep Salesforce's error code, and no secret reaches an error or
//! Debug output.

mod salesforce_common;

use std::time::Duration;

use crmsync::emulator::EmulatorConfig;
use crmsync::emulator::faults::Faults;
use crmsync::salesforce::auth::{AuthError, SalesforceCredentials, SessionSource};
use crmsync::salesforce::client::{Body, SalesforceClient, SalesforceError, SalesforceSettings};
use http::Method;
use salesforce_common::{client_credentials, client_with as client, jwt, quiet, refresh, start};
use secrecy::SecretString;

/// Every lead id through the REST query and its `nextRecordsUrl` pages, pausing between
/// pages; returns the ids and the number of pages.
async fn lead_ids(
    client: &SalesforceClient,
    pause: Duration,
) -> Result<(Vec<String>, usize), SalesforceError> {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut next = Some(client.data_path("query"));
    let mut query = vec![("q", "SELECT Id FROM Lead ORDER BY Id".to_string())];
    while let Some(path) = next.take() {
        let answer = client
            .send(
                Method::GET,
                &path,
                &query,
                Body::None,
                "application/json",
                &[],
                "Lead",
            )
            .await?;
        let page = answer.json().expect("JSON");
        pages += 1;
        ids.extend(
            page["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|record| record["Id"].as_str().map(str::to_string)),
        );
        next = page["nextRecordsUrl"].as_str().map(str::to_string);
        query.clear();
        tokio::time::sleep(pause).await;
    }
    Ok((ids, pages))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sign_in_flow_gives_a_session_on_the_orgs_instance() {
    let emulator = start(quiet(300)).await;
    let mut expected = None;
    for (flow, credentials) in [
        ("jwt", jwt(&emulator)),
        ("refresh token", refresh(&emulator)),
        ("client credentials", client_credentials(&emulator)),
    ] {
        let client = client(&emulator, credentials, SalesforceSettings::default());
        let (ids, _) = lead_ids(&client, Duration::ZERO).await.expect(flow);
        assert!(ids.len() > 50, "{flow}: {} leads", ids.len());
        let expected = expected.get_or_insert_with(|| ids.clone());
        assert_eq!(&ids, expected, "{flow}: the same org");
        let (used, max) = client.api_usage().expect("Sforce-Limit-Info read");
        assert!(used > 0 && max > used, "{used}/{max}");
        // The org's clock, from the answers' Date header (whole seconds).
        let server = client.server_clock().expect("a Date header");
        let apart = (jiff::Timestamp::now() - server).get_seconds().abs();
        assert!(apart <= 5, "{server} is {apart} s from now");
    }
}

#[tokio::test]
async fn a_refused_sign_in_says_what_to_check_and_shows_no_secret() {
    let emulator = start(quiet(50)).await;
    let info = emulator.info();
    let wrong_user = SalesforceCredentials::JwtBearer {
        client_id: info.salesforce_client_id.clone(),
        username: "nobody@example.com".into(),
        private_key_pem: SecretString::from(
            std::fs::read_to_string(&info.salesforce_private_key_file).expect("key"),
        ),
    };
    let client = client(&emulator, wrong_user, SalesforceSettings::default());
    let error = lead_ids(&client, Duration::ZERO)
        .await
        .expect_err("an unknown user");
    assert!(
        matches!(error, SalesforceError::Auth(AuthError::Refused { .. })),
        "{error:?}"
    );
    assert!(error.to_string().contains("connected app"), "{error}");
    assert_eq!(client.calls(), 0, "no API request without a session");

    let secret = "not-the-secret-at-all";
    let wrong_secret = SalesforceCredentials::RefreshToken {
        client_id: info.salesforce_client_id.clone(),
        client_secret: SecretString::from(secret),
        refresh_token: SecretString::from(info.salesforce_refresh_token.as_str()),
    };
    let shown = format!("{wrong_secret:?}");
    assert!(!shown.contains(secret) && !shown.contains(&info.salesforce_refresh_token));
    let client = self::client(&emulator, wrong_secret, SalesforceSettings::default());
    let error = lead_ids(&client, Duration::ZERO)
        .await
        .expect_err("refused");
    assert!(!format!("{error} {error:?}").contains(secret), "{error:?}");

    let not_a_key = SalesforceCredentials::JwtBearer {
        client_id: info.salesforce_client_id.clone(),
        username: info.salesforce_username.clone(),
        private_key_pem: SecretString::from(
            "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
        ),
    };
    let error = SessionSource::new(
        not_a_key,
        &info.salesforce_login_url,
        reqwest::Client::new(),
    )
    .expect_err("not a key");
    assert!(matches!(error, AuthError::PrivateKey(_)), "{error:?}");
    assert!(!error.to_string().contains("nope"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expiring_mid_run_is_replaced_without_losing_a_page() {
    let steady = start(quiet(4_000)).await;
    let settings = SalesforceSettings::default();
    let (expected, pages) = lead_ids(
        &client(&steady, jwt(&steady), settings.clone()),
        Duration::ZERO,
    )
    .await
    .expect("read");
    assert!(pages >= 2, "{pages} pages");
    let expiring = start(EmulatorConfig {
        salesforce_session_lifetime: jiff::SignedDuration::from_millis(600),
        faults: "expiry".parse::<Faults>().expect("faults"),
        ..quiet(4_000)
    })
    .await;
    for credentials in [jwt(&expiring), refresh(&expiring)] {
        let client = client(&expiring, credentials, settings.clone());
        // Slower than the session lasts: every page or so needs a fresh one.
        let (ids, _) = lead_ids(&client, Duration::from_millis(700))
            .await
            .expect("read across expiries");
        assert_eq!(ids, expected);
        assert!(
            client.calls() > pages as u64,
            "the expired session was refused at least once: {} calls",
            client.calls()
        );
    }
}

/// One small request: the org's limits.
async fn send(client: &SalesforceClient) -> Result<(), SalesforceError> {
    let path = client.data_path("limits");
    client
        .send(
            Method::GET,
            &path,
            &[],
            Body::None,
            "application/json",
            &[],
            "limits",
        )
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserve_and_the_daily_allocation_stop_a_run_cleanly() {
    let emulator = start(EmulatorConfig {
        rate_limits: true,
        salesforce_daily_api_requests: 40,
        ..quiet(200)
    })
    .await;
    // A reserve of half: twenty requests go, then the run stops before sending more.
    let reserved = client(
        &emulator,
        jwt(&emulator),
        SalesforceSettings {
            reserve_percent: 50,
            ..SalesforceSettings::default()
        },
    );
    let mut sent = 0;
    let error = loop {
        match send(&reserved).await {
            Ok(_) => sent += 1,
            Err(error) => break error,
        }
        assert!(sent <= 40);
    };
    assert!(
        matches!(
            error,
            SalesforceError::Reserve {
                remaining: 20,
                max: 40,
                reserve_percent: 50
            }
        ),
        "{error:?}"
    );
    assert_eq!(sent, 20);
    assert_eq!(
        reserved.calls(),
        20,
        "the request past the reserve was never sent"
    );
    assert!(
        error.to_string().contains("resumes from its checkpoint"),
        "{error}"
    );
    // No reserve: the allocation's end is Salesforce's 403, which stops without retrying.
    let greedy = client(
        &emulator,
        jwt(&emulator),
        SalesforceSettings {
            reserve_percent: 0,
            ..SalesforceSettings::default()
        },
    );
    let mut sent = 0;
    let error = loop {
        match send(&greedy).await {
            Ok(_) => sent += 1,
            Err(error) => break error,
        }
        assert!(sent <= 40);
    };
    assert!(
        matches!(
            error,
            SalesforceError::DailyLimit { .. } | SalesforceError::Reserve { remaining: 0, .. }
        ),
        "{error:?}"
    );
    assert_eq!(sent, 20, "the other twenty of the day");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_answers_and_the_concurrency_limit_are_waited_out() {
    let steady = start(quiet(3_000)).await;
    let (expected, _) = lead_ids(
        &client(&steady, jwt(&steady), SalesforceSettings::default()),
        Duration::ZERO,
    )
    .await
    .expect("read");
    for faults in ["flaky", "storm", "flaky,storm,slow"] {
        let emulator = start(EmulatorConfig {
            faults: faults.parse::<Faults>().expect("faults"),
            ..quiet(3_000)
        })
        .await;
        let client = client(&emulator, jwt(&emulator), SalesforceSettings::default());
        let (ids, _) = lead_ids(&client, Duration::ZERO).await.expect(faults);
        assert_eq!(ids, expected, "{faults}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_for_load_are_waited_out_without_spending_attempts() {
    let emulator = start(EmulatorConfig {
        faults: "storm".parse::<Faults>().expect("faults"),
        ..quiet(3_000)
    })
    .await;
    // Two attempts in all for failures; storms run 4 to 15 refusals in a row.
    let http = reqwest::Client::new();
    let sessions = SessionSource::new(
        jwt(&emulator),
        &emulator.info().salesforce_login_url,
        http.clone(),
    )
    .expect("sessions");
    let client = SalesforceClient::new(
        http,
        sessions,
        SalesforceSettings::default(),
        crmsync::http::retry::RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        },
    )
    .expect("client");
    // Storms start on 2% of requests: reads, three at a time, until a few refusals have come.
    let refused = || -> u64 {
        emulator
            .stats()
            .requests_by_endpoint
            .iter()
            .filter(|(endpoint, _)| endpoint.starts_with("salesforce"))
            .filter_map(|(_, by_status)| by_status.get(&403))
            .sum()
    };
    for _ in 0..40 {
        let readers = (0..3).map(|_| lead_ids(&client, Duration::ZERO));
        for read in futures_util::future::join_all(readers).await {
            let (ids, _) = read.expect("every read rides out the storms");
            assert!(ids.len() > 1_000);
        }
        if refused() >= 8 {
            break;
        }
    }
    let refused = refused();
    assert!(refused >= 8, "the storms refused {refused} requests");
}

#[tokio::test]
async fn refusals_keep_salesforces_error_code_and_fields() {
    let emulator = start(quiet(50)).await;
    let client = client(&emulator, jwt(&emulator), SalesforceSettings::default());
    let error = client
        .send(
            Method::GET,
            &client.data_path("query"),
            &[("q", "SELECT NoSuchField__c FROM Lead".to_string())],
            Body::None,
            "application/json",
            &[],
            "Lead",
        )
        .await
        .expect_err("an unknown field");
    let SalesforceError::Rejected(refusal) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(refusal.status, 400);
    assert_eq!(refusal.error_code, "INVALID_FIELD");
    assert!(
        refusal.message.contains("NoSuchField__c"),
        "{}",
        refusal.message
    );
    assert_eq!(client.calls(), 1, "a refusal is not retried");
}
