//! A request to end a run early (SIGTERM, a lost lease): the run finishes what it holds —
//! the page it is storing with its checkpoint, the reconcile chunk it is committing, the
//! write round it has sent (given a few seconds: see [`StopRequest::finish_within`]) — and
//! starts nothing new, so the next run resumes where it left.

use tokio::sync::watch;

/// Shared by whoever may ask a run to stop and the run itself; clones are one request. A
/// request made with [`Self::linked`] also counts its parent's: a daemon's SIGTERM reaches
/// the run, a run's own stop (a lost lease) does not reach the daemon.
#[derive(Debug, Clone)]
pub struct StopRequest {
    reason: std::sync::Arc<watch::Sender<Option<String>>>,
    parent: Option<Box<StopRequest>>,
}

impl Default for StopRequest {
    fn default() -> Self {
        Self {
            reason: std::sync::Arc::new(watch::Sender::new(None)),
            parent: None,
        }
    }
}

impl StopRequest {
    /// Asks the run to stop, saying why (in words for the run's problems); the first reason
    /// given stands.
    pub fn request(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.reason.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(reason);
            true
        });
    }

    /// A request of its own that is also made whenever this one is.
    pub fn linked(&self) -> Self {
        Self {
            parent: Some(Box::new(self.clone())),
            ..Self::default()
        }
    }

    /// Why a stop was asked for (here, else of a parent), if it was.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .borrow()
            .clone()
            .or_else(|| self.parent.as_ref().and_then(|parent| parent.reason()))
    }

    pub fn is_requested(&self) -> bool {
        self.reason().is_some()
    }

    /// Resolves once a stop is asked for, here or of a parent (at once if it already was).
    pub async fn requested(&self) {
        let mut receiver = self.reason.subscribe();
        // The sender lives in `self`, so the wait ends only with a request.
        let own = async {
            let _ = receiver.wait_for(Option::is_some).await;
        };
        match &self.parent {
            None => own.await,
            Some(parent) => {
                tokio::select! {
                    () = own => {}
                    () = Box::pin(parent.requested()) => {}
                }
            }
        }
    }

    /// Runs `work` to its end — or, once a stop is asked for, for at most `grace` more, and
    /// then gives `None` (the work is dropped where it waits).
    pub async fn finish_within<T>(
        &self,
        grace: std::time::Duration,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            output = work => Some(output),
            () = async {
                self.requested().await;
                tokio::time::sleep(grace).await;
            } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_is_given_its_grace_after_a_stop_and_then_dropped() {
        let grace = std::time::Duration::from_millis(300);
        let stop = StopRequest::default();
        // Work that ends by itself ends as usual, stop or not.
        assert_eq!(stop.finish_within(grace, async { 7 }).await, Some(7));
        let started = std::time::Instant::now();
        let stopper = tokio::spawn({
            let stop = stop.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                stop.request("SIGTERM");
            }
        });
        let never = stop
            .finish_within(grace, std::future::pending::<()>())
            .await;
        assert_eq!(never, None);
        let waited = started.elapsed();
        assert!(
            waited >= std::time::Duration::from_millis(500),
            "dropped {waited:?} after it began: before the stop and its grace"
        );
        stopper.await.expect("the stopper ends");
        // Work that finishes within the grace after a stop is kept.
        let kept = stop
            .finish_within(grace, async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                "answered"
            })
            .await;
        assert_eq!(kept, Some("answered"));
    }

    #[tokio::test]
    async fn a_request_wakes_every_waiter_and_the_first_reason_stands() {
        let stop = StopRequest::default();
        assert!(!stop.is_requested());
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move {
                stop.requested().await;
                stop.reason()
            }
        });
        tokio::task::yield_now().await;
        stop.request("SIGTERM");
        stop.request("lease lost");
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("the waiter ends");
        assert_eq!(seen.as_deref(), Some("SIGTERM"));
        // A wait that starts after the request ends at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), stop.requested())
            .await
            .expect("already requested");
    }

    #[tokio::test]
    async fn a_linked_request_follows_its_parent_but_not_the_other_way() {
        let daemon = StopRequest::default();
        let run = daemon.linked();
        run.request("lease lost");
        assert!(run.is_requested());
        assert!(!daemon.is_requested(), "a run's stop stays the run's");
        let next_run = daemon.linked();
        let waiter = tokio::spawn({
            let next_run = next_run.clone();
            async move {
                next_run.requested().await;
                next_run.reason()
            }
        });
        tokio::task::yield_now().await;
        daemon.request("SIGTERM received");
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the linked waiter wakes")
            .expect("the waiter ends");
        assert_eq!(seen.as_deref(), Some("SIGTERM received"));
    }
}
