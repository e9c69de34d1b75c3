//! Reconcile: one stage and one set of fields per person, from what each system says.
//!
//! The policies are DESIGN.md's: the furthest stage by rank wins (default), or marketing owns
//! stages up to a boundary and sales the rest; the sales system's side states (disqualified,
//! recycled) override marketing's stage when configured; a stage never moves backwards unless
//! the policy allows it, and a refused regression is reported. A system whose stage is only
//! the echo of what crmsync wrote there has no opinion of its own while the other has one.
//! Other fields come from the configured source of truth (`hubspot`, `salesforce`, or
//! `most_recent`, where a value crmsync wrote does not count as a change).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::Value;

use crate::config::{FieldSource, ReconcileConfig, StagePolicy};
use crate::record::System;
use crate::store::model::MemberRow;
use crate::vocabulary::{StageId, Vocabulary};

/// What one system says of a person's stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opinion {
    pub system: System,
    pub stage: StageId,
    /// The record it comes from and the rule that mapped it.
    pub record_id: String,
    pub rule: Option<String>,
    pub raw: Option<String>,
    /// The stage is what crmsync wrote there, not a change of the system's own.
    pub echo: bool,
}

/// The stage decided for a person, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageDecision {
    pub stage: Option<StageId>,
    /// The system whose opinion decided (for `stage_transitions.system`).
    pub system: Option<System>,
    pub reason: String,
    /// (from, to) of a regression the policy refused: the stage stays at `from`.
    pub refused_regression: Option<(StageId, StageId)>,
    /// The stage moved backwards, as the policy allows.
    pub regressed: bool,
}

/// The system that plays each role: HubSpot is marketing's, Salesforce sales'.
fn is_sales(system: System) -> bool {
    system == System::Salesforce
}

/// Decides a person's stage from the systems' opinions and the stage it had.
pub fn decide_stage(
    vocabulary: &Vocabulary,
    policy: &ReconcileConfig,
    opinions: &[Opinion],
    previous: Option<StageId>,
) -> StageDecision {
    let describe = |opinion: &Opinion| {
        let mut text = format!(
            "{} says {}",
            opinion.system,
            vocabulary.id_of(opinion.stage)
        );
        if let Some(rule) = &opinion.rule {
            text.push_str(&format!(" (rule \"{rule}\""));
            if let Some(raw) = &opinion.raw {
                text.push_str(&format!(", value {raw:?}"));
            }
            text.push(')');
        }
        if opinion.echo {
            text.push_str(" [written by crmsync]");
        }
        text
    };
    // An echo has no say while another system has its own opinion.
    let own: Vec<&Opinion> = opinions.iter().filter(|opinion| !opinion.echo).collect();
    let considered: Vec<&Opinion> = if own.is_empty() {
        opinions.iter().collect()
    } else {
        own
    };
    if considered.is_empty() {
        return StageDecision {
            stage: previous,
            system: None,
            reason: match previous {
                Some(stage) => format!(
                    "no system gives a stage now; kept {}",
                    vocabulary.id_of(stage)
                ),
                None => "no system gives a stage".into(),
            },
            refused_regression: None,
            regressed: false,
        };
    }
    let rank = |stage: StageId| vocabulary.stage(stage).rank;
    let side = |stage: StageId| vocabulary.stage(stage).side_state;
    let sales = considered.iter().copied().find(|o| is_sales(o.system));
    let marketing = considered.iter().copied().find(|o| !is_sales(o.system));
    let (winner, why): (&Opinion, String) = match (&policy.stage_policy, sales, marketing) {
        (_, Some(sales), Some(_)) if policy.sales_side_states_override && side(sales.stage) => (
            sales,
            "sales' side state overrides marketing's stage".into(),
        ),
        (
            StagePolicy::Owners {
                marketing_owns_until,
            },
            sales,
            marketing,
        ) => {
            let boundary = vocabulary
                .lookup(&marketing_owns_until.value)
                .and_then(rank)
                .unwrap_or(u32::MAX);
            let sales_owns =
                |o: &Opinion| side(o.stage) || rank(o.stage).is_some_and(|r| r > boundary);
            let marketing_owns =
                |o: &Opinion| rank(o.stage).is_some_and(|r| r <= boundary) || side(o.stage);
            match (sales, marketing) {
                (Some(sales), _) if sales_owns(sales) => (
                    sales,
                    format!("sales owns stages after {}", marketing_owns_until.value),
                ),
                (_, Some(marketing)) if marketing_owns(marketing) => (
                    marketing,
                    format!("marketing owns stages up to {}", marketing_owns_until.value),
                ),
                (Some(sales), _) => (sales, "only sales gives a stage it owns".into()),
                (None, Some(marketing)) => (marketing, "only marketing gives a stage".into()),
                (None, None) => (considered[0], "the only stage given".into()),
            }
        }
        (StagePolicy::Furthest, _, _) => {
            // Furthest by rank; side states count only when no ranked stage is given.
            let ranked = considered
                .iter()
                .copied()
                .filter(|o| rank(o.stage).is_some())
                // Ties go to sales, whose later stages are the more specific.
                .max_by_key(|o| (rank(o.stage), is_sales(o.system)));
            match ranked {
                Some(best) if considered.len() > 1 => (best, "furthest along by rank".into()),
                Some(best) => (best, "the only stage given".into()),
                None => {
                    let best = sales.or(marketing).unwrap_or(considered[0]);
                    (
                        best,
                        "only side states are given; sales' counts first".into(),
                    )
                }
            }
        }
    };
    let mut reason = format!(
        "{why}: {}",
        considered
            .iter()
            .map(|opinion| describe(opinion))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let chosen = winner.stage;
    let mut decision = StageDecision {
        stage: Some(chosen),
        system: Some(winner.system),
        reason: String::new(),
        refused_regression: None,
        regressed: false,
    };
    if let Some(previous) = previous
        && previous != chosen
        && is_regression(vocabulary, previous, chosen)
    {
        if policy.allow_regression {
            decision.regressed = true;
            reason.push_str(&format!(
                " — moves back from {} (allowed by reconcile.allow_regression)",
                vocabulary.id_of(previous)
            ));
        } else {
            decision.stage = Some(previous);
            decision.refused_regression = Some((previous, chosen));
            reason.push_str(&format!(
                " — would move back from {} to {}: refused (reconcile.allow_regression = false); stays {}",
                vocabulary.id_of(previous),
                vocabulary.id_of(chosen),
                vocabulary.id_of(previous)
            ));
        }
    }
    decision.reason = reason;
    decision
}

/// Moving from `from` to `to` goes backwards: a lower rank, or leaving a terminal stage.
pub fn is_regression(vocabulary: &Vocabulary, from: StageId, to: StageId) -> bool {
    let from_stage = vocabulary.stage(from);
    let to_stage = vocabulary.stage(to);
    if from_stage.terminal {
        return true;
    }
    match (from_stage.rank, to_stage.rank) {
        (Some(from_rank), Some(to_rank)) => to_rank < from_rank,
        _ => false,
    }
}

/// One canonical field's value for the person, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChoice {
    pub value: Value,
    pub system: Option<System>,
    pub rule: String,
}

