//! Group commit of settlements for limits shared in PostgreSQL: calls that finish while
//! one batch is being written wait together and go in the next, so the ledger rows and
//! the spend of many calls cost one statement ([`crate::roundtrip::settle`]) instead of a
//! transaction each. A batch goes as soon as the previous one is done, unless calls of
//! this process are still on their way and calls here are short (a few milliseconds, as
//! when the model answers at once): then it waits for them up to [`LINGER`], as a
//! database's own group commit waits for its siblings. Splitting the same calls between
//! more processes would otherwise make each process's batches smaller, and every batch
//! has a fixed cost on the server. A lone call, or calls that take longer than
//! [`SHORT_CALL`] as real model calls do, wait for nothing but their own round trip.
//!
//! Crash rules are those of one transaction per call: a caller is answered only once its
//! batch is committed, and until then its reservation row stays held under this process's
//! lease (renewed while it lives, released by the sweeper when it died). What calls spent
//! from this process's budget slices is written by the slices' flush, not by the batch
//! ([`crate::leases::Leases::flush`]): a dead process's slice counts as spent in full. A batch the
//! database refuses is retried one call at a time, so one bad row fails only its own call.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use j1msky_db::{Db, DbError};
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::admission::{LeaseKind, BUSINESS_DAY};
use crate::leases::Leases;
use crate::roundtrip::{self, Settlement, Spent};

/// Calls settled in one statement at most.
pub const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Option<Spent>, String>>;

/// How long a batch waits at most for calls still on their way (the runtime's timer
/// rounds it up to its next millisecond).
pub const LINGER: Duration = Duration::from_millis(1);
/// Calls (admission to answer, on average) at most this long are waited for.
pub const SHORT_CALL: Duration = Duration::from_millis(10);

/// Calls admitted on this process whose settlement is not answered yet.
#[derive(Default)]
struct Coming {
    calls: AtomicUsize,
    gone: Notify,
    /// How long the recent calls took, in microseconds (a moving average).
    took_micros: AtomicU64,
}

impl Coming {
    fn short(&self) -> bool {
        self.took_micros.load(Ordering::Relaxed) <= SHORT_CALL.as_micros() as u64
    }
}

/// One call on its way to a settlement; dropped once it is answered (or failed before).
pub(crate) struct Expected {
    coming: Arc<Coming>,
    since: Instant,
}

impl Drop for Expected {
    fn drop(&mut self) {
        let took = self.since.elapsed().as_micros().min(u64::MAX as u128) as u64;
        // A moving average over about eight calls; a lost race only drops one sample.
        let old = self.coming.took_micros.load(Ordering::Relaxed);
        self.coming.took_micros.store(old - old / 8 + took / 8, Ordering::Relaxed);
        self.coming.calls.fetch_sub(1, Ordering::AcqRel);
        self.coming.gone.notify_one();
    }
}

/// Hands settlements to one writer per gateway.
pub(crate) struct Settler {
    queue: mpsc::UnboundedSender<(Settlement, Reply)>,
    coming: Arc<Coming>,
}

impl Settler {
    /// Starts the writer on `db`; it ends when the settler is dropped. A settled call's
    /// unspent reservation goes back to the slices of `leases` it was taken from. A batch
    /// waits up to `linger` for short calls on their way (zero: never).
    pub(crate) fn start(db: Db, leases: Option<Arc<Leases>>, linger: Duration) -> Arc<Settler> {
        let (queue, rx) = mpsc::unbounded_channel();
        let coming = Arc::new(Coming::default());
        // Tracked through its channel: every job's caller awaits its own reply, and the
        // loop ends (after answering what it holds) when the Settler drops.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(write_loop(db, leases, rx, coming.clone(), linger));
        Arc::new(Settler { queue, coming })
    }

    /// Counts a call that will be settled here, until the returned guard drops.
    pub(crate) fn expect(&self) -> Expected {
        self.coming.calls.fetch_add(1, Ordering::AcqRel);
        Expected { coming: self.coming.clone(), since: Instant::now() }
    }

