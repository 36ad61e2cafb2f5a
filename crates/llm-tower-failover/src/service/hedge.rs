//! Hedging: two calls at once, the first usable outcome wins.

use super::*;

/// Two calls at once: the first usable outcome wins, the other is dropped.
pub(crate) async fn race(
    a: impl Future<Output = Outcome>,
    b: impl Future<Output = Outcome>,
    attempts: &mut Vec<BackendAttempt>,
    tried: &mut usize,
) -> Outcome {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut a_done, mut b_done) = (false, false);
    loop {
        let o = tokio::select! {
            o = &mut a, if !a_done => { a_done = true; o }
            o = &mut b, if !b_done => { b_done = true; o }
        };
        match o {
            Outcome::Failed(f, _) if !(a_done && b_done) => {
                attempts.push(f);
                *tried += 1;
            }
            other => return other,
        }
    }
}
