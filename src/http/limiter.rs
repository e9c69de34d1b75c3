//! Pacing requests under a budget of "N per rolling window" (HubSpot's 100 per 10 s, search's
//! 5 per second), shared by every task that calls one API.
//!
//! GCRA (governor) does not map one-to-one onto a rolling window: a quota of N per window with
//! a burst of N lets 2N − 1 requests through in one window. [`WindowBudget::quota`] sizes it as
//! rate (N − b) per window with burst b instead, so no rolling window ever holds more than N
//! while the sustained rate stays at (N − b)/N of the budget — a little less, for a margin that
//! absorbs the jitter added to each wait and network delays. A [`Pacer`] adds what governor
//! lacks: a shared pause (a `Retry-After`, an exhausted window reported by the API) and a
//! rebuild when the API reports a different maximum than configured.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use tokio::time::Instant;

/// "At most `max` requests in any `window`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowBudget {
    pub max: u32,
    pub window: Duration,
}

/// Problems with a budget as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "a request budget needs at least one request per window (got {max} per {window:?}) — set a positive limit"
    )]
    Empty { max: u32, window: Duration },
}

impl WindowBudget {
    /// The burst kept for requests after a quiet spell: a twentieth of the budget, at least one.
    pub fn burst(self) -> u32 {
        (self.max / 20).max(1)
    }

    /// The most a granted request is held back at random, so waiting tasks do not all wake
    /// at once: a quarter of the spacing between requests, at most 20 ms.
    pub fn jitter(self) -> Duration {
        let steady = (self.max.saturating_sub(self.burst())).max(1);
        (self.window / steady / 4).min(Duration::from_millis(20))
    }

    /// Time added to the window for what the limiter does not see: the jitter that delays a
    /// granted request, and network delays that bring requests closer together on arrival
    /// than they left (a fiftieth of the window).
    pub fn margin(self) -> Duration {
        self.window / 50 + self.jitter()
    }

    /// A GCRA quota no rolling `window` can exceed `max` under: one request every
    /// `(window + margin) / (max − burst)`, with `burst` on top.
    pub fn quota(self) -> Result<Quota, BudgetError> {
        let empty = || BudgetError::Empty {
            max: self.max,
            window: self.window,
        };
        if self.max == 0 {
            return Err(empty());
        }
        let burst = self.burst();
        let steady = (self.max - burst).max(1);
        let burst = NonZeroU32::new(burst).ok_or_else(empty)?;
        Quota::with_period((self.window + self.margin()) / steady)
            .map(|quota| quota.allow_burst(burst))
            .ok_or_else(empty)
    }
}

/// Paces the requests of every task under one [`WindowBudget`].
#[derive(Debug)]
pub struct Pacer {
    budget: Mutex<WindowBudget>,
    limiter: RwLock<Arc<DefaultDirectRateLimiter>>,
    /// No request starts before this (Retry-After, or a window the API says is spent).
    pause_until: Mutex<Option<Instant>>,
}

impl Pacer {
    pub fn new(budget: WindowBudget) -> Result<Self, BudgetError> {
        Ok(Self {
            limiter: RwLock::new(Arc::new(RateLimiter::direct(budget.quota()?))),
            budget: Mutex::new(budget),
            pause_until: Mutex::new(None),
        })
    }

