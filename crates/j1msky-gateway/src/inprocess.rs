//! Caps and budgets held in memory for the embedded default (one process, SQLite), so a
//! call is admitted and settled without a database round trip; the counters, the spend
//! and the cost ledger are persisted by one writer task that group-commits every
//! [`FLUSH_INTERVAL`].
//!
//! Exactness: admission and settlement are decided under one mutex, so concurrent
//! requests in this process can never overspend a budget or a cap. Only one process may
//! hold a database's limits in memory: [`InProcess::open`] takes an exclusive lock on
//! `<database>.limits.lock`, and a second process is told to use shared limits.
//!
//! Durability: a crash loses at most the ledger rows of the calls in flight and of those
//! settled in the last [`FLUSH_INTERVAL`] plus one commit (ledger rows with their spend
//! and the hourly counts, always together: one transaction per batch). Past
//! [`MAX_UNFLUSHED`] uncommitted rows no call is admitted, so the loss stays bounded: a
//! call waits for the writer's next commit (rows that are only behind, after a burst or a
//! slow checkpoint, are written by it and the call goes on), and is refused (and the
//! operator alerted) when that commit fails; rows wait in memory until the database
//! takes them.
//! Each commit also persists the reservations held, as `reserved_micros`: after a crash
//! the next process counts what was held as spent until the window ends, so calls that
//! were in flight (or settled but not yet persisted) can never let a budget be overspent.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use j1msky_core::clock::SECOND;
use j1msky_core::Money;
use j1msky_db::{Db, DbError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::ledger::{self, Attempt};
use crate::limits::{self, Budget, Cap, LimitError, Reservation};
use crate::GatewayError;

/// How long the writer gathers rows before committing them.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Ledger rows settled but not yet committed beyond which calls are refused.
pub const MAX_UNFLUSHED: usize = 1000;

/// A budget window as this process sees it.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    cap: i64,
    reserved: i64,
    spent: i64,
    end: i64,
}

#[derive(Default)]
struct State {
    /// Per cap scope: the hour it counts and the requests counted in it.
    counters: HashMap<String, (i64, i64)>,
    budgets: HashMap<(String, i64), Window>,
}

/// One budget window's change: (scope, window start, cap, spent, reserved), in micros.
type BudgetChange = (String, i64, i64, i64, i64);

/// What the writer persists.
enum Op {
    Admitted { used: Vec<(String, i64)>, reserved: Vec<BudgetChange> },
    Settled { budgets: Vec<BudgetChange>, attempts: Vec<Attempt> },
    Flush(oneshot::Sender<()>),
}

/// Caps and budgets in memory, persisted behind the response.
pub struct InProcess {
    state: Mutex<State>,
    writer: mpsc::UnboundedSender<Op>,
    /// Ledger rows handed to the writer and not yet committed.
    unflushed: Arc<AtomicUsize>,
    max_unflushed: usize,
    /// Told after each commit the writer tries: whether it failed.
    commits: watch::Receiver<bool>,
    /// Held for the life of the process: the exclusive claim on this database's limits.
    _lock: Option<std::fs::File>,
}

impl InProcess {
    /// Claims `db`'s limits for this process and starts the writer.
    pub fn open(db: &Db) -> Result<Arc<InProcess>, GatewayError> {
        InProcess::open_bounded(db, MAX_UNFLUSHED)
    }

