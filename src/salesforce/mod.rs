//! The Salesforce connector: sessions from the JWT bearer, refresh-token or
//! client-credentials flows ([`auth`]), the one place every request goes through, with the
//! org's API budget and the bounded concurrency ([`client`]), objects' fields and picklists
//! ([`describe`]), lead statuses and opportunity stages ([`metadata`]), queries built from
//! parts, never from text ([`soql`]), full and incremental reads with deletions and merges
//! ([`read`]) — over REST, or for large reads through Bulk API 2.0 query jobs ([`bulk`]) —
//! and write-back through sObject Collections ([`write`]); [`connect`] builds it all from
//! configuration.

pub mod auth;
pub mod bulk;
pub mod client;
pub mod connect;
pub mod describe;
pub mod metadata;
pub mod read;
pub mod soql;
pub mod write;
