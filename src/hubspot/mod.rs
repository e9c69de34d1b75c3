//! The HubSpot connector: authentication ([`auth`]); reads, schema and write-back join it.

pub mod auth;