    /// As [`InProcess::open`], refusing calls past `max_unflushed` uncommitted ledger rows.
    pub fn open_bounded(db: &Db, max_unflushed: usize) -> Result<Arc<InProcess>, GatewayError> {
        let lock = match db.sqlite_file() {
            Some(file) => {
                let mut path = file.as_os_str().to_owned();
                path.push(".limits.lock");
                let path = std::path::PathBuf::from(path);
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| GatewayError::Invalid(format!("cannot open {}: {e}", path.display())))?;
                match f.try_lock() {
                    Ok(()) => Some(f),
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(GatewayError::Invalid(format!(
                            "another process holds the in-memory limits of this database ({}); run every \
                             process sharing it with shared limits (`serve --shared-limits`)",
                            path.display()
                        )))
                    }
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(GatewayError::Invalid(format!("cannot lock {}: {e}", path.display())))
                    }
                }
            }
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let unflushed = Arc::new(AtomicUsize::new(0));
        let (told, commits) = watch::channel(false);
        // Tracked through its channel: `flush` waits on it, shutdown flushes before
        // exiting, and the loop ends (after a last commit) when the InProcess drops.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(write_loop(db.clone(), rx, unflushed.clone(), told));
        Ok(Arc::new(InProcess {
            state: Mutex::new(State::default()),
            writer: tx,
            unflushed,
            max_unflushed,
            commits,
            _lock: lock,
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is only ever mutated by whole, panic-free updates; a poisoned lock
        // still holds consistent numbers.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once fewer than `max_unflushed` ledger rows wait for the writer: at once,
    /// or after the writer's next commits took enough of them. Refuses (the database is
    /// not taking the rows) when a commit tried meanwhile failed, or the writer stopped.
    async fn wait_for_the_ledger(&self) -> Result<(), LimitError> {
        // Every call passes here: below the bound it costs one atomic read.
        if self.unflushed.load(Ordering::SeqCst) < self.max_unflushed {
            return Ok(());
        }
        let mut commits = self.commits.clone();
        // Seen before the count is read again, so a commit after that read is not missed.
        commits.borrow_and_update();
        loop {
            let unflushed = self.unflushed.load(Ordering::SeqCst);
            if unflushed < self.max_unflushed {
                return Ok(());
            }
            if commits.changed().await.is_err() || *commits.borrow_and_update() {
                let unflushed = self.unflushed.load(Ordering::SeqCst);
                if unflushed >= self.max_unflushed {
                    return Err(LimitError::Backlog { unflushed });
                }
            }
        }
    }

    /// As [`limits::admit`], decided in memory.
    pub async fn admit(
        &self,
        db: &Db,
        caps: &[Cap],
        budgets: &[Budget],
        amount: Money,
        now: i64,
    ) -> Result<Reservation, LimitError> {
        let (window, window_end) = j1msky_core::windows::hour(now);
        self.wait_for_the_ledger().await?;
        self.load(db, caps, budgets, window).await?;
        let retry_after_secs = ((window_end - now).max(0) as u64).div_ceil(SECOND as u64);
        let mut st = self.state();
        for cap in caps {
            let used = st.counters.get(&cap.scope).map_or(0, |c| c.1);
            if cap.cap <= 0 || used >= cap.cap {
                return Err(LimitError::Cap { scope: cap.scope.clone(), cap: cap.cap, retry_after_secs });
            }
        }
        for b in budgets {
            let w = st.budgets.get(&(b.scope.clone(), b.window_start)).copied().unwrap_or_default();
            let committed = w.reserved + w.spent;
            if committed.saturating_add(amount.micros()) > b.cap.micros() {
                return Err(LimitError::Budget {
                    scope: b.scope.clone(),
                    cap: b.cap,
                    committed: Money::from_micros(committed),
                    asked: amount,
                    retry_after_secs: ((b.window_end - now).max(0) as u64).div_ceil(SECOND as u64),
                });
            }
        }
        for cap in caps {
            if let Some(c) = st.counters.get_mut(&cap.scope) {
                c.1 += 1;
            }
        }
        let mut reserved = Vec::with_capacity(budgets.len());
        for b in budgets {
            if let Some(w) = st.budgets.get_mut(&(b.scope.clone(), b.window_start)) {
                w.cap = b.cap.micros();
                w.reserved += amount.micros();
                reserved.push((b.scope.clone(), b.window_start, w.cap, 0, amount.micros()));
            }
        }
        // Sent under the lock, so the writer sees every window's changes in the order
        // they were made, and a reservation always before its settlement.
        self.send(Op::Admitted { used: caps.iter().map(|c| (c.scope.clone(), window)).collect(), reserved });
        drop(st);
        Ok(Reservation {
            id: String::new(),
            budgets: budgets.iter().map(|b| (b.scope.clone(), b.window_start)).collect(),
            amount,
            leased: Vec::new(),
        })
    }

    /// Makes sure every scope of this request is in memory, read from the database the
    /// first time (after a restart the hour's count and the window's spend carry on).
    async fn load(&self, db: &Db, caps: &[Cap], budgets: &[Budget], window: i64) -> Result<(), LimitError> {
        let (missing_caps, missing_budgets): (Vec<&Cap>, Vec<&Budget>) = {
            let st = self.state();
            (
                caps.iter().filter(|c| st.counters.get(&c.scope).is_none_or(|(w, _)| *w != window)).collect(),
                budgets.iter().filter(|b| !st.budgets.contains_key(&(b.scope.clone(), b.window_start))).collect(),
            )
        };
        for cap in missing_caps {
            let used = limits::used_this_hour(db, &cap.scope, window).await?;
            let mut st = self.state();
            let entry = st.counters.entry(cap.scope.clone()).or_insert((window, used));
            if entry.0 < window {
                *entry = (window, used);
            }
        }
        for b in missing_budgets {
            // What a process that died still held is counted as spent: its calls may
            // have been made and paid for without their settlement reaching the database.
            let (spent, held) = limits::budget_state(db, &b.scope, b.window_start).await?;
            let mut st = self.state();
            // Windows over for a day are dropped as new ones arrive; none holds a reservation.
            st.budgets.retain(|_, w| w.end + 24 * 3600 * SECOND > b.window_start || w.reserved > 0);
            st.budgets.entry((b.scope.clone(), b.window_start)).or_insert(Window {
                cap: b.cap.micros(),
                reserved: 0,
                spent: spent.micros().saturating_add(held.micros()),
                end: b.window_end,
            });
        }
        Ok(())
    }

    /// Turns a reservation into spend and hands the ledger rows to the writer.
    pub fn settle(&self, r: &Reservation, actual: Money, attempts: &[Attempt]) {
        let mut budgets = Vec::with_capacity(r.budgets.len());
        let mut st = self.state();
        for (scope, window_start) in &r.budgets {
            let w = st.budgets.entry((scope.clone(), *window_start)).or_default();
            w.reserved = (w.reserved - r.amount.micros()).max(0);
            w.spent += actual.micros();
            budgets.push((scope.clone(), *window_start, w.cap, actual.micros(), -r.amount.micros()));
        }
        self.unflushed.fetch_add(attempts.len(), Ordering::SeqCst);
        self.send(Op::Settled { budgets, attempts: attempts.to_vec() });
        drop(st);
    }

    /// Spend (settled) in a budget window, as this process knows it.
    pub fn spent(&self, scope: &str, window_start: i64) -> Option<Money> {
        self.state().budgets.get(&(scope.to_string(), window_start)).map(|w| Money::from_micros(w.spent))
    }

    /// Reserved (not yet settled) in a budget window.
    pub fn reserved(&self, scope: &str, window_start: i64) -> Option<Money> {
        self.state().budgets.get(&(scope.to_string(), window_start)).map(|w| Money::from_micros(w.reserved))
    }

    /// Ledger rows settled in memory and not yet committed.
    pub fn unflushed(&self) -> usize {
        self.unflushed.load(Ordering::SeqCst)
    }

    /// Everything reserved and not yet settled.
    pub fn reserved_total(&self) -> Money {
        Money::from_micros(self.state().budgets.values().map(|w| w.reserved).sum())
    }

    /// Waits until everything handed to the writer so far is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx));
        let _ = rx.await;
    }

    fn send(&self, op: Op) {
        if self.writer.send(op).is_err() {
            tracing::error!("the limits writer has stopped; usage is no longer persisted");
        }
    }
}

/// Rows gathered for one commit.
#[derive(Default)]
struct Batch {
    used: HashMap<(String, i64), i64>,
    /// Per window: (cap, spent delta, reserved delta).
    budgets: HashMap<(String, i64), (i64, i64, i64)>,
    attempts: Vec<Attempt>,
    seen: HashSet<(String, i64)>,
    /// Attempts received (before de-duplication), to count down the unflushed rows.
    received: usize,
}

impl Batch {
    fn add(&mut self, op: Op, waiters: &mut Vec<oneshot::Sender<()>>) {
        match op {
            Op::Admitted { used, reserved } => {
                for key in used {
                    *self.used.entry(key).or_default() += 1;
                }
                self.add_budgets(reserved);
            }
            Op::Settled { budgets, attempts } => {
                self.add_budgets(budgets);
                self.received += attempts.len();
                for a in attempts {
                    // A replayed settlement of the same attempt counts once, as in the table.
                    if self.seen.insert((a.request_id.clone(), a.attempt)) {
                        self.attempts.push(a);
                    }
                }
            }
            Op::Flush(w) => waiters.push(w),
        }
    }

    fn add_budgets(&mut self, changes: Vec<BudgetChange>) {
        for (scope, window, cap, spent, reserved) in changes {
            let e = self.budgets.entry((scope, window)).or_default();
            e.0 = cap;
            e.1 += spent;
            e.2 += reserved;
        }
    }

    fn is_empty(&self) -> bool {
        self.used.is_empty() && self.budgets.is_empty() && self.attempts.is_empty()
    }
}

async fn write_loop(
    db: Db,
    mut rx: mpsc::UnboundedReceiver<Op>,
    unflushed: Arc<AtomicUsize>,
    told: watch::Sender<bool>,
) {
    let mut batch = Batch::default();
    let mut waiters = Vec::new();
    loop {
        // Wait for the first row, then gather for one interval (or until a flush asks).
        let Some(first) = rx.recv().await else { break };
        batch.add(first, &mut waiters);
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        while waiters.is_empty() {
            tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => batch.add(op, &mut waiters),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        commit_with_retry(&db, &mut batch, &unflushed, &told).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
    commit_with_retry(&db, &mut batch, &unflushed, &told).await;
}

/// Commits the batch, retrying a failed commit (the rows are kept, never dropped).
/// Every commit tried is told to the calls waiting for the ledger.
async fn commit_with_retry(db: &Db, batch: &mut Batch, unflushed: &AtomicUsize, told: &watch::Sender<bool>) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(20);
    loop {
        let result = commit(db, batch).await;
        if result.is_ok() {
            unflushed.fetch_sub(batch.received, Ordering::SeqCst);
        }
        // Sent even when unchanged: a waiting call wakes for every commit tried.
        told.send_modify(|failed| *failed = result.is_err());
        match result {
            Ok(()) => {
                *batch = Batch::default();
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = batch.attempts.len(), "cannot persist usage and ledger; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn commit(db: &Db, batch: &Batch) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    for ((scope, window), n) in &batch.used {
        sqlx::query(
            "INSERT INTO usage_counters (scope, window_start, used) VALUES ($1, $2, $3)
             ON CONFLICT (scope, window_start) DO UPDATE SET used = usage_counters.used + excluded.used",
        )
        .bind(scope)
        .bind(window)
        .bind(n)
        .execute(&mut *tx)
        .await?;
    }
    for ((scope, window), (cap, spent, reserved)) in &batch.budgets {
        // A window's first change is always its first reservation, so a new row never
        // starts with a negative amount held.
        sqlx::query(
            "INSERT INTO budget_windows (scope, window_start, cap_micros, reserved_micros, spent_micros)
             VALUES ($1, $2, $3, $5, $4)
             ON CONFLICT (scope, window_start) DO UPDATE SET
                 cap_micros = CASE WHEN excluded.cap_micros > 0 THEN excluded.cap_micros
                                   ELSE budget_windows.cap_micros END,
                 spent_micros = budget_windows.spent_micros + excluded.spent_micros,
                 reserved_micros = budget_windows.reserved_micros + excluded.reserved_micros",
        )
        .bind(scope)
        .bind(window)
        .bind(cap)
        .bind(spent)
        .bind(reserved)
        .execute(&mut *tx)
        .await?;
    }
    ledger::record(&mut tx, &batch.attempts).await?;
    tx.commit().await?;
    Ok(())
}
