//! What the connector read tests share: stopping a read part-way, as an engine that went away
//! would, and keeping what it handed over.

use crmsync::record::ReadEvent;
use tokio::sync::mpsc;

/// What a read handed over before it was stopped.
pub struct Stopped<T, R> {
    /// What the read returned (an error, once its events were no longer taken).
    pub outcome: T,
    /// Ids of the records taken.
    pub ids: Vec<String>,
    /// The last resume point taken.
    pub point: Option<R>,
}

/// Runs `read`, taking its events one at a time, and stops taking them at the first
/// progress after `pages` pages of records.
pub async fn read_until<R, T, F, Fut>(pages: usize, read: F) -> Stopped<T, R>
where
    F: FnOnce(mpsc::Sender<ReadEvent<R>>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let (sender, mut receiver) = mpsc::channel(1);
    let consume = async {
        let (mut taken, mut ids, mut point) = (0, Vec::new(), None);
        while let Some(event) = receiver.recv().await {
            match event {
                ReadEvent::Records(records) => {
                    taken += 1;
                    ids.extend(records.into_iter().map(|record| record.id));
                }
                ReadEvent::Progress(progress) => {
                    point = Some(progress);
                    if taken >= pages {
                        break;
                    }
                }
                _ => {}
            }
        }
        drop(receiver);
        (ids, point)
    };
    let (outcome, (ids, point)) = tokio::join!(read(sender), consume);
    Stopped {
        outcome,
        ids,
        point,
    }
}