    /// Settles one call; returns once it is committed, with the business's spend of the
    /// day after its batch ([`roundtrip::settle`]).
    pub(crate) async fn settle(&self, job: Settlement) -> Result<Option<Spent>, DbError> {
        let (tx, rx) = oneshot::channel();
        self.queue.send((job, tx)).map_err(|_| DbError::Corrupt("the settlement writer has stopped".into()))?;
        match rx.await {
            Ok(Ok(spent)) => Ok(spent),
            Ok(Err(e)) => Err(DbError::Corrupt(format!("settlement failed: {e}"))),
            Err(_) => Err(DbError::Corrupt("the settlement writer stopped before answering".into())),
        }
    }
}

/// The writer's own connection, kept between batches: a connection taken from the pool
/// and handed back per batch costs two more network round trips on PostgreSQL (the
/// pool's checks on handing it out and on taking it back), as many as the batch itself.
/// Dropped after a failed batch, so a broken one is replaced by the next.
async fn connection<'a>(
    db: &Db,
    held: &'a mut Option<PoolConnection<sqlx::Any>>,
) -> Result<&'a mut PoolConnection<sqlx::Any>, DbError> {
    if held.is_none() {
        *held = Some(db.pool().acquire().await?);
    }
    held.as_mut().ok_or_else(|| DbError::Corrupt("no settlement connection".into()))
}

async fn settle(
    db: &Db,
    held: &mut Option<PoolConnection<sqlx::Any>>,
    batch: &[Settlement],
) -> Result<Option<Spent>, DbError> {
    let conn = connection(db, held).await?;
    let result = roundtrip::settle(conn, batch).await;
    if result.is_err() {
        *held = None;
    }
    result
}

