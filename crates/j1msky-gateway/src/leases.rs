//! Slices of the hot shared limits, held per process (PostgreSQL only). Every call counts
//! against the global and provider hourly caps and reserves from the day's budget: one row
//! each that every process would otherwise update on every call. Instead a process takes a
//! slice in one statement (`j1msky_lease_take`, migration 0041: N calls of a cap, M
//! micro-USD of a budget, already counted in the shared row), admits its calls from the
//! slice in memory, and gives back what it did not use when the slice goes idle, at the
//! end of its window or at shutdown (`j1msky_lease_return`). The total stays exact: what a
//! slice holds is counted in the shared row, so no process can admit it twice.
//!
//! Near a limit the slices shrink (a slice takes at most 1/[`SPREAD`] of what is left) and
//! once even one call's worth is more than that, the process gives its slice back and
//! admits that scope per call through `j1msky_admit` for the next
//! [`PER_CALL_AFTER_REFUSAL`] calls: the last calls of an hour or a budget are decided one
//! by one on the shared row, as without slices.
//!
//! A slice is a row of `limit_leases` naming its owner and expiry, renewed with the
//! owner's reservations. What calls spend from a budget slice stays in memory until the
//! settlement writer's next flush ([`Leases::flush`], every [`FLUSH_EVERY`]), so a dead
//! process's budget slices count as spent in full when the sweeper finds them expired
//! ([`crate::limits::release_expired`]).
//!
//! A customer's own scopes (its hourly cap, month budget, trial budget) are sliced the same
//! way, but only while that customer is busy on this process: from the [`BUSY_CALLS`]th
//! call within [`BUSY_WITHIN`] until its slices go idle. A customer calling now and then
//! keeps per-call admission, which is exact and costs one round trip at a low rate, while
//! a slice taken for it would mostly sit unused in the shared row.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use j1msky_core::clock::SECOND;
use j1msky_db::{Db, DbError};

use crate::admission::RESERVATION_TTL;
pub use crate::admission::{LeaseKind, Leased};

/// Calls a cap's first slice takes at most, and calls' worth (of the asking call) a budget's.
pub const SLICE_CALLS: i64 = 128;
/// What a slice grows to when each is used up within [`GROW_WITHIN`] of the last top-up
/// (doubling each time): a busy scope tops up a few times a second at most, a quiet one
/// keeps small slices. Near a limit [`SPREAD`] still decides.
pub const MAX_SLICE_CALLS: i64 = 1024;
/// A slice used up sooner than this after its last top-up is topped up with twice as much.
pub const GROW_WITHIN: i64 = SECOND;
/// A slice takes at most this fraction of what is left in its cap or budget.
pub const SPREAD: i64 = 8;
/// Calls of a scope admitted per call after a slice was refused, before trying again.
pub const PER_CALL_AFTER_REFUSAL: u32 = 32;
/// A slice nothing was taken from for this long is given back by the next sweep.
pub const IDLE: i64 = 5 * SECOND;

/// Calls of one customer scope within [`BUSY_WITHIN`] from which this process slices it.
pub const BUSY_CALLS: u32 = 8;
/// The span [`BUSY_CALLS`] must fall in for a customer's scope to be sliced.
pub const BUSY_WITHIN: i64 = SECOND;

/// Whether a scope is shared by every call (and so always worth slicing): not a
/// customer's own, which is sliced only while busy ([`Leases::wants_slice`]).
pub fn leasable(scope: &str) -> bool {
    !scope.starts_with("customer:")
}

/// This process's part of one lease.
struct Slice {
    id: String,
    /// Unused, ready for the next call.
    free: i64,
    /// Reserved by calls admitted from it and not settled yet (budgets only).
    held: i64,
    /// Spent by its settled calls and not yet moved to the row's `spent` ([`Leases::flush`]):
    /// still part of the row's `amount` (budgets only).
    unflushed: i64,
    last_take: i64,
    /// When it was last topped up, in [`Leases::tickets`]' order.
    ticket: u64,
    /// Calls still to admit per call before asking for a slice again.
    per_call: u32,
    /// The cap or budget it was cut from.
    cap: i64,
    /// Calls' worth its next top-up asks for, and when it was last topped up.
    size: i64,
    topped_at: i64,
}

type Key = (LeaseKind, String, i64);

