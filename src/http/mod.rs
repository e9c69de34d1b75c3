//! One HTTP stack for both CRMs: the client and its `oauth2` adapter ([`client`]), request
//! pacing under rate budgets ([`limiter`]), the retry schedule ([`retry`]), batches of a write
//! sent a few at a time ([`in_flight`]) and what keeps secrets out of its logs ([`redact`]).

pub mod client;
pub mod in_flight;
pub mod limiter;
pub mod redact;
pub mod retry;