async fn write_loop(
    db: Db,
    leases: Option<Arc<Leases>>,
    mut rx: mpsc::UnboundedReceiver<(Settlement, Reply)>,
    coming: Arc<Coming>,
    linger: Duration,
) {
    let mut held = None;
    // The business's day spend as the last flush or batch answered it (window, micros).
    let mut known: Option<(i64, i64)> = None;
    // Something spent from a slice since the last flush.
    let mut unflushed = false;
    // Closing the pool waits for every connection to come back, this one too.
    let closing = db.pool().close_event();
    tokio::pin!(closing);
    loop {
        let first = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
            _ = &mut closing, if held.is_some() => {
                held = None;
                continue;
            }
            // Idle with spend not flushed: flushed after FLUSH_EVERY, so readers see it.
            _ = tokio::time::sleep(crate::leases::FLUSH_EVERY), if unflushed => {
                if let Some(leases) = leases.as_deref() {
                    let day = known.map(|(w, _)| (BUSINESS_DAY, w));
                    if let Ok(answer) = flush(&db, &mut held, leases, day).await {
                        known = known.zip(answer).map(|((w, _), v)| (w, v));
                        unflushed = false;
                    }
                }
                continue;
            }
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Calls counted in `coming` include those of this batch: wait only for the others.
        if !linger.is_zero() && coming.short() {
            let deadline = tokio::time::Instant::now() + linger;
            while jobs.len() < MAX_BATCH && coming.calls.load(Ordering::Acquire) > jobs.len() {
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => jobs.push(job),
                        None => break,
                    },
                    _ = coming.gone.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        let batch: Vec<Settlement> = jobs.iter().map(|(s, _)| s.clone()).collect();
        match settle(&db, &mut held, &batch).await {
            Ok(spent) => {
                for (job, _) in &jobs {
                    settled(leases.as_deref(), job).await;
                }
                let spent = match leases.as_deref() {
                    Some(leases) => {
                        unflushed |= spent_from_slices(&batch);
                        day_spent(&db, &mut held, leases, &batch, spent, &mut known, &mut unflushed).await
                    }
                    None => spent,
                };
                for (_, reply) in jobs {
                    let _ = reply.send(Ok(spent.clone()));
                }
            }
            Err(e) if jobs.len() > 1 => {
                tracing::warn!(error = %e, calls = jobs.len(), "a settlement batch failed; settling its calls one by one");
                for (job, reply) in jobs {
                    let result = settle(&db, &mut held, std::slice::from_ref(&job)).await;
                    if result.is_ok() {
                        settled(leases.as_deref(), &job).await;
                    }
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                }
            }
            Err(e) => {
                for (_, reply) in jobs {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Whether calls of `batch` spent from budget slices (to flush later).
fn spent_from_slices(batch: &[Settlement]) -> bool {
    batch.iter().any(|s| s.actual.micros() != 0 && s.reservation.leased.iter().any(|l| l.kind == LeaseKind::Budget))
}

/// The business's spend of the latest day `batch` spent in, for the budget alerts: the
/// batch's own answer when it spent in that day per call, otherwise the last flush's answer
/// (flushing when one is due, or when that day has none yet), plus what this process spent
/// from its slice of the day and has not flushed. Other processes' spend shows up to
/// [`crate::leases::FLUSH_EVERY`] late. `None` when the batch spent in no day's window.
async fn day_spent(
    db: &Db,
    held: &mut Option<PoolConnection<sqlx::Any>>,
    leases: &Leases,
    batch: &[Settlement],
    answered: Option<Spent>,
    known: &mut Option<(i64, i64)>,
    unflushed: &mut bool,
) -> Option<Spent> {
    let sliced_day = batch
        .iter()
        .flat_map(|s| s.reservation.leased.iter())
        .filter(|l| l.kind == LeaseKind::Budget && l.scope == BUSINESS_DAY)
        .map(|l| l.window_start)
        .max();
    let day = match (&answered, sliced_day) {
        (Some((_, w, _)), Some(s)) => (*w).max(s),
        (Some((_, w, _)), None) => *w,
        (None, Some(s)) => s,
        (None, None) => return None,
    };
    let mut base = match &answered {
        Some((_, w, v)) if *w == day => Some(*v),
        _ => known.filter(|(w, _)| *w == day).map(|(_, v)| v),
    };
    if base.is_none() || (*unflushed && leases.flush_due(Instant::now())) {
        if let Ok(Some(v)) = flush(db, held, leases, Some((BUSINESS_DAY, day))).await {
            base = Some(v);
            *unflushed = false;
        }
    }
    let base = base?;
    *known = Some((day, base));
    Some((BUSINESS_DAY.to_string(), day, base + leases.unflushed(BUSINESS_DAY, day).await))
}

/// [`Leases::flush`] on the writer's connection, answering `day`'s spend.
async fn flush(
    db: &Db,
    held: &mut Option<PoolConnection<sqlx::Any>>,
    leases: &Leases,
    day: Option<(&str, i64)>,
) -> Result<Option<i64>, DbError> {
    let conn = connection(db, held).await?;
    let result = leases.flush(conn, day).await;
    match &result {
        Ok(_) => leases.flushed(Instant::now()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot flush what calls spent from this process's slices; kept for the next flush");
            *held = None;
        }
    }
    result
}

/// Gives a committed call's unspent reservation back to its slices.
async fn settled(leases: Option<&Leases>, job: &Settlement) {
    if let Some(leases) = leases {
        leases.settled(&job.reservation.leased, job.actual.micros()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_that_took(coming: &Arc<Coming>, took: Duration) {
        coming.calls.fetch_add(1, Ordering::AcqRel);
        let since = Instant::now().checked_sub(took).unwrap_or_else(Instant::now);
        drop(Expected { coming: coming.clone(), since });
    }

    #[test]
    fn batches_wait_only_while_calls_are_short() {
        let coming = Arc::new(Coming::default());
        assert!(coming.short(), "no call yet: nothing says they are long");
        for _ in 0..20 {
            call_that_took(&coming, Duration::from_millis(2));
        }
        assert!(coming.short(), "calls of 2 ms are waited for");
        assert_eq!(coming.calls.load(Ordering::Acquire), 0, "every call counted out");
        for _ in 0..20 {
            call_that_took(&coming, Duration::from_secs(2));
        }
        assert!(!coming.short(), "model calls of seconds are not waited for");
        for _ in 0..40 {
            call_that_took(&coming, Duration::from_millis(1));
        }
        assert!(coming.short(), "short again once calls are");
    }
}