/// The slices one gateway holds.
pub(crate) struct Leases {
    owner: String,
    slices: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Slice>>>>,
    tickets: AtomicU64,
    /// One flush at a time, and when the last one was made.
    flushing: tokio::sync::Mutex<()>,
    flushed_at: Mutex<Option<std::time::Instant>>,
    /// Per customer scope without a slice: (first call of the current run, calls since).
    recent: Mutex<HashMap<String, (i64, u32)>>,
}

impl Leases {
    /// No slices yet; `owner` names this process's rows (as its reservations').
    pub(crate) fn new(owner: &str) -> Leases {
        Leases {
            owner: owner.to_string(),
            slices: Mutex::default(),
            tickets: AtomicU64::new(1),
            flushing: tokio::sync::Mutex::new(()),
            flushed_at: Mutex::default(),
            recent: Mutex::default(),
        }
    }

    /// Whether this call of `scope` should come from a slice: always for the shared
    /// scopes; for a customer's, once it is busy here ([`BUSY_CALLS`] within
    /// [`BUSY_WITHIN`]) and for as long as this process holds a slice of it.
    pub(crate) fn wants_slice(&self, kind: LeaseKind, scope: &str, window_start: i64, now: i64) -> bool {
        if leasable(scope) || self.map().contains_key(&(kind, scope.to_string(), window_start)) {
            return true;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() > 100_000 {
            // Bounded like the terms cache: forgetting only delays a customer's slices.
            recent.clear();
        }
        let run = recent.entry(scope.to_string()).or_insert((now, 0));
        if now.saturating_sub(run.0) > BUSY_WITHIN {
            *run = (now, 0);
        }
        run.1 += 1;
        if run.1 < BUSY_CALLS {
            return false;
        }
        recent.remove(scope);
        true
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<tokio::sync::Mutex<Slice>>>> {
        self.slices.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slice(&self, key: &Key) -> Arc<tokio::sync::Mutex<Slice>> {
        self.map()
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Slice {
                    id: j1msky_core::ids::new_id("lse"),
                    free: 0,
                    held: 0,
                    unflushed: 0,
                    last_take: 0,
                    ticket: 0,
                    per_call: 0,
                    cap: 0,
                    size: SLICE_CALLS,
                    topped_at: i64::MIN,
                }))
            })
            .clone()
    }

    /// Takes `need` (1 call of a cap, a call's reservation of a budget) from this
    /// process's slice, topping it up in one statement when short; `None` when the scope is
    /// too near its limit for slices and must be admitted per call.
    #[allow(clippy::too_many_arguments)] // the lease's coordinates, one for one
    pub(crate) async fn take(
        &self,
        db: &Db,
        kind: LeaseKind,
        scope: &str,
        window_start: i64,
        cap: i64,
        need: i64,
        now: i64,
    ) -> Result<Option<Leased>, DbError> {
        let key = (kind, scope.to_string(), window_start);
        // Held across the top-up: the calls that find the slice empty wait for one
        // statement instead of each sending their own.
        let (slice, mut s) = loop {
            let slice = self.slice(&key);
            let s = slice.clone().lock_owned().await;
            // A slice forgotten by an idle sweep while this call waited is not used again.
            if self.map().get(&key).is_some_and(|current| Arc::ptr_eq(current, &slice)) {
                break (slice, s);
            }
        };
        drop(slice);
        if s.cap != cap {
            // The operator changed the limit: what the slice holds was cut from the old
            // one, so it goes back (or what it owes is settled) and the new limit decides
            // from here on.
            if s.free != 0 {
                give_back(db, &s.id, s.free).await?;
                s.free = 0;
            }
            s.cap = cap;
            s.per_call = 0;
        }
        if s.free < need {
            if s.per_call > 0 {
                s.per_call -= 1;
                return Ok(None);
            }
            let short = need - s.free;
            s.size = grown(s.size, s.topped_at, now);
            let want = match kind {
                LeaseKind::Cap => s.size,
                LeaseKind::Budget => need.saturating_mul(s.size),
            }
            .max(short);
            let granted: i64 = sqlx::query_scalar("SELECT j1msky_lease_take($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
                .bind(&s.id)
                .bind(kind.name())
                .bind(scope)
                .bind(window_start)
                .bind(cap)
                .bind(short)
                .bind(want)
                .bind(SPREAD)
                .bind(&self.owner)
                .bind(now.saturating_add(RESERVATION_TTL))
                .fetch_one(db.pool())
                .await?;
            if granted < short {
                // Too near the limit for slices: what this one holds goes back, so the
                // per-call admissions (of every process) can use it (what it owes is settled).
                if s.free != 0 {
                    give_back(db, &s.id, s.free).await?;
                    s.free = 0;
                }
                s.per_call = PER_CALL_AFTER_REFUSAL;
                return Ok(None);
            }
            s.free += granted;
            s.topped_at = now;
            s.ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        }
        s.free -= need;
        if kind == LeaseKind::Budget {
            s.held += need;
        }
        s.last_take = now;
        Ok(Some(Leased { kind, scope: key.1, window_start, lease: s.id.clone(), amount: need }))
    }

    /// Puts back what a call took when a later limit refused it.
    pub(crate) async fn untake(&self, taken: &[Leased]) {
        for t in taken {
            let slice = self.slice(&(t.kind, t.scope.clone(), t.window_start));
            let mut s = slice.lock().await;
            // A slice the sweeper released (and this process replaced) has nothing to put back.
            if s.id == t.lease {
                s.free += t.amount;
                if t.kind == LeaseKind::Budget {
                    s.held -= t.amount;
                }
            }
        }
    }

    /// After a call's settlement committed: `actual` of each budget part became spend (kept
    /// here until the next [`Leases::flush`]), the rest of its reservation is free again in
    /// the slice. A part of a slice the sweeper took is already counted as spent in full.
    pub(crate) async fn settled(&self, leased: &[Leased], actual: i64) {
        for t in leased.iter().filter(|t| t.kind == LeaseKind::Budget) {
            let slice = self.slice(&(t.kind, t.scope.clone(), t.window_start));
            let mut s = slice.lock().await;
            if s.id == t.lease {
                s.held -= t.amount;
                // A call that cost more than it reserved (the provider counted more tokens
                // than the estimate) takes the rest from the slice's unused part, and what
                // that does not cover the slice owes (`free` below zero) until its next
                // top-up or give-back settles it with the shared row: the excess is spend,
                // and the budget's total must hold it.
                s.free += t.amount - actual;
                s.unflushed = s.unflushed.saturating_add(actual);
            }
        }
    }

    /// Moves what calls spent from this process's budget slices since the last flush from
    /// each row's `amount` to its `spent`, in one statement (`j1msky_slices_spent`,
    /// migration 0052), and returns the spend of `window` (scope, start) after it, slices
    /// included (`None` when none was asked or it has no row). Settlement batches leave
    /// this to the flush, a few times a second per process ([`FLUSH_EVERY`]), so that a
    /// batch costs the server its ledger rows and nothing per slice.
    pub(crate) async fn flush(
        &self,
        conn: &mut sqlx::AnyConnection,
        window: Option<(&str, i64)>,
    ) -> Result<Option<i64>, DbError> {
        let _one = self.flushing.lock().await;
        let slices: Vec<Arc<tokio::sync::Mutex<Slice>>> =
            self.map().iter().filter(|(k, _)| k.0 == LeaseKind::Budget).map(|(_, v)| v.clone()).collect();
        let mut taken: Vec<(Arc<tokio::sync::Mutex<Slice>>, String, i64)> = Vec::new();
        for slice in slices {
            let mut s = slice.lock().await;
            if s.unflushed != 0 {
                let amount = std::mem::take(&mut s.unflushed);
                taken.push((slice.clone(), s.id.clone(), amount));
            }
        }
        // Rows in key order, as every flush of every process takes them.
        taken.sort_by(|a, b| a.1.cmp(&b.1));
        let result = flush_statement(conn, taken.iter().map(|(_, id, a)| (id.as_str(), *a)), window).await;
        if result.is_err() {
            // Not written: kept for the next flush.
            for (slice, id, amount) in taken {
                let mut s = slice.lock().await;
                if s.id == id {
                    s.unflushed = s.unflushed.saturating_add(amount);
                }
            }
        }
        result
    }

    /// Whether a flush is due: something spent and not flushed for [`FLUSH_EVERY`].
    pub(crate) fn flush_due(&self, now: std::time::Instant) -> bool {
        let last = *self.flushed_at.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|at| now.duration_since(at) >= FLUSH_EVERY)
    }

    /// Notes that a flush was made at `now`.
    pub(crate) fn flushed(&self, now: std::time::Instant) {
        *self.flushed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    }

    /// Gives back the unused part of every slice idle since [`IDLE`] (every slice when
    /// `all`, at shutdown), and forgets those with nothing left. Returns how many slices
    /// gave something back.
    pub(crate) async fn give_back_idle(&self, db: &Db, now: i64, all: bool) -> Result<usize, DbError> {
        let slices: Vec<(Key, Arc<tokio::sync::Mutex<Slice>>)> =
            self.map().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut gave = 0;
        for (key, slice) in slices {
            let mut s = slice.lock().await;
            if !all && now.saturating_sub(s.last_take) < IDLE {
                continue;
            }
            if s.free != 0 || s.held == 0 {
                flush_one(db, &mut s).await?;
                // With nothing free this only ends the lease row, before the slice is forgotten.
                give_back(db, &s.id, s.free).await?;
                gave += usize::from(s.free > 0);
                s.free = 0;
            }
            if s.held == 0 {
                // Removed under the slice's lock: a call waiting for it sees it gone and
                // starts a new one.
                self.map().remove(&key);
            }
        }
        Ok(gave)
    }

    /// Gives back what this process's slices of customers' own limits hold unused and
    /// forgets the idle ones (a customer must be busy again to be sliced again): after a
    /// change to customers announced by the database, so a lowered budget or cap is not
    /// held up by a slice cut under the old one. Returns how many gave something back.
    pub(crate) async fn give_back_customers(&self, db: &Db) -> Result<usize, DbError> {
        let slices: Vec<(Key, Arc<tokio::sync::Mutex<Slice>>)> =
            self.map().iter().filter(|(k, _)| !leasable(&k.1)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut gave = 0;
        for (key, slice) in slices {
            let mut s = slice.lock().await;
            if s.free != 0 || s.held == 0 {
                flush_one(db, &mut s).await?;
                // With nothing free this only ends the lease row, before the slice is forgotten.
                give_back(db, &s.id, s.free).await?;
                gave += usize::from(s.free > 0);
                s.free = 0;
            }
            // Topped up again only under the terms read after this change.
            s.cap = 0;
            if s.held == 0 {
                self.map().remove(&key);
            }
        }
        Ok(gave)
    }

    /// The micro-USD of this process's budget slices held by no call in flight: unused, or
    /// spent and not flushed yet.
    pub(crate) async fn unused_budget(&self) -> i64 {
        let slices: Vec<(Key, Arc<tokio::sync::Mutex<Slice>>)> =
            self.map().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut unused = 0;
        for (key, slice) in slices {
            if key.0 == LeaseKind::Budget {
                let s = slice.lock().await;
                unused += s.free + s.unflushed;
            }
        }
        unused
    }

    /// What this process's calls spent from its slices of `scope`'s window `window_start`
    /// and has not flushed yet.
    pub(crate) async fn unflushed(&self, scope: &str, window_start: i64) -> i64 {
        let slice = self.map().get(&(LeaseKind::Budget, scope.to_string(), window_start)).cloned();
        match slice {
            Some(slice) => slice.lock().await.unflushed,
            None => 0,
        }
    }

    /// Renews this process's lease rows; a slice whose row is gone (the sweeper took this
    /// process for dead) is forgotten, so nothing is admitted from what it no longer holds.
    pub(crate) async fn renew(&self, db: &Db, now: i64) -> Result<(), DbError> {
        let before = self.tickets.fetch_add(1, Ordering::Relaxed);
        let ids: Vec<String> =
            sqlx::query_scalar("UPDATE limit_leases SET expires_at = $1 WHERE owner = $2 RETURNING id")
                .bind(now.saturating_add(RESERVATION_TTL))
                .bind(&self.owner)
                .fetch_all(db.pool())
                .await?;
        let ids: HashSet<String> = ids.into_iter().collect();
        let slices: Vec<Arc<tokio::sync::Mutex<Slice>>> = self.map().values().cloned().collect();
        for slice in slices {
            // A slice being topped up right now has a row (or gets one): leave it.
            let Ok(mut s) = slice.try_lock() else { continue };
            if s.ticket < before && (s.free != 0 || s.held > 0 || s.unflushed != 0) && !ids.contains(&s.id) {
                // The sweeper counted all of it as spent: what its calls spent is in there.
                tracing::warn!(lease = %s.id, "a slice of a shared limit was released by another process; dropped");
                s.id = j1msky_core::ids::new_id("lse");
                s.free = 0;
                s.held = 0;
                s.unflushed = 0;
            }
        }
        Ok(())
    }
}

