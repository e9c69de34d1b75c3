//! One HTTP stack for both CRMs: request pacing under rate budgets ([`limiter`]); the client,
//! retry policy and redaction join it as the connectors land.

pub mod limiter;
