//! Every HubSpot request path against the emulator's faults: storms of 429, flaky servers,
//! dropped connections and cut-short JSON, tokens expiring mid-run, a spent daily allowance,
//! the reserve left for other apps, and refusals reported with HubSpot's own words.

mod hubspot_common;

use crmsync::emulator::hubspot::HubspotLimits;
use crmsync::hubspot::auth::HubspotCredentials;
use crmsync::hubspot::client::{Budget, HubspotError, RateSettings};
use http::Method;
use hubspot_common::{all_contact_ids, client, oauth, private_app, start};
use secrecy::SecretString;

#[tokio::test]
async fn every_fault_profile_ends_with_every_record_once() {
    let quiet = start("none", HubspotLimits::default(), false).await;
    let expected = all_contact_ids(&client(
        &quiet,
        private_app(&quiet),
        RateSettings::default(),
    ))
    .await
    .expect("a quiet read");
    assert!(expected.len() > 200);
    for faults in ["flaky", "storm", "slow", "flaky,storm"] {
        let emulator = start(faults, HubspotLimits::default(), false).await;
        let client = client(&emulator, private_app(&emulator), RateSettings::default());
        let ids = all_contact_ids(&client)
            .await
            .unwrap_or_else(|error| panic!("{faults}: {error}"));
        assert_eq!(
            ids, expected,
            "{faults}: the same records, each once, in order"
        );
        assert!(client.calls() >= 3, "{faults}");
    }
}

#[tokio::test]
async fn the_client_counts_every_429_the_portal_sends() {
    let emulator = start("storm", HubspotLimits::default(), false).await;
    let client = client(&emulator, private_app(&emulator), RateSettings::default());
    // Storms start on 2% of requests: reads until a few have come and gone.
    for _ in 0..40 {
        all_contact_ids(&client)
            .await
            .expect("a read through storms");
        if client.rate_limited() >= 5 {
            break;
        }
    }
    assert!(client.rate_limited() >= 5, "{} 429s", client.rate_limited());
    assert_eq!(client.rate_limited(), emulator.stats().rate_limited);
}

#[tokio::test]
async fn tokens_expiring_mid_run_lose_no_page() {
    let emulator = start("expiry", HubspotLimits::default(), false).await;
    let client = client(&emulator, oauth(&emulator), RateSettings::default());
    let first = all_contact_ids(&client).await.expect("first read");
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    let second = all_contact_ids(&client)
        .await
        .expect("a read after the token expired");
    assert_eq!(first, second);
    let token_requests: u64 = emulator
        .stats()
        .requests_by_endpoint
        .get("hubspot POST /oauth/v1/token")
        .map_or(0, |by_status| by_status.values().sum());
    assert!(
        token_requests >= 2,
        "the token was refreshed ({token_requests})"
    );
}