/// The size of a slice's next top-up: twice the last when that one lasted less than
/// [`GROW_WITHIN`], back to [`SLICE_CALLS`] when it lasted longer.
fn grown(size: i64, topped_at: i64, now: i64) -> i64 {
    if now.saturating_sub(topped_at) < GROW_WITHIN {
        size.saturating_mul(2).min(MAX_SLICE_CALLS)
    } else {
        SLICE_CALLS
    }
}

/// How often a process moves what its calls spent from its slices to their rows
/// ([`Leases::flush`]): readers of a window's spend (the budget alerts of every process,
/// the operator's pages) see other processes' spend this late at most.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// `j1msky_slices_spent` (migration 0052) for `spent` (lease, micro-USD), answering the
/// spend of `window`.
async fn flush_statement<'a>(
    conn: &mut sqlx::AnyConnection,
    spent: impl Iterator<Item = (&'a str, i64)>,
    window: Option<(&str, i64)>,
) -> Result<Option<i64>, DbError> {
    let (ids, amounts): (Vec<&str>, Vec<i64>) = spent.unzip();
    let answer: i64 = sqlx::query_scalar("SELECT j1msky_slices_spent($1, $2, $3, $4)")
        .bind(crate::roundtrip::text_array(ids.into_iter()))
        .bind(crate::roundtrip::number_array(amounts.into_iter()))
        .bind(window.map(|(scope, _)| scope.to_string()))
        .bind(window.map_or(0, |(_, start)| start))
        .fetch_one(conn)
        .await?;
    Ok((answer >= 0).then_some(answer))
}

