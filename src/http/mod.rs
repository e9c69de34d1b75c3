//! One HTTP stack for both CRMs: the client and its `oauth2` adapter ([`client`]), request
//! pacing under rate budgets ([`limiter`]) and the retry schedule ([`retry`]).

pub mod client;
pub mod limiter;
pub mod retry;
