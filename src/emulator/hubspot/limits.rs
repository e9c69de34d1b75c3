//! HubSpot's request budgets: a rolling 10-second window per app and a daily allowance per
//! account, reported in `X-HubSpot-RateLimit-*` headers and enforced with 429s whose bodies name
//! the policy that was hit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The account's limits (HubSpot: 100 per 10 s and 250,000 per day on Free/Starter; 190 and
/// 625,000 on Professional; 190 and 1,000,000 on Enterprise; 250 with the limit-increase pack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubspotLimits {
    pub per_ten_seconds: u32,
    pub per_day: u64,
}

impl Default for HubspotLimits {
    fn default() -> Self {
        Self {
            per_ten_seconds: 100,
            per_day: 250_000,
        }
    }
}

/// HubSpot subscription tiers, which set the API limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubspotTier {
    /// Free and Starter: 100 per 10 s, 250,000 a day.
    Free,
    /// Professional: 190 per 10 s, 625,000 a day.
    Professional,
    /// Enterprise: 190 per 10 s, 1,000,000 a day.
    Enterprise,
    /// With the API limit increase: 250 per 10 s, 1,000,000 a day.
    LimitIncrease,
}

impl HubspotLimits {
    pub fn for_tier(tier: HubspotTier) -> Self {
        let (per_ten_seconds, per_day) = match tier {
            HubspotTier::Free => (100, 250_000),
            HubspotTier::Professional => (190, 625_000),
            HubspotTier::Enterprise => (190, 1_000_000),
            HubspotTier::LimitIncrease => (250, 1_000_000),
        };
        Self {
            per_ten_seconds,
            per_day,
        }
    }
}

/// The policy a refused request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    TenSecondlyRolling,
    /// The search endpoints' own per-second budget.
    Secondly,
    Daily,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            Policy::Secondly => "SECONDLY",
            Policy::Daily => "DAILY",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Policy::TenSecondlyRolling => "You have reached your ten_secondly_rolling limit.",
            Policy::Secondly => "You have reached your secondly limit.",
            Policy::Daily => "You have reached your daily limit.",
        }
    }
}

/// What the headers of one answer report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max: u32,
    pub remaining: u32,
    pub daily: u64,
    pub daily_remaining: u64,
}

pub const WINDOW: Duration = Duration::from_secs(10);

/// HubSpot's search endpoints allow about five requests per second per account.
pub const SEARCH_PER_SECOND: u32 = 5;

/// The budgets of one account: a rolling window and a daily allowance.
#[derive(Debug)]
pub struct RateLimiter {
    limits: HubspotLimits,
    window_length: Duration,
    window_policy: Policy,
    enforce: bool,
    window: VecDeque<Instant>,
    used_today: u64,
}

impl RateLimiter {
    /// The general budget: `per_ten_seconds` in a rolling 10 s, `per_day` a day.
    pub fn new(limits: HubspotLimits, enforce: bool) -> Self {
        Self {
            limits,
            window_length: WINDOW,
            window_policy: Policy::TenSecondlyRolling,
            enforce,
            window: VecDeque::new(),
            used_today: 0,
        }
    }

    /// The search budget: `per_second` in a rolling second.
    pub fn search(per_second: u32, enforce: bool) -> Self {
        Self {
            limits: HubspotLimits {
                per_ten_seconds: per_second,
                per_day: u64::MAX,
            },
            window_length: Duration::from_secs(1),
            window_policy: Policy::Secondly,
            enforce,
            window: VecDeque::new(),
            used_today: 0,
        }
    }

    /// Counts a request at `now`: the budget after it, or the policy that refuses it. Refused
    /// requests do not use the budget.
    /// A new day: the daily allowance is whole again.
    pub fn new_day(&mut self) {
        self.used_today = 0;
    }

    pub fn admit(&mut self, now: Instant) -> Result<Budget, Policy> {
        while self
            .window
            .front()
            .is_some_and(|sent| now.duration_since(*sent) >= self.window_length)
        {
            self.window.pop_front();
        }
        if self.enforce {
            if self.used_today >= self.limits.per_day {
                return Err(Policy::Daily);
            }
            if self.window.len() >= self.limits.per_ten_seconds as usize {
                return Err(self.window_policy);
            }
        }
        self.window.push_back(now);
        self.used_today += 1;
        let in_window = u32::try_from(self.window.len()).unwrap_or(u32::MAX);
        Ok(Budget {
            max: self.limits.per_ten_seconds,
            remaining: self.limits.per_ten_seconds.saturating_sub(in_window),
            daily: self.limits.per_day,
            daily_remaining: self.limits.per_day.saturating_sub(self.used_today),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rolling_window_refuses_the_request_over_the_limit_and_frees_up() {
        let limits = HubspotLimits {
            per_ten_seconds: 3,
            per_day: 100,
        };
        let mut limiter = RateLimiter::new(limits, true);
        let start = Instant::now();
        for expected_remaining in [2, 1, 0] {
            assert_eq!(
                limiter.admit(start).map(|b| b.remaining),
                Ok(expected_remaining)
            );
        }
        assert_eq!(limiter.admit(start), Err(Policy::TenSecondlyRolling));
        assert!(limiter.admit(start + WINDOW).is_ok());
    }

    #[test]
    fn the_search_budget_is_per_second() {
        let mut limiter = RateLimiter::search(2, true);
        let start = Instant::now();
        assert!(limiter.admit(start).is_ok());
        assert!(limiter.admit(start).is_ok());
        assert_eq!(limiter.admit(start), Err(Policy::Secondly));
        assert!(limiter.admit(start + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_daily_allowance_runs_out() {
        let mut limiter = RateLimiter::new(
            HubspotLimits {
                per_ten_seconds: 100,
                per_day: 2,
            },
            true,
        );
        let now = Instant::now();
        assert_eq!(limiter.admit(now).map(|b| b.daily_remaining), Ok(1));
        assert_eq!(limiter.admit(now).map(|b| b.daily_remaining), Ok(0));
        assert_eq!(limiter.admit(now), Err(Policy::Daily));
    }

    #[test]
    fn without_enforcement_nothing_is_refused() {
        let mut limiter = RateLimiter::new(
            HubspotLimits {
                per_ten_seconds: 1,
                per_day: 1,
            },
            false,
        );
        let now = Instant::now();
        for _ in 0..5 {
            assert!(limiter.admit(now).is_ok());
        }
    }
}
