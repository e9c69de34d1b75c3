//! Checkpoints: where each stream's next read starts, as the warehouse stores them (JSON in
//! `checkpoints.cursor`). A cursor is written in the same transaction as the page it follows,
//! so it never points past data that is not stored.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::hubspot::read::{ResumePoint as HubspotPoint, TieProgress};
use crate::salesforce::read::ResumePoint as SalesforcePoint;

/// Where a stream's next read starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Cursor {
    /// The last read finished: the next reads what changed since `since`. For HubSpot,
    /// `archived_since` says where archives not yet swept for start when the last read did
    /// not sweep them (absent: at `since`).
    Incremental {
        since: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        archived_since: Option<Timestamp>,
    },
    /// A HubSpot full read stopped part-way.
    HubspotFull { after: String, started: Timestamp },
    /// A HubSpot incremental read stopped part-way.
    HubspotIncremental {
        modified_since: Timestamp,
        archived_since: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tie_at: Option<Timestamp>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tie_after_id: Option<String>,
    },
    /// A Salesforce full read stopped part-way.
    SalesforceFull {
        after_id: String,
        started: Timestamp,
    },
    /// A Salesforce incremental read stopped part-way.
    SalesforceIncremental { modstamp: Timestamp },
}

/// A cursor the warehouse holds that this crmsync cannot read.
#[derive(Debug, thiserror::Error)]
#[error(
    "the checkpoint of {system} {object} is unreadable ({source}) — run `crmsync sync --full` to read that object again from the start"
)]
pub struct CursorError {
    pub system: String,
    pub object: String,
    pub source: serde_json::Error,
}

impl Cursor {
    pub fn parse(system: &str, object: &str, text: &str) -> Result<Self, CursorError> {
        serde_json::from_str(text).map_err(|source| CursorError {
            system: system.to_string(),
            object: object.to_string(),
            source,
        })
    }

    pub fn to_json(&self) -> String {
        // A tagged enum of strings and times always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A HubSpot resume point, or `None` for a cursor of another kind.
    pub fn hubspot_point(&self) -> Option<HubspotPoint> {
        match self {
            Cursor::HubspotFull { after, started } => Some(HubspotPoint::Full {
                after: after.clone(),
                started: *started,
            }),
            Cursor::HubspotIncremental {
                modified_since,
                archived_since,
                tie_at,
                tie_after_id,
            } => Some(HubspotPoint::Incremental {
                modified_since: *modified_since,
                archived_since: *archived_since,
                tie: tie_at
                    .zip(tie_after_id.clone())
                    .map(|(at, after_id)| TieProgress { at, after_id }),
            }),
            _ => None,
        }
    }

    /// A Salesforce resume point, or `None` for a cursor of another kind.
    pub fn salesforce_point(&self) -> Option<SalesforcePoint> {
        match self {
            Cursor::SalesforceFull { after_id, started } => Some(SalesforcePoint::Full {
                after_id: after_id.clone(),
                started: *started,
            }),
            Cursor::SalesforceIncremental { modstamp } => Some(SalesforcePoint::Incremental {
                modstamp: *modstamp,
            }),
            _ => None,
        }
    }

    pub fn from_hubspot(point: HubspotPoint) -> Self {
        match point {
            HubspotPoint::Full { after, started } => Cursor::HubspotFull { after, started },
            HubspotPoint::Incremental {
                modified_since,
                archived_since,
                tie,
            } => Cursor::HubspotIncremental {
                modified_since,
                archived_since,
                tie_at: tie.as_ref().map(|tie| tie.at),
                tie_after_id: tie.map(|tie| tie.after_id),
            },
        }
    }

    pub fn from_salesforce(point: SalesforcePoint) -> Self {
        match point {
            SalesforcePoint::Full { after_id, started } => {
                Cursor::SalesforceFull { after_id, started }
            }
            SalesforcePoint::Incremental { modstamp } => Cursor::SalesforceIncremental { modstamp },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_survive_the_warehouse() {
        let at: Timestamp = "2026-12-01T10:00:00.123Z".parse().unwrap();
        for cursor in [
            Cursor::Incremental {
                since: at,
                archived_since: None,
            },
            Cursor::Incremental {
                since: at,
                archived_since: Some(at),
            },
            Cursor::HubspotFull {
                after: "1200".into(),
                started: at,
            },
            Cursor::HubspotIncremental {
                modified_since: at,
                archived_since: at,
                tie_at: Some(at),
                tie_after_id: Some("77".into()),
            },
            Cursor::SalesforceFull {
                after_id: "00Q000000000012AAA".into(),
                started: at,
            },
            Cursor::SalesforceIncremental { modstamp: at },
        ] {
            let text = cursor.to_json();
            assert_eq!(
                Cursor::parse("hubspot", "contacts", &text).unwrap(),
                cursor,
                "{text}"
            );
        }
        // Checkpoints written before archived sweeps had a cadence still read.
        assert_eq!(
            Cursor::parse(
                "hubspot",
                "contacts",
                "{\"mode\":\"incremental\",\"since\":\"2026-12-01T10:00:00.123Z\"}"
            )
            .unwrap(),
            Cursor::Incremental {
                since: at,
                archived_since: None
            }
        );
        let error = Cursor::parse("salesforce", "Lead", "{\"mode\":\"sideways\"}").unwrap_err();
        assert!(error.to_string().contains("crmsync sync --full"), "{error}");
    }
}
