//! Group commit of settlements for limits shared in PostgreSQL: calls that finish while
//! one batch is being written wait together and go in the next, so the ledger rows and
//! the spend of many calls cost one statement ([`crate::roundtrip::settle`]) instead of a
//! transaction each. There is no timer: a batch goes as soon as the previous one is done,
//! so a lone call waits for nothing but its own round trip.
//!
//! Crash rules are those of one transaction per call: a caller is answered only once its
//! batch is committed, and until then its reservation row stays held under this process's
//! lease (renewed while it lives, released by the sweeper when it died). A batch the
//! database refuses is retried one call at a time, so one bad row fails only its own call.

use std::sync::Arc;

use j1msky_db::{Db, DbError};
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot};

use crate::leases::Leases;
use crate::roundtrip::{self, Settlement, Spent};

/// Calls settled in one statement at most.
pub const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Vec<Spent>, String>>;

/// Hands settlements to one writer per gateway.
pub(crate) struct Settler {
    queue: mpsc::UnboundedSender<(Settlement, Reply)>,
}

impl Settler {
    /// Starts the writer on `db`; it ends when the settler is dropped. A settled call's
    /// unspent reservation goes back to the slices of `leases` it was taken from.
    pub(crate) fn start(db: Db, leases: Option<Arc<Leases>>) -> Arc<Settler> {
        let (queue, rx) = mpsc::unbounded_channel();
        // Tracked through its channel: every job's caller awaits its own reply, and the
        // loop ends (after answering what it holds) when the Settler drops.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(write_loop(db, leases, rx));
        Arc::new(Settler { queue })
    }

    /// Settles one call; returns once it is committed, with the spend of its windows.
    pub(crate) async fn settle(&self, job: Settlement) -> Result<Vec<Spent>, DbError> {
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
) -> Result<Vec<Spent>, DbError> {
    let conn = connection(db, held).await?;
    let result = roundtrip::settle(conn, batch).await;
    if result.is_err() {
        *held = None;
    }
    result
}

async fn write_loop(db: Db, leases: Option<Arc<Leases>>, mut rx: mpsc::UnboundedReceiver<(Settlement, Reply)>) {
    let mut held = None;
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
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let batch: Vec<Settlement> = jobs.iter().map(|(s, _)| s.clone()).collect();
        match settle(&db, &mut held, &batch).await {
            Ok(spent) => {
                for (job, reply) in jobs {
                    settled(leases.as_deref(), &job).await;
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

/// Gives a committed call's unspent reservation back to its slices.
async fn settled(leases: Option<&Leases>, job: &Settlement) {
    if let Some(leases) = leases {
        leases.settled(&job.reservation.leased, job.actual.micros()).await;
    }
}
