//! Batches of a write sent a few at a time: the CRMs take a few hundred milliseconds to answer
//! each, so one at a time would use a fraction of their allowance (the clients' limiters still
//! pace every request).

use std::collections::VecDeque;
use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

/// Batches in flight at once on a write's first round.
const FIRST_ROUND: usize = 4;

/// How many batches of a write's `round` (0 first, then retries) may be out at once: retries
/// of locked records go one at a time, as records sharing a parent, sent at once, could lock
/// each other.
pub fn cap_for_round(round: u32) -> usize {
    if round == 0 { FIRST_ROUND } else { 1 }
}

/// Sends the batches of `pending` with up to `cap` in flight, in order, through `send`;
/// `take` folds each answer in and may put parts of a batch at the front of `pending` to go
/// next. On the first failure the batches already out finish (their answers count: they
/// wrote), and the failure comes back with every input not sent: its batch's, those of other
/// batches that failed meanwhile, and all still pending.
pub async fn send_batches<I, O, E, Send, Sent, Take>(
    pending: &mut VecDeque<Vec<I>>,
    cap: usize,
    send: Send,
    mut take: Take,
) -> Result<(), (E, Vec<I>)>
where
    Send: Fn(Vec<I>) -> Sent,
    Sent: Future<Output = (Vec<I>, Result<O, E>)>,
    Take: FnMut(O, &mut VecDeque<Vec<I>>),
{
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < cap.max(1)
            && let Some(batch) = pending.pop_front()
        {
            in_flight.push(send(batch));
        }
        let Some((batch, sent)) = in_flight.next().await else {
            return Ok(());
        };
        match sent {
            Ok(answer) => take(answer, pending),
            Err(error) => {
                let mut unsent = batch;
                while let Some((other, sent)) = in_flight.next().await {
                    match sent {
                        Ok(answer) => take(answer, pending),
                        Err(_) => unsent.extend(other),
                    }
                }
                unsent.extend(pending.drain(..).flatten());
                return Err((error, unsent));
            }
        }
    }
}
