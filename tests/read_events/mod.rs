//! What the connector read tests share: collecting what a read sends, and stopping a read
//! part-way, as an engine that went away would, keeping what it handed over.

// Each test binary uses some of these, not all.
#![allow(dead_code)]

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

/// Everything a read sent, collected off its channel.
pub struct Collected<R> {
    pub records: Vec<crmsync::record::SourceRecord>,
    /// Ids of the records gone (archived, deleted).
    pub gone: Vec<String>,
    /// Survivors and the ids they absorbed.
    pub merges: Vec<(String, Vec<String>)>,
    /// The last resume point.
    pub resume: Option<R>,
}

/// Runs `read` against a small channel — the reader must wait for the consumer, not buffer
/// everything — and collects what it sends.
pub async fn collect<R, S, F, Fut>(read: F) -> (Collected<R>, S)
where
    R: Send + 'static,
    F: FnOnce(mpsc::Sender<ReadEvent<R>>) -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let (sender, mut receiver) = mpsc::channel(2);
    let consumer = tokio::spawn(async move {
        let mut collected = Collected {
            records: Vec::new(),
            gone: Vec::new(),
            merges: Vec::new(),
            resume: None,
        };
        while let Some(event) = receiver.recv().await {
            match event {
                ReadEvent::Records(records) => collected.records.extend(records),
                ReadEvent::Archived(gone) => {
                    collected
                        .gone
                        .extend(gone.into_iter().map(|tombstone| tombstone.id));
                }
                ReadEvent::Merged(merges) => collected.merges.extend(
                    merges
                        .into_iter()
                        .map(|merge| (merge.survivor, merge.absorbed)),
                ),
                ReadEvent::Progress(point) => collected.resume = Some(point),
            }
        }
        collected
    });
    let summary = read(sender).await;
    (consumer.await.expect("consumer"), summary)
}