#[tokio::test]
async fn a_spent_daily_allowance_stops_cleanly() {
    let emulator = start(
        "none",
        HubspotLimits {
            per_ten_seconds: 100,
            per_day: 2,
        },
        true,
    )
    .await;
    let client = client(
        &emulator,
        private_app(&emulator),
        RateSettings {
            daily_reserve_percent: 0,
            ..RateSettings::default()
        },
    );
    let error = all_contact_ids(&client)
        .await
        .expect_err("the allowance runs out");
    assert!(
        matches!(
            error,
            HubspotError::DailyReserve { .. } | HubspotError::DailyLimit { .. }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("resumes from its checkpoint"),
        "{error}"
    );
    assert!(
        client.calls() <= 3,
        "no retry loop: {} calls",
        client.calls()
    );
}

#[tokio::test]
async fn the_reserve_for_other_apps_is_left_alone() {
    let emulator = start(
        "none",
        HubspotLimits {
            per_ten_seconds: 100,
            per_day: 20,
        },
        true,
    )
    .await;
    let client = client(
        &emulator,
        private_app(&emulator),
        RateSettings {
            daily_reserve_percent: 50,
            ..RateSettings::default()
        },
    );
    let mut answered = 0;
    let error = loop {
        match client
            .send(
                Budget::General,
                Method::GET,
                "/crm/v3/objects/contacts",
                &[("limit", "1".to_string())],
                None,
                "contacts",
            )
            .await
        {
            Ok(_) => answered += 1,
            Err(error) => break error,
        }
        assert!(answered < 20, "the reserve was never reached");
    };
    assert!(
        matches!(
            error,
            HubspotError::DailyReserve {
                remaining: 10,
                daily: 20,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(answered, 10, "ten calls, then the reserve");
    assert_eq!(client.calls(), 10, "the eleventh was never sent");
}

#[tokio::test]
async fn searches_count_against_the_daily_allowance_though_their_answers_carry_no_figures() {
    // Forty calls a day. A private app learns the day's figures from one small listing before
    // its first search; an OAuth app, which HubSpot sends no daily figures, counts against the
    // configured allowance. Either way the reserve of ten holds.
    let emulator = start(
        "none",
        HubspotLimits {
            per_ten_seconds: 1_000,
            per_day: 40,
        },
        true,
    )
    .await;
    for (credentials, basis) in [
        (private_app(&emulator), "HubSpot's daily figures"),
        (
            oauth(&emulator),
            "configured hubspot.rate_limit.daily_limit",
        ),
    ] {
        emulator_new_day(&emulator).await;
        let client = client(
            &emulator,
            credentials,
            RateSettings {
                requests_per_10s: 1_000,
                daily_limit: 40,
                daily_reserve_percent: 25,
                ..RateSettings::default()
            },
        );
        let mut answered = 0;
        let error = loop {
            let answer = client
                .send(
                    Budget::Search,
                    Method::POST,
                    "/crm/v3/objects/contacts/search",
                    &[],
                    Some(&serde_json::json!({"limit": 1})),
                    "contacts",
                )
                .await;
            match answer {
                Ok(answer) => {
                    assert!(
                        answer
                            .headers
                            .get("x-hubspot-ratelimit-daily-remaining")
                            .is_none(),
                        "search answers carry no daily figures"
                    );
                    answered += 1;
                }
                Err(error) => break error,
            }
            assert!(answered <= 40, "the allowance was never reached");
        };
        assert!(
            matches!(
                error,
                HubspotError::DailyReserve {
                    remaining: 10,
                    daily: 40,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains(basis), "{error}");
        assert_eq!(
            answered, 29,
            "one listing for the figures, 29 searches, then the reserve"
        );
    }
}

async fn emulator_new_day(emulator: &crmsync::emulator::RunningEmulator) {
    reqwest::Client::new()
        .post(format!(
            "{}/__emulator/hubspot/new-day",
            emulator.info().hubspot_base_url
        ))
        .send()
        .await
        .expect("new day");
}

#[tokio::test]
async fn refusals_come_back_with_hubspots_words() {
    let emulator = start("none", HubspotLimits::default(), false).await;
    let client = client(&emulator, private_app(&emulator), RateSettings::default());
    let error = client
        .send(
            Budget::General,
            Method::GET,
            "/crm/v3/objects/unicorns",
            &[],
            None,
            "unicorns",
        )
        .await
        .expect_err("no such object");
    match &error {
        HubspotError::Rejected(rejection) => {
            assert!(
                rejection.status == 400 || rejection.status == 404,
                "{}",
                rejection.status
            );
            assert!(!rejection.message.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(client.calls(), 1, "a refusal is not retried");
    // HubSpot's clock, from the answer's Date header (whole seconds).
    let server = client.server_clock().expect("a Date header");
    let apart = (jiff::Timestamp::now() - server).get_seconds().abs();
    assert!(apart <= 5, "{server} is {apart} s from now");
    let bad = HubspotCredentials::PrivateApp {
        token: SecretString::from("pat-na1-not-a-real-token"),
    };
    let unauthorized = self::client(&emulator, bad, RateSettings::default());
    let error = all_contact_ids(&unauthorized).await.expect_err("refused");
    assert!(
        matches!(error, HubspotError::Unauthorized { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("pat-na1-not-a-real-token"));
}