/// A system's value of a canonical field: the value, when its record last changed, and
/// whether the value is crmsync's own write coming back.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldOffer<'a> {
    pub system: System,
    pub value: &'a Value,
    pub modified_at: Timestamp,
    pub echo: bool,
}

/// Picks a field's value by the configured source of truth.
pub fn choose_field(
    field: &str,
    policy: &ReconcileConfig,
    offers: &[FieldOffer<'_>],
) -> FieldChoice {
    let source = policy
        .field_sources
        .get(field)
        .map(|located| located.value)
        .unwrap_or(policy.default_field_source);
    let present: Vec<&FieldOffer<'_>> = offers
        .iter()
        .filter(|offer| !offer.value.is_null())
        .collect();
    let from = |system: System| present.iter().copied().find(|offer| offer.system == system);
    let pick = |offer: Option<&FieldOffer<'_>>, rule: String| match offer {
        Some(offer) => FieldChoice {
            value: offer.value.clone(),
            system: Some(offer.system),
            rule,
        },
        None => FieldChoice {
            value: Value::Null,
            system: None,
            rule,
        },
    };
    match source {
        FieldSource::Hubspot => pick(
            from(System::Hubspot).or_else(|| from(System::Salesforce)),
            format!("{field}: source of truth hubspot"),
        ),
        FieldSource::Salesforce => pick(
            from(System::Salesforce).or_else(|| from(System::Hubspot)),
            format!("{field}: source of truth salesforce"),
        ),
        FieldSource::MostRecent => {
            // A value crmsync wrote is not a change: the other system's value is the newer
            // word unless it, too, is an echo.
            let best = present.iter().copied().max_by_key(|offer| {
                (
                    !offer.echo,
                    offer.modified_at,
                    offer.system == System::Salesforce,
                )
            });
            pick(best, format!("{field}: most recent change"))
        }
    }
}