/// Flushes one slice's unflushed spend (before it is given back, so the row's end is exact).
async fn flush_one(db: &Db, s: &mut Slice) -> Result<(), DbError> {
    if s.unflushed == 0 {
        return Ok(());
    }
    let mut conn = db.pool().acquire().await?;
    flush_statement(&mut conn, std::iter::once((s.id.as_str(), s.unflushed)), None).await?;
    s.unflushed = 0;
    Ok(())
}

/// `j1msky_lease_return`: `back` of the slice's row goes back to the shared row, its
/// flushed spend moves to the shared row's spend. A negative `back` is what calls spent
/// beyond the slice: the shared row's reservation grows by it, so the total stays exact.
async fn give_back(db: &Db, lease: &str, back: i64) -> Result<(), DbError> {
    sqlx::query_scalar::<_, i64>("SELECT j1msky_lease_return($1, $2)")
        .bind(lease)
        .bind(back)
        .fetch_one(db.pool())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_scope_is_sliced_once_busy_and_while_a_slice_is_held() {
        let leases = Leases::new("o");
        let scope = "customer:cus_1";
        let mut now = 1_000 * SECOND;
        // Calls further apart than the span never make it busy.
        for _ in 0..3 * BUSY_CALLS {
            assert!(!leases.wants_slice(LeaseKind::Cap, scope, 0, now));
            now += BUSY_WITHIN + 1;
        }
        for _ in 1..BUSY_CALLS {
            assert!(!leases.wants_slice(LeaseKind::Cap, scope, 0, now));
        }
        assert!(leases.wants_slice(LeaseKind::Cap, scope, 0, now), "the BUSY_CALLS-th call in the span");
        // The first slice taken keeps the scope sliced without counting.
        leases.slice(&(LeaseKind::Cap, scope.to_string(), 0));
        assert!(leases.wants_slice(LeaseKind::Cap, scope, 0, now + 100 * SECOND));
        assert!(leases.wants_slice(LeaseKind::Budget, "global", 0, now), "shared scopes always");
    }

    #[test]
    fn a_slice_used_up_quickly_grows_to_the_most_and_a_slow_one_starts_over() {
        let mut size = SLICE_CALLS;
        let mut topped_at = i64::MIN;
        let mut now = 1_000 * SECOND;
        assert_eq!(grown(size, topped_at, now), SLICE_CALLS, "the first top-up");
        for _ in 0..10 {
            topped_at = now;
            now += GROW_WITHIN / 2;
            size = grown(size, topped_at, now);
        }
        assert_eq!(size, MAX_SLICE_CALLS);
        assert_eq!(grown(size, now, now + GROW_WITHIN), SLICE_CALLS);
    }

    #[test]
    fn only_the_scopes_every_call_shares_are_sliced() {
        assert!(leasable("global"));
        assert!(leasable("provider:openai"));
        assert!(leasable("business:day"));
        assert!(!leasable("customer:cus_1"));
        assert!(!leasable("customer:cus_1:month"));
    }
}
