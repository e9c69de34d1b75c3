//! The HubSpot connector: authentication ([`auth`]) and the one place every request goes
//! through ([`client`]); reads, schema and write-back build on them.

pub mod auth;
pub mod client;
