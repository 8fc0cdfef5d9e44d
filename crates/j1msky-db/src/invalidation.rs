//! Telling every process that a cached read went stale. Caches of rows read on every
//! call (API keys, customers' standing and plans) keep an entry only while the
//! generation of its topic is the one they saw when they read it. A change made through
//! this handle moves the generation at once ([`Invalidations::bump`]); on PostgreSQL the
//! database itself announces changes to those rows (triggers of migration 0036 send
//! `NOTIFY j1msky_invalidate`, whichever process or tool wrote them) and [`listen`] moves
//! the generations of every process's handle as the notifications arrive, within
//! milliseconds of the commit. Without a listener (SQLite, or a lost connection) caches
//! fall back on their own short time to live.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Backend, Db};

/// The channel the triggers notify on.
pub const CHANNEL: &str = "j1msky_invalidate";

/// What went stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// API keys (a key revoked).
    Keys,
    /// Customers' standing, plan, contract or budget.
    Customers,
}

impl Topic {
    const ALL: [Topic; 2] = [Topic::Keys, Topic::Customers];

    fn index(self) -> usize {
        match self {
            Topic::Keys => 0,
            Topic::Customers => 1,
        }
    }

    fn parse(payload: &str) -> Option<Topic> {
        match payload.split(':').next()? {
            "keys" => Some(Topic::Keys),
            "customers" => Some(Topic::Customers),
            _ => None,
        }
    }
}

/// One generation counter per topic, shared by the clones of one [`Db`].
#[derive(Debug, Default)]
pub struct Invalidations {
    generations: [AtomicU64; 2],
    /// Wakes those waiting for the next change ([`Invalidations::changed`]).
    changes: tokio::sync::Notify,
}

impl Invalidations {
    /// The current generation of `topic`: an entry cached under another is stale.
    pub fn generation(&self, topic: Topic) -> u64 {
        self.generations[topic.index()].load(Ordering::SeqCst)
    }

    /// Marks everything cached under `topic` stale.
    pub fn bump(&self, topic: Topic) {
        self.generations[topic.index()].fetch_add(1, Ordering::SeqCst);
        self.changes.notify_waiters();
    }

    /// Resolves at the next change of any topic. Made before reading a generation, it
    /// also sees a change that lands between that read and its first poll.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changes.notified()
    }

    fn bump_all(&self) {
        for t in Topic::ALL {
            self.bump(t);
        }
    }
}

/// Moves `db`'s generations as PostgreSQL announces changes, until `stop` turns true; on
/// SQLite it returns at once. A lost connection is re-made after a pause, and everything
/// is marked stale then, since notifications sent meanwhile were missed.
pub async fn listen(db: Db, mut stop: tokio::sync::watch::Receiver<bool>) {
    if db.backend() != Backend::Postgres {
        // One process owns a SQLite file: nothing to hear. The loop still lives until the
        // stop signal, because the supervisor counts a loop that ends by itself as dead.
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
        return;
    }
    while !*stop.borrow() {
        let mut listener = match sqlx::postgres::PgListener::connect(db.url()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for cache invalidations; retrying");
                pause(&mut stop).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for cache invalidations; retrying");
            pause(&mut stop).await;
            continue;
        }
        // Anything changed before the LISTEN took effect was not heard.
        db.invalidations().bump_all();
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(n) => match Topic::parse(n.payload()) {
                        Some(t) => db.invalidations().bump(t),
                        None => db.invalidations().bump_all(),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the cache invalidation listener; reconnecting");
                        db.invalidations().bump_all();
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
}

async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = stop.changed() => {}
    }
}
