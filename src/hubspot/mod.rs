//! The HubSpot connector: authentication ([`auth`]), the one place every request goes
//! through ([`client`]) and full and incremental reads ([`read`]); schema and write-back
//! build on them.

pub mod auth;
pub mod client;
pub mod read;
