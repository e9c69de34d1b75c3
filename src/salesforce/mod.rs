//! The Salesforce connector: sessions from the JWT bearer, refresh-token or
//! client-credentials flows ([`auth`]) and the one place every request goes through, with the
//! org's API budget and the bounded concurrency ([`client`]).

pub mod auth;
pub mod client;
