//! The HubSpot connector: authentication ([`auth`]), the one place every request goes
//! through ([`client`]), full and incremental reads ([`read`]) and the portal's schema —
//! properties and their options, pipelines, owners ([`schema`]) — and batched write-back
//! ([`write`]); [`connect`] builds it all from configuration.

pub mod auth;
pub mod client;
pub mod connect;
pub mod read;
pub mod schema;
pub mod write;
