//! The CRM emulator: HubSpot and Salesforce as their APIs look on the wire, so the connector,
//! the demo and the benchmarks can run without either service.
//!
//! This part holds the seeded org data ([`data`]); the HTTP surfaces, rate limits and faults
//! build on it.

pub mod data;