    /// The budget in force.
    pub fn budget(&self) -> WindowBudget {
        *self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a request may start: after any pause, then as the budget allows (with a
    /// little jitter, so waiting tasks do not all wake at once).
    pub async fn ready(&self) {
        loop {
            let pause = *self
                .pause_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match pause {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        let limiter = Arc::clone(
            &self
                .limiter
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let jitter = self.budget().jitter();
        limiter.until_ready_with_jitter(Jitter::up_to(jitter)).await;
        // A pause set while this task waited for its turn (a Retry-After) still holds it back.
        let pause = *self
            .pause_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = pause.filter(|until| *until > Instant::now()) {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Holds every request back for `duration` from now (a later pause already set stands).
    pub fn pause_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut pause = self
            .pause_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pause.is_none_or(|current| current < until) {
            *pause = Some(until);
        }
    }

    /// Takes the maximum the API reports (`X-HubSpot-RateLimit-Max`): when it differs from the
    /// budget in force, the limiter is rebuilt for it. Returns whether it changed.
    pub fn observe_max(&self, max: u32) -> bool {
        let mut budget = self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if budget.max == max || max == 0 {
            return false;
        }
        let updated = WindowBudget { max, ..*budget };
        let Ok(quota) = updated.quota() else {
            return false;
        };
        *budget = updated;
        *self
            .limiter
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(RateLimiter::direct(quota));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    /// Sends as fast as `budget`'s quota allows for `seconds` of fake time; returns the send
    /// times in milliseconds.
    fn send_times(budget: WindowBudget, seconds: u64) -> Vec<u64> {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(budget.quota().expect("quota"), clock.clone());
        let mut sent = Vec::new();
        for millisecond in 0..seconds * 1_000 {
            while limiter.check().is_ok() {
                sent.push(millisecond);
            }
            clock.advance(Duration::from_millis(1));
        }
        sent
    }

    fn busiest_window(sent: &[u64], window_ms: u64) -> usize {
        let mut busiest = 0;
        let mut start = 0;
        for (end, at) in sent.iter().enumerate() {
            while sent[start] + window_ms <= *at {
                start += 1;
            }
            busiest = busiest.max(end - start + 1);
        }
        busiest
    }

    #[test]
    fn no_rolling_window_exceeds_the_budget_and_the_rate_stays_high() {
        for max in [5, 100, 190, 250] {
            let budget = WindowBudget {
                max,
                window: Duration::from_secs(10),
            };
            let sent = send_times(budget, 60);
            let busiest = busiest_window(&sent, 10_000);
            assert!(busiest <= max as usize, "{max}: {busiest} in one window");
            // The steady rate, max − burst per window and margin: ≥ 90% of the budget from 20
            // requests a window up (the general budgets), 78% for search's 5 a second.
            let steady = f64::from(max - budget.burst());
            let per_window = steady * 10.0 / (10.0 + budget.margin().as_secs_f64());
            assert!(
                sent.len() as f64 >= 6.0 * per_window - 1.0,
                "{max}: only {} sent in 60 s",
                sent.len()
            );
            if max >= 20 {
                assert!(
                    sent.len() as f64 >= max as f64 * 6.0 * 0.9,
                    "{max}: only {} sent in 60 s",
                    sent.len()
                );
            }
        }
    }

    #[test]
    fn requests_delayed_by_jitter_and_the_network_still_fit_the_window() {
        // Requests that leave or arrive up to the margin apart from when the limiter let
        // them go still fit the budget: no window as long as the budget's plus the margin
        // holds more than the budget allows.
        for max in [5, 100, 190, 250, 500, 1_000] {
            let budget = WindowBudget {
                max,
                window: Duration::from_secs(10),
            };
            let margin_ms = budget.margin().as_millis() as u64;
            let sent = send_times(budget, 60);
            let busiest = busiest_window(&sent, 10_000 + margin_ms);
            assert!(busiest <= max as usize, "{max}: {busiest} in one window");
            assert!(budget.jitter() * 4 <= budget.window / (max - budget.burst()).max(1));
        }
    }

    #[test]
    fn a_naive_quota_would_have_let_twice_the_budget_through() {
        // What the sizing avoids: N per window with burst N.
        let clock = FakeRelativeClock::default();
        let naive = Quota::with_period(Duration::from_millis(100))
            .expect("quota")
            .allow_burst(NonZeroU32::new(100).expect("non-zero"));
        let limiter = RateLimiter::direct_with_clock(naive, clock.clone());
        let mut sent = Vec::new();
        for millisecond in 0..20_000 {
            while limiter.check().is_ok() {
                sent.push(millisecond);
            }
            clock.advance(Duration::from_millis(1));
        }
        assert!(busiest_window(&sent, 10_000) > 190);
    }

    #[test]
    fn an_empty_budget_is_refused() {
        let budget = WindowBudget {
            max: 0,
            window: Duration::from_secs(10),
        };
        assert!(matches!(budget.quota(), Err(BudgetError::Empty { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_hold_every_request_back_and_a_new_maximum_rebuilds() {
        let pacer = Pacer::new(WindowBudget {
            max: 100,
            window: Duration::from_secs(10),
        })
        .expect("pacer");
        let started = Instant::now();
        pacer.pause_for(Duration::from_secs(3));
        pacer.pause_for(Duration::from_secs(1));
        pacer.ready().await;
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "the longer pause stands"
        );
        assert!(pacer.observe_max(190));
        assert_eq!(pacer.budget().max, 190);
        assert!(!pacer.observe_max(190), "the same maximum changes nothing");
    }
}