/// The stage a record maps to, as an opinion.
pub fn opinion_of(vocabulary: &Vocabulary, record: &MemberRow, echo: bool) -> Option<Opinion> {
    let stage = vocabulary.lookup(record.stage.as_deref()?)?;
    Some(Opinion {
        system: record.key.system,
        stage,
        record_id: record.key.id.clone(),
        rule: record.stage_rule.clone(),
        raw: record.raw_stage.clone(),
        echo,
    })
}

/// Fields of the person by system: the most recently changed live record of each system
/// offers its values.
pub fn field_offers<'a>(
    records: &[&'a MemberRow],
    echoes: &BTreeMap<(System, String), bool>,
) -> BTreeMap<String, Vec<FieldOffer<'a>>> {
    let mut offers: BTreeMap<String, Vec<FieldOffer<'a>>> = BTreeMap::new();
    for system in System::ALL {
        let Some(record) = records
            .iter()
            .filter(|record| record.key.system == system)
            .max_by_key(|record| record.modified_at)
        else {
            continue;
        };
        for (field, value) in &record.fields {
            offers.entry(field.clone()).or_default().push(FieldOffer {
                system,
                value,
                modified_at: record.modified_at,
                echo: echoes
                    .get(&(system, field.clone()))
                    .copied()
                    .unwrap_or(false),
            });
        }
    }
    offers
}

