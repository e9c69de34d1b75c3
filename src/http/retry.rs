//! When and how long to wait before trying a request again: capped exponential backoff with
//! full jitter for server errors and dropped connections, and the server's own word
//! (`Retry-After`) when it gives one. Which answers are worth retrying is each connector's
//! call; this module only keeps the schedule.

use std::time::Duration;

use http::HeaderMap;

/// The backoff schedule of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The wait before the second attempt, before jitter.
    pub base_delay: Duration,
    /// No wait is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Whether attempt number `attempt` (1 for the first) may be followed by another.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait after attempt `attempt` failed: a random share (`unit`, from 0 to 1) of
    /// `base × 2^(attempt − 1)`, capped — "full jitter", so clients that failed together do
    /// not come back together.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`RetryPolicy::delay`] with a fresh random share.
    pub fn jittered_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, random_unit())
    }
}

/// A number from 0 to 1, random enough to spread retries (not for anything secret).
pub fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` in seconds (the form HubSpot and most proxies send), if present and sane.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|seconds| Duration::from_secs(seconds.min(3_600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_stays_below_the_ceiling() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let ceilings: Vec<Duration> = (1..=7).map(|attempt| policy.delay(attempt, 1.0)).collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1_600, 2_000, 2_000].map(Duration::from_millis)
        );
        assert_eq!(policy.delay(3, 0.5), Duration::from_millis(200));
        assert_eq!(policy.delay(u32::MAX, 1.0), Duration::from_secs(2));
        for attempt in 1..=8 {
            let delay = policy.jittered_delay(attempt);
            assert!(delay <= policy.delay(attempt, 1.0), "{delay:?}");
        }
        assert!(policy.may_retry(9) && !policy.may_retry(10));
    }

    #[test]
    fn retry_after_reads_seconds_and_ignores_the_rest() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "3".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after", "soon".parse().expect("header"));
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "99999999".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3_600)));
    }
}