/// A date or date-time property's value as a time: HubSpot's ISO 8601 text or epoch
/// milliseconds, Salesforce's `2024-05-01T12:34:56.000+0000`, or a plain date (the start of
/// that day, UTC).
pub fn native_time(system: System, text: &str) -> Option<Timestamp> {
    let time = match system {
        System::Hubspot => crate::hubspot::read::parse_hubspot_time(text),
        System::Salesforce => crate::salesforce::read::parse_salesforce_time(text),
    };
    time.or_else(|| {
        text.parse::<jiff::civil::Date>()
            .ok()
            .and_then(|date| date.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|zoned| zoned.timestamp())
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::EnvVars;
    use crate::diagnostics::{Diagnostics, SourceFile};

    fn vocabulary() -> Vocabulary {
        let text = include_str!("../../mappings/vocabulary.toml").to_string();
        let mut diagnostics = Diagnostics::default();
        let vocabulary =
            Vocabulary::parse(&SourceFile::new("vocabulary.toml", text), &mut diagnostics);
        assert!(diagnostics.is_empty(), "{diagnostics}");
        vocabulary
    }

    fn policy(toml: &str) -> ReconcileConfig {
        let text = format!(
            "[hubspot]\nenabled = false\n[salesforce]\nenabled = false\n[reconcile]\n{toml}"
        );
        let source = SourceFile::new("crmsync.toml", text);
        let (config, diagnostics) =
            crate::config::parse(Some(&source), Path::new(""), &EnvVars::default());
        assert!(diagnostics.is_empty(), "{diagnostics}");
        config.reconcile
    }

    fn says(vocabulary: &Vocabulary, system: System, stage: &str) -> Opinion {
        Opinion {
            system,
            stage: vocabulary.lookup(stage).unwrap(),
            record_id: "1".into(),
            rule: Some("rule".into()),
            raw: None,
            echo: false,
        }
    }

    fn decided(vocabulary: &Vocabulary, decision: &StageDecision) -> String {
        decision
            .stage
            .map(|stage| vocabulary.id_of(stage).to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_furthest_stage_wins_and_sales_side_states_override() {
        let v = vocabulary();
        let furthest = policy("stage_policy = \"furthest\"\nsales_side_states_override = true");
        let both = |hubspot: &str, salesforce: &str| {
            let opinions = [
                says(&v, System::Hubspot, hubspot),
                says(&v, System::Salesforce, salesforce),
            ];
            decided(&v, &decide_stage(&v, &furthest, &opinions, None))
        };
        assert_eq!(both("mql", "sql"), "sql");
        assert_eq!(both("customer", "sal"), "customer");
        assert_eq!(both("opportunity", "disqualified"), "disqualified");
        assert_eq!(
            both("recycled", "sal"),
            "sal",
            "marketing's side state is no override"
        );
        let no_override = policy("sales_side_states_override = false");
        let opinions = [
            says(&v, System::Hubspot, "mql"),
            says(&v, System::Salesforce, "disqualified"),
        ];
        assert_eq!(
            decided(&v, &decide_stage(&v, &no_override, &opinions, None)),
            "mql"
        );
    }

    #[test]
    fn owners_split_the_funnel_at_the_boundary() {
        let v = vocabulary();
        let owners = policy("stage_policy = \"owners\"\nmarketing_owns_until = \"mql\"");
        let both = |hubspot: &str, salesforce: &str| {
            let opinions = [
                says(&v, System::Hubspot, hubspot),
                says(&v, System::Salesforce, salesforce),
            ];
            decided(&v, &decide_stage(&v, &owners, &opinions, None))
        };
        assert_eq!(both("mql", "sal"), "sal", "sales owns sal");
        assert_eq!(
            both("opportunity", "mql"),
            "mql",
            "marketing cannot claim a sales stage"
        );
        assert_eq!(
            both("lead", "mql"),
            "lead",
            "below the boundary marketing decides"
        );
    }

    #[test]
    fn regressions_are_refused_or_allowed_by_policy_and_echoes_have_no_say() {
        let v = vocabulary();
        let strict = policy("allow_regression = false");
        let sql = v.lookup("sql");
        let opinions = [says(&v, System::Salesforce, "mql")];
        let decision = decide_stage(&v, &strict, &opinions, sql);
        assert_eq!(decided(&v, &decision), "sql");
        assert_eq!(
            decision.refused_regression,
            Some((sql.unwrap(), v.lookup("mql").unwrap()))
        );
        assert!(decision.reason.contains("refused"), "{}", decision.reason);
        let loose = policy("allow_regression = true");
        let decision = decide_stage(&v, &loose, &opinions, sql);
        assert_eq!(decided(&v, &decision), "mql");
        assert!(decision.regressed);
        // Leaving a terminal stage is a regression too.
        let customer = v.lookup("customer");
        let decision = decide_stage(
            &v,
            &strict,
            &[says(&v, System::Hubspot, "disqualified")],
            customer,
        );
        assert_eq!(decided(&v, &decision), "customer");
        // HubSpot holding what crmsync wrote does not outvote Salesforce's own change.
        let mut echo = says(&v, System::Hubspot, "sql");
        echo.echo = true;
        let opinions = [echo, says(&v, System::Salesforce, "disqualified")];
        assert_eq!(
            decided(&v, &decide_stage(&v, &policy(""), &opinions, None)),
            "disqualified"
        );
        let nobody = decide_stage(&v, &strict, &[], sql);
        assert_eq!(decided(&v, &nobody), "sql", "no opinion keeps the stage");
    }

    #[test]
    fn fields_follow_their_source_of_truth_and_ignore_echoes() {
        let policy = policy(
            "[reconcile.field_sources]\ndefault = \"most_recent\"\ncompany = \"salesforce\"",
        );
        let old: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let new: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let acme = Value::from("Acme");
        let globex = Value::from("Globex");
        let offers = |hubspot_echo: bool| {
            vec![
                FieldOffer {
                    system: System::Hubspot,
                    value: &acme,
                    modified_at: new,
                    echo: hubspot_echo,
                },
                FieldOffer {
                    system: System::Salesforce,
                    value: &globex,
                    modified_at: old,
                    echo: false,
                },
            ]
        };
        assert_eq!(
            choose_field("company", &policy, &offers(false)).value,
            globex
        );
        assert_eq!(choose_field("title", &policy, &offers(false)).value, acme);
        assert_eq!(
            choose_field("title", &policy, &offers(true)).value,
            globex,
            "a value crmsync wrote is not the most recent change"
        );
        let null = Value::Null;
        let only_hubspot = [
            FieldOffer {
                system: System::Hubspot,
                value: &acme,
                modified_at: old,
                echo: false,
            },
            FieldOffer {
                system: System::Salesforce,
                value: &null,
                modified_at: new,
                echo: false,
            },
        ];
        assert_eq!(
            choose_field("company", &policy, &only_hubspot).value,
            acme,
            "an empty source falls back"
        );
    }

    #[test]
    fn native_times_read_every_form_the_crms_send() {
        let at = |text: &str| Some(text.parse::<Timestamp>().unwrap());
        assert_eq!(
            native_time(System::Hubspot, "2024-05-01T12:34:56.789Z"),
            at("2024-05-01T12:34:56.789Z")
        );
        assert_eq!(
            native_time(System::Hubspot, "1714566896789"),
            at("2024-05-01T12:34:56.789Z")
        );
        assert_eq!(
            native_time(System::Salesforce, "2024-05-01T12:34:56.000+0000"),
            at("2024-05-01T12:34:56Z")
        );
        assert_eq!(
            native_time(System::Salesforce, "2024-05-01"),
            at("2024-05-01T00:00:00Z")
        );
        assert_eq!(native_time(System::Salesforce, "soon"), None);
    }
}
