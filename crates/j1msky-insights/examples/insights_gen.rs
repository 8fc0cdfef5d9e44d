// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! The insights benchmark's data (issue 14 §4): CUSTOMERS customers over 24 months with
//! their funnel, subscription histories, TASKS tasks with their ledger rows, usage charges
//! and revenue, written into a SQLite file already migrated by `j1msky db migrate` (this
//! program migrates again, a no-op, so it also works on a fresh path).
//!
//! insights_gen DB_FILE [CUSTOMERS=10000] [TASKS=200000] [SEED=14]
//!
//! Deterministic: the same arguments write the same rows (one splitmix64 stream per
//! customer, derived from SEED and the customer's number; no wall clock). The generated
//! world ends at `NOW` = 2026-12-01T00:00Z and starts 24 months earlier.
//!
//! What one customer goes through (rates per 30-day billing period):
//! - signs up as a lead (more sign-ups later: growth), may be qualified, may start a
//!   14-day trial with a `trialing` Stripe subscription, converts at its end or churns;
//!   a few skip stages (lead → trial, lead → active for sales-led enterprise deals);
//!   10 % of converting customers pay per task (no plan, no subscription);
//! - paid: upgrades, downgrades, seat changes, win-back and one-month percent discounts
//!   that end, amount-off coupons, pauses onto the pause plan and resumes, failed payments
//!   (`past_due`, then recovered or cancelled), cancellations and later reactivations on
//!   a new subscription; every change is one `subscription_history` row at Stripe's time;
//! - one `invoice_paid` revenue row per paid period (net of discount), a few refunds;
//! - tasks spread over its trial and paid, unpaused time (how many: its share of TASKS
//!   by activity × time, rounded cumulatively so the total is exact); each task ran its
//!   team's two roles: two `llm_calls` rows priced by the gateway's own `policy::cost`;
//!   5 % fail (the second call errored), 2 % are cancelled before running; pay-per-task
//!   customers' successes carry the tier and charge the worker would compute, a
//!   `usage_charges` row and, once invoiced (monthly), a `usage_charge` revenue row.
//!
//! Not generated: outbox events, task steps, sessions, API keys, surveys (NPS stays empty).
//! Ids are the usual prefixes with a zero-padded counter (shorter than ULIDs: it saves
//! about 5 GB at full size), written in id order.
//!
//! Speed: one connection, `synchronous=OFF` and `journal_mode=OFF` during generation only,
//! foreign keys off, the bulk tables' secondary indexes dropped and recreated from their
//! own `CREATE INDEX` text afterwards, multi-row prepared INSERTs in large transactions.

use std::collections::BTreeMap;
use std::time::Instant;

use j1msky_core::catalogue::{Catalogue, SHIPPED};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};

const SEC: i64 = 1_000_000;
const HOUR: i64 = 3600 * SEC;
const DAY: i64 = 24 * HOUR;
const PERIOD: i64 = 30 * DAY;
/// 2026-12-01T00:00:00Z and 2024-12-01T00:00:00Z in unix micros.
const NOW: i64 = 1_796_083_200 * SEC;
const START: i64 = 1_733_011_200 * SEC;
const TRIAL: i64 = 14 * DAY;

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
];

/// splitmix64: small, fast and the same on every platform and crate version.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(1) as u64) as i64
    }
    /// Exponential with the given mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

#[derive(Clone)]
enum V {
    I(i64),
    T(String),
    N,
}

impl From<i64> for V {
    fn from(v: i64) -> V {
        V::I(v)
    }
}
impl From<String> for V {
    fn from(v: String) -> V {
        V::T(v)
    }
}
impl From<&str> for V {
    fn from(v: &str) -> V {
        V::T(v.to_owned())
    }
}
impl<T: Into<V>> From<Option<T>> for V {
    fn from(v: Option<T>) -> V {
        v.map_or(V::N, Into::into)
    }
}

/// Rows of one table waiting for a multi-row INSERT.
struct Table {
    name: &'static str,
    cols: usize,
    per_stmt: usize,
    head: String,
    row: String,
    sql: String,
    vals: Vec<V>,
    rows: u64,
}

impl Table {
    fn new(name: &'static str, cols: &str) -> Table {
        let n = cols.split(',').count();
        let per_stmt = (30_000 / n).min(400);
        let row = format!("({})", vec!["?"; n].join(","));
        let head = format!("INSERT INTO {name} ({cols}) VALUES ");
        let sql = head.clone() + &vec![row.as_str(); per_stmt].join(",");
        Table { name, cols: n, per_stmt, head, row, sql, vals: Vec::new(), rows: 0 }
    }
    fn push<const K: usize>(&mut self, row: [V; K]) {
        assert_eq!(K, self.cols, "{}: wrong number of columns", self.name);
        self.vals.extend(row);
        self.rows += 1;
    }
    /// Writes the full statements' worth; with `all`, also the rest (one shorter statement).
    async fn flush(&mut self, conn: &mut SqliteConnection, all: bool) {
        let width = self.cols * self.per_stmt;
        let full = self.vals.len() / width * width;
        let rest = self.vals.split_off(full);
        let vals = std::mem::replace(&mut self.vals, rest);
        let mut it = vals.into_iter();
        for _ in 0..full / width {
            let mut q = sqlx::query(&self.sql);
            for v in it.by_ref().take(width) {
                q = bind(q, v);
            }
            q.execute(&mut *conn).await.unwrap_or_else(|e| panic!("insert into {}: {e}", self.name));
        }
        if all && !self.vals.is_empty() {
            let sql = self.head.clone() + &vec![self.row.as_str(); self.vals.len() / self.cols].join(",");
            let mut q = sqlx::query(&sql);
            for v in std::mem::take(&mut self.vals) {
                q = bind(q, v);
            }
            q.execute(&mut *conn).await.unwrap_or_else(|e| panic!("insert into {}: {e}", self.name));
        }
    }
}

type Q<'a> = sqlx::query::Query<'a, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'a>>;

fn bind(q: Q<'_>, v: V) -> Q<'_> {
    match v {
        V::I(i) => q.bind(i),
        V::T(s) => q.bind(s),
        V::N => q.bind(None::<i64>),
    }
}

/// A team: id, routing category, its steps as (role, model).
type TeamSteps = (String, String, Vec<(String, String)>);

/// The catalogue facts the generator needs, read from the shipped catalogue.
struct Cat {
    catalogue: Catalogue,
    teams: Vec<TeamSteps>,
    price_cents: BTreeMap<String, i64>,
    pause_plan: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Starter,
    Pro,
    Enterprise,
    PayPerTask,
}

/// One subscription snapshot (a `subscription_history` row).
struct Snap {
    sub: String,
    at: i64,
    status: &'static str,
    plan: String,
    amount: i64,
    qty: i64,
    pct_bp: Option<i64>,
    off_cents: Option<i64>,
    disc_end: Option<i64>,
}

/// Everything about one customer except its tasks.
struct Life {
    created: i64,
    zone: &'static str,
    teams: Vec<usize>,
    stages: Vec<(i64, Option<&'static str>, &'static str)>,
    snaps: Vec<Snap>,
    /// (sub, period start, period end, amount cents) per paid invoice.
    invoices: Vec<(String, i64, i64, i64, String)>,
    /// Intervals the customer used its teams.
    active: Vec<(i64, i64)>,
    intensity: f64,
    plan_now: Option<String>,
    stripe: bool,
    ppt: bool,
    subs: Vec<(String, i64, &'static str, String, i64)>,
}

fn life(cat: &Cat, seed: u64, i: u64) -> Life {
    let mut r = Rng::new(seed, i);
    let span = (NOW - START - DAY) as f64;
    // Sign-ups grow over time: density rising linearly (t = span × √u).
    let created = START + (span * r.unit().sqrt()) as i64;
    let zone = ZONES[r.below(ZONES.len() as u64) as usize];
    let mut l = Life {
        created,
        zone,
        teams: Vec::new(),
        stages: vec![(created, None, "lead")],
        snaps: Vec::new(),
        invoices: Vec::new(),
        active: Vec::new(),
        intensity: (0.9 * r.normal()).exp(),
        plan_now: None,
        stripe: false,
        ppt: false,
        subs: Vec::new(),
    };
    let nteams = cat.teams.len();
    let first = r.below(nteams as u64) as usize;
    l.teams.push(first);
    for _ in 0..r.below(3) {
        let t = r.below(nteams as u64) as usize;
        if !l.teams.contains(&t) {
            l.teams.push(t);
        }
    }
    let mut t = created;
    let mut stage = "lead";
    let go = |l: &mut Life, at: i64, to: &'static str, stage: &mut &'static str| {
        l.stages.push((at, Some(*stage), to));
        *stage = to;
    };
    // The funnel; a few skip stages.
    let skip = r.unit();
    let (trial, direct) = if skip < 0.04 {
        (true, false)
    } else if skip < 0.06 {
        (false, true)
    } else {
        if !r.chance(0.6) {
            return l;
        }
        t += r.exp(2.0 * DAY as f64) as i64 + HOUR;
        if t >= NOW {
            return l;
        }
        go(&mut l, t, "qualified", &mut stage);
        (r.chance(0.7), false)
    };
    if !trial && !direct {
        return l;
    }
    let kind = if direct {
        Kind::Enterprise
    } else {
        match r.unit() {
            u if u < 0.10 => Kind::PayPerTask,
            u if u < 0.58 => Kind::Starter,
            u if u < 0.90 => Kind::Pro,
            _ => Kind::Enterprise,
        }
    };
    let contract = 29_900 + 5_000 * r.range(0, 40);
    let plan_of = |k: Kind| match k {
        Kind::Starter => "starter",
        Kind::Pro => "pro",
        Kind::Enterprise => "enterprise",
        Kind::PayPerTask => "",
    };
    let mut nsub = 0;
    let sub_id = |nsub: &mut i32| {
        *nsub += 1;
        format!("sub_{i:07}_{nsub}")
    };
    let mut sub = String::new();
    let mut plan = plan_of(kind).to_owned();
    let mut qty = 1;
    let unit = |cat: &Cat, plan: &str| if plan == "enterprise" { contract } else { cat.price_cents[plan] };
    if trial {
        t += r.exp(3.0 * DAY as f64) as i64 + HOUR;
        if t >= NOW {
            return l;
        }
        go(&mut l, t, "trial", &mut stage);
        let trial_start = t;
        if kind != Kind::PayPerTask {
            l.stripe = true;
            sub = sub_id(&mut nsub);
            l.snaps.push(snap(&sub, t, "trialing", &plan, unit(cat, &plan), 1));
        }
        t += TRIAL;
        l.active.push((trial_start, t.min(NOW)));
        if t >= NOW {
            l.plan_now = (kind != Kind::PayPerTask).then(|| plan.clone());
            if !sub.is_empty() {
                l.subs.push((sub, trial_start, "trialing", plan, 1));
            }
            return l;
        }
        if !r.chance(0.55) {
            if !sub.is_empty() {
                l.snaps.push(snap(&sub, t, "canceled", &plan, unit(cat, &plan), 1));
                l.subs.push((sub, trial_start, "canceled", plan, 1));
            }
            go(&mut l, t, "churned", &mut stage);
            return l;
        }
    } else {
        t += r.exp(10.0 * DAY as f64) as i64 + DAY;
        if t >= NOW {
            return l;
        }
    }
    go(&mut l, t, "active", &mut stage);
    l.intensity *= match kind {
        Kind::Starter => 1.0,
        Kind::Pro => 2.5,
        Kind::Enterprise => 6.0,
        Kind::PayPerTask => 0.8,
    };
    if kind == Kind::PayPerTask {
        l.ppt = true;
        l.stripe = true;
        // Pay per task: no subscription; leaves at 3 % a period.
        let mut end = t;
        while end < NOW && !r.chance(0.03) {
            end += PERIOD;
        }
        l.active.push((t, end.min(NOW)));
        if end < NOW {
            go(&mut l, end, "churned", &mut stage);
        }
        return l;
    }
    let mut sub_created = t;
    if sub.is_empty() {
        sub = sub_id(&mut nsub);
    } else {
        sub_created = l.snaps[0].at;
    }
    if kind == Kind::Pro && r.chance(0.1) {
        qty = r.range(2, 4);
    }
    let mut s = snap(&sub, t, "active", &plan, unit(cat, &plan) * qty, qty);
    let mut discounted = false;
    let mut active_from = t;
    l.snaps.push(s.clone_at(t));
    let mut canceled = false;
    let mut paused_until: Option<i64> = None;
    let mut prev_plan = plan.clone();
    let mut period = t;
    while period < NOW {
        let next = period + PERIOD;
        if canceled {
            if r.chance(0.04) {
                // Reactivation: a new subscription.
                canceled = false;
                l.subs.push((sub.clone(), sub_created, "canceled", plan.clone(), qty));
                sub = sub_id(&mut nsub);
                sub_created = period;
                plan = if r.chance(0.5) { "starter".into() } else { "pro".into() };
                qty = 1;
                discounted = false;
                s = snap(&sub, period, "active", &plan, unit(cat, &plan), 1);
                l.snaps.push(s.clone_at(period));
                go(&mut l, period, "active", &mut stage);
                active_from = period;
            } else {
                period = next;
                continue;
            }
        }
        if let Some(until) = paused_until {
            if period >= until {
                paused_until = None;
                plan = prev_plan.clone();
                s = snap(&sub, period, "active", &plan, unit(cat, &plan) * qty, qty);
                l.snaps.push(s.clone_at(period));
                go(&mut l, period, "active", &mut stage);
                active_from = period;
            }
        }
        // The period's invoice (paid at its start, net of the discount then).
        l.invoices.push((sub.clone(), period, next, net(&s, period), plan.clone()));
        // What happens during the period.
        let at = period + r.range(DAY, PERIOD - DAY);
        if at >= NOW {
            break;
        }
        let u = r.unit();
        let cancel_rate = if plan == "enterprise" { 0.01 } else { 0.03 };
        if paused_until.is_some() {
            // Paused: nothing else happens.
        } else if u < cancel_rate {
            // Cancelled at the period's end.
            if next < NOW {
                l.snaps.push(Snap { status: "canceled", ..s.clone_at(next) });
                l.active.push((active_from, next));
                go(&mut l, next, "churned", &mut stage);
                canceled = true;
            }
        } else if u < cancel_rate + 0.015 {
            // A failed payment at the period's start: recovered days later or cancelled.
            l.snaps.push(Snap { status: "past_due", ..s.clone_at(period + HOUR) });
            if r.chance(0.7) {
                l.snaps.push(s.clone_at(period + r.range(DAY, 6 * DAY)));
            } else {
                let end = period + 14 * DAY;
                l.snaps.push(Snap { status: "canceled", ..s.clone_at(end) });
                l.active.push((active_from, end));
                go(&mut l, end, "churned", &mut stage);
                canceled = true;
                if l.invoices.last().is_some_and(|inv| inv.1 == period) {
                    l.invoices.pop();
                }
            }
        } else if u < cancel_rate + 0.04 && plan == "starter" {
            plan = "pro".into();
            s = Snap { plan: plan.clone(), amount: unit(cat, &plan) * qty, ..s.clone_at(at) };
            l.snaps.push(s.clone_at(at));
        } else if u < cancel_rate + 0.055 && plan == "pro" {
            plan = "starter".into();
            qty = 1;
            s = Snap { plan: plan.clone(), amount: unit(cat, &plan), qty: 1, ..s.clone_at(at) };
            l.snaps.push(s.clone_at(at));
        } else if u < cancel_rate + 0.065 && plan != "enterprise" {
            qty += 1;
            s = Snap { amount: unit(cat, &plan) * qty, qty, ..s.clone_at(at) };
            l.snaps.push(s.clone_at(at));
        } else if u < cancel_rate + 0.085 && !discounted {
            // Win-back (40 % for 3 periods) or we-miss-you (20 % for one), ending on its own;
            // half the time Stripe also sends the snapshot without it when it ends.
            let (bp, n) = if r.chance(0.5) { (4000, 3) } else { (2000, 1) };
            let end = at + n * PERIOD;
            s = Snap { pct_bp: Some(bp), disc_end: Some(end), ..s.clone_at(at) };
            l.snaps.push(s.clone_at(at));
            discounted = true;
            if r.chance(0.5) && end < NOW {
                // Later snapshots keep the ended discount (inert after its end).
                l.snaps.push(Snap { pct_bp: None, disc_end: None, ..s.clone_at(end) });
            }
        } else if u < cancel_rate + 0.09 && !discounted {
            s = Snap { off_cents: Some(1_000), ..s.clone_at(at) };
            l.snaps.push(s.clone_at(at));
            discounted = true;
        } else if u < cancel_rate + 0.10 && plan != "enterprise" {
            // Paused onto the pause plan for 1–3 periods.
            prev_plan = plan.clone();
            plan = cat.pause_plan.clone();
            s = Snap { plan: plan.clone(), amount: cat.price_cents[&plan], qty: 1, ..s.clone_at(at) };
            l.snaps.push(s.clone_at(at));
            l.active.push((active_from, at));
            go(&mut l, at, "paused", &mut stage);
            paused_until = Some(next + r.range(0, 3) * PERIOD);
        }
        period = next;
    }
    if !canceled && paused_until.is_none() {
        l.active.push((active_from, NOW));
    }
    if !canceled {
        l.plan_now = Some(if paused_until.is_some() { cat.pause_plan.clone() } else { plan.clone() });
    }
    let status = if canceled { "canceled" } else { "active" };
    l.subs.push((sub, sub_created, status, plan, qty));
    l.snaps.sort_by_key(|s| s.at);
    l
}

fn snap(sub: &str, at: i64, status: &'static str, plan: &str, amount: i64, qty: i64) -> Snap {
    Snap {
        sub: sub.to_owned(),
        at,
        status,
        plan: plan.to_owned(),
        amount,
        qty,
        pct_bp: None,
        off_cents: None,
        disc_end: None,
    }
}

impl Snap {
    fn clone_at(&self, at: i64) -> Snap {
        Snap {
            sub: self.sub.clone(),
            at,
            status: self.status,
            plan: self.plan.clone(),
            amount: self.amount,
            qty: self.qty,
            pct_bp: self.pct_bp,
            off_cents: self.off_cents,
            disc_end: self.disc_end,
        }
    }
}

/// What the snapshot bills at `t` (amount less a discount that still applies).
fn net(s: &Snap, t: i64) -> i64 {
    if s.disc_end.is_some_and(|e| t >= e) {
        return s.amount;
    }
    let off = s.pct_bp.map_or(0, |bp| s.amount * bp / 10_000) + s.off_cents.unwrap_or(0);
    (s.amount - off).max(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file = args.get(1).expect("usage: insights_gen DB_FILE [CUSTOMERS] [TASKS] [SEED]");
    let customers: u64 = args.get(2).map_or(10_000, |s| s.parse().unwrap());
    let tasks_total: u64 = args.get(3).map_or(200_000, |s| s.parse().unwrap());
    let seed: u64 = args.get(4).map_or(14, |s| s.parse().unwrap());
    let began = Instant::now();

    // The real migrations (a no-op when `j1msky db migrate` already ran).
    let db = j1msky_db::Db::connect(&format!("sqlite://{file}?mode=rwc")).await.unwrap();
    db.migrate().await.unwrap();
    let (existing,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM customers").fetch_one(db.pool()).await.unwrap();
    assert_eq!(existing, 0, "{file} already has customers: generate into a fresh file");
    db.pool().close().await;

    let catalogue = Catalogue::from_json_str(SHIPPED).unwrap();
    let cat = Cat {
        teams: catalogue
            .teams
            .iter()
            .map(|(id, t)| {
                let category = t.category.clone().unwrap_or_else(|| id.clone());
                (id.clone(), category, t.roles.iter().map(|r| (r.role.clone(), r.model.clone())).collect())
            })
            .collect(),
        price_cents: catalogue.plans.iter().map(|(id, p)| (id.clone(), p.monthly_price.micros() / 10_000)).collect(),
        pause_plan: catalogue.pause_plan.clone(),
        catalogue,
    };

    let mut conn = SqliteConnectOptions::new().filename(file).connect().await.unwrap();
    conn.execute("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY")
        .await
        .unwrap();
    const BULK: &[&str] = &[
        "customers",
        "customer_stage_changes",
        "subscriptions",
        "subscription_history",
        "revenue_entries",
        "tasks",
        "llm_calls",
        "usage_charges",
    ];
    let list = BULK.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(",");
    let indexes: Vec<(String, String)> = sqlx::query(&format!(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({list})"
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    for (name, _) in &indexes {
        conn.execute(format!("DROP INDEX {name}").as_str()).await.unwrap();
    }

    // Pass 1: every customer's weight (activity × time), for an exact task total.
    let weights: Vec<f64> = (0..customers)
        .map(|i| {
            let l = life(&cat, seed, i);
            l.active.iter().map(|(a, b)| (b - a).max(0) as f64).sum::<f64>() * l.intensity
        })
        .collect();
    let total_weight: f64 = weights.iter().sum();

    let mut t_customers = Table::new(
        "customers",
        "id, name, contact_email, stage, use_case, plan, chosen_teams, expected_monthly_tasks, time_zone, created_at, updated_at, stage_changed_at, stripe_customer_id, billing_status, billing_status_since, payment_method_on_file, search_name, search_email",
    );
    let mut t_stages = Table::new("customer_stage_changes", "id, customer_id, from_stage, to_stage, actor, at");
    let mut t_subs = Table::new(
        "subscriptions",
        "id, customer_id, stripe_customer_id, status, plan, current_period_end, cancel_at_period_end, created, version, updated_at",
    );
    let mut t_hist = Table::new(
        "subscription_history",
        "subscription_id, version, customer_id, stripe_customer_id, status, plan, currency, amount_cents, quantity, discount_percent_bp, discount_amount_cents, discount_end, effective_at, recorded_at",
    );
    let mut t_rev = Table::new(
        "revenue_entries",
        "id, source_id, kind, customer_id, stripe_customer_id, subscription_id, plan, amount_cents, currency, period_start, period_end, occurred_at, recorded_at",
    );
    let mut t_tasks = Table::new(
        "tasks",
        "id, customer_id, team, category, title, prompt, priority, state, attempts, error, cost_micros, tier, charge_micros, not_before, queued_at, started_at, finished_at",
    );
    let mut t_calls = Table::new(
        "llm_calls",
        "id, request_id, attempt, customer_id, task_id, team, role, category, provider, model_requested, model_used, input_tokens, output_tokens, cost_micros, latency_micros, outcome, created_at",
    );
    let mut t_charges = Table::new(
        "usage_charges",
        "id, customer_id, task_id, tier, amount_micros, created_at, reported_at, stripe_invoice_id, invoice_status",
    );

    let mut cum_weight = 0.0f64;
    let mut tasks_done: u64 = 0;
    let (mut n_task, mut n_call, mut n_rev, mut n_stage, mut n_charge) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut inv_n = 0u64;
    conn.execute("BEGIN").await.unwrap();
    for i in 0..customers {
        let l = life(&cat, seed, i);
        let id = format!("cus_{i:07}");
        let stripe_id = l.stripe.then(|| format!("cus_s{i:07}"));
        let (last_at, _, stage) = *l.stages.last().unwrap();
        let teams_json =
            format!("[{}]", l.teams.iter().map(|t| format!("\"{}\"", cat.teams[*t].0)).collect::<Vec<_>>().join(","));
        let billing = l.plan_now.as_ref().map(|_| "ok");
        let (name, email) = (format!("Customer {i}"), format!("owner{i}@customers.example"));
        let keys = (j1msky_accounts::customers::search_key(&name), j1msky_accounts::customers::search_key(&email));
        t_customers.push([
            id.clone().into(),
            name.into(),
            email.into(),
            stage.into(),
            V::N,
            l.plan_now.clone().into(),
            teams_json.into(),
            V::N,
            l.zone.into(),
            l.created.into(),
            last_at.into(),
            last_at.into(),
            stripe_id.clone().into(),
            billing.into(),
            billing.map(|_| last_at).into(),
            i64::from(l.stripe).into(),
            keys.0.into(),
            keys.1.into(),
        ]);
        for (at, from, to) in &l.stages {
            n_stage += 1;
            let actor = if *to == "lead" || *to == "qualified" { "cli" } else { "system" };
            t_stages.push([
                format!("stg_{n_stage:09}").into(),
                id.clone().into(),
                from.map(str::to_owned).into(),
                (*to).into(),
                actor.into(),
                (*at).into(),
            ]);
        }
        let scus = stripe_id.clone().unwrap_or_default();
        for (k, s) in l.snaps.iter().enumerate() {
            let secs = s.at / SEC;
            t_hist.push([
                s.sub.clone().into(),
                format!("{secs:012}:evt_{i:07}_{k:03}").into(),
                id.clone().into(),
                scus.clone().into(),
                s.status.into(),
                s.plan.clone().into(),
                "usd".into(),
                s.amount.into(),
                s.qty.into(),
                s.pct_bp.into(),
                s.off_cents.into(),
                s.disc_end.into(),
                s.at.into(),
                (s.at + 2 * SEC).into(),
            ]);
        }
        for (sub, created, status, plan, _) in &l.subs {
            let last = l.snaps.iter().rev().find(|s| &s.sub == sub).map_or(*created, |s| s.at);
            t_subs.push([
                sub.clone().into(),
                id.clone().into(),
                scus.clone().into(),
                (*status).into(),
                plan.clone().into(),
                V::N,
                0i64.into(),
                (*created / SEC).into(),
                format!("{:012}:evt_{i:07}", last / SEC).into(),
                last.into(),
            ]);
        }
        let mut rr = Rng::new(seed ^ 0x5EED, i);
        for (sub, start, end, amount, plan) in &l.invoices {
            inv_n += 1;
            n_rev += 1;
            let paid = (start + rr.range(0, 2 * HOUR)).min(NOW - 1);
            t_rev.push([
                format!("rev_{n_rev:09}").into(),
                format!("in_{inv_n:09}").into(),
                "invoice_paid".into(),
                id.clone().into(),
                scus.clone().into(),
                sub.clone().into(),
                plan.clone().into(),
                (*amount).into(),
                "usd".into(),
                (*start).into(),
                (*end).into(),
                paid.into(),
                (paid + SEC).into(),
            ]);
            if *amount > 0 && rr.chance(0.004) {
                n_rev += 1;
                let at = (paid + rr.range(HOUR, 10 * DAY)).min(NOW - 1);
                t_rev.push([
                    format!("rev_{n_rev:09}").into(),
                    format!("ch_{inv_n:09}:refunded").into(),
                    "refund".into(),
                    id.clone().into(),
                    scus.clone().into(),
                    V::N,
                    V::N,
                    (-*amount).into(),
                    "usd".into(),
                    V::N,
                    V::N,
                    at.into(),
                    (at + SEC).into(),
                ]);
            }
        }

        // Tasks: this customer's exact share of the total (cumulative rounding).
        cum_weight += weights[i as usize];
        let upto =
            if total_weight > 0.0 { ((cum_weight / total_weight) * tasks_total as f64).round() as u64 } else { 0 };
        let upto = upto.min(tasks_total);
        let k = upto.saturating_sub(tasks_done);
        tasks_done += k;
        let span: i64 = l.active.iter().map(|(a, b)| (b - a).max(0)).sum();
        let mut tr = Rng::new(seed ^ 0x7A5C, i);
        // Pay-per-task charges are invoiced per 30-day period from the first task.
        let mut charges_by_invoice: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
        for _ in 0..k {
            // A moment in the active time, uniformly.
            let mut x = tr.range(0, span.max(1));
            let mut queued = l.created;
            for (a, b) in &l.active {
                let len = (b - a).max(0);
                if x < len {
                    queued = a + x;
                    break;
                }
                x -= len;
            }
            let queued = queued.min(NOW - 2 * HOUR);
            let team_ix = l.teams[tr.below(l.teams.len() as u64) as usize];
            let (team, category, roles) = &cat.teams[team_ix];
            n_task += 1;
            let task_id = format!("tsk_{n_task:09}");
            let roll = tr.unit();
            let state = if roll < 0.02 {
                "cancelled"
            } else if roll < 0.07 {
                "failed"
            } else {
                "succeeded"
            };
            let base = match team.as_str() {
                "code" => 90.0,
                "content" => 150.0,
                "research" => 240.0,
                _ => 300.0,
            };
            let wait = tr.exp(20.0 * SEC as f64) as i64;
            let run = (base * (0.5 * tr.normal()).exp() * SEC as f64) as i64 + SEC;
            let started = (state != "cancelled").then_some(queued + wait);
            let finished = started.map(|s| s + run);
            let mut cost = 0i64;
            let mut tokens = 0i64;
            let mut model_micros = 0i64;
            if let Some(s) = started {
                for (step, (role, model)) in roles.iter().enumerate() {
                    let fail = state == "failed" && step + 1 == roles.len();
                    let (inp, out) = if fail { (0, 0) } else { (tr.range(300, 4_000), tr.range(100, 2_500)) };
                    let c = j1msky_gateway::policy::cost(&cat.catalogue, model, inp as u64, out as u64).micros();
                    let latency = run / roles.len() as i64;
                    cost += c;
                    tokens += inp + out;
                    model_micros += latency;
                    n_call += 1;
                    let provider = cat.catalogue.models.get(model).map(|m| m.provider.clone()).unwrap_or_default();
                    t_calls.push([
                        format!("llm_{n_call:010}").into(),
                        format!("{task_id}:{step}").into(),
                        1i64.into(),
                        id.clone().into(),
                        task_id.clone().into(),
                        team.clone().into(),
                        role.clone().into(),
                        category.clone().into(),
                        provider.into(),
                        model.clone().into(),
                        model.clone().into(),
                        inp.into(),
                        out.into(),
                        c.into(),
                        latency.into(),
                        (if fail { "error" } else { "ok" }).into(),
                        (s + latency * (step as i64 + 1)).into(),
                    ]);
                }
            }
            let charge = (l.ppt && state == "succeeded").then(|| {
                let tier = j1msky_tasks::tier::tier(j1msky_tasks::tier::Effort {
                    steps: roles.len(),
                    tokens,
                    sent_back: false,
                    model_micros,
                });
                (tier, j1msky_tasks::tier::price(&cat.catalogue, tier).micros())
            });
            if let (Some((tier, amount)), Some(f)) = (charge, finished) {
                n_charge += 1;
                let cid = format!("uch_{n_charge:09}");
                let invoice_at = l.active[0].0 + ((f - l.active[0].0) / PERIOD + 1) * PERIOD;
                let invoiced = invoice_at < NOW;
                t_charges.push([
                    cid.clone().into(),
                    id.clone().into(),
                    task_id.clone().into(),
                    tier.into(),
                    amount.into(),
                    f.into(),
                    invoiced.then_some(f + HOUR).into(),
                    invoiced.then(|| format!("in_p{i:07}_{invoice_at}")).into(),
                    invoiced.then_some("paid").into(),
                ]);
                if invoiced {
                    charges_by_invoice.entry(invoice_at).or_default().push((cid, amount));
                }
            }
            t_tasks.push([
                task_id.into(),
                id.clone().into(),
                team.clone().into(),
                category.clone().into(),
                format!("{team} task").into(),
                "bench".into(),
                0i64.into(),
                state.into(),
                i64::from(started.is_some()).into(),
                (state == "failed").then_some("provider error").into(),
                cost.into(),
                charge.map(|c| c.0).into(),
                charge.map(|c| c.1).into(),
                queued.into(),
                queued.into(),
                started.into(),
                finished.into(),
            ]);
        }
        for (at, charges) in charges_by_invoice {
            for (cid, micros) in charges {
                n_rev += 1;
                t_rev.push([
                    format!("rev_{n_rev:09}").into(),
                    cid.into(),
                    "usage_charge".into(),
                    id.clone().into(),
                    scus.clone().into(),
                    V::N,
                    V::N,
                    (micros / 10_000).into(),
                    "usd".into(),
                    V::N,
                    V::N,
                    (at + HOUR).into(),
                    (at + HOUR + SEC).into(),
                ]);
            }
        }

        if t_calls.vals.len() > 200_000 || i + 1 == customers || t_customers.vals.len() > 100_000 {
            for t in [
                &mut t_customers,
                &mut t_stages,
                &mut t_subs,
                &mut t_hist,
                &mut t_rev,
                &mut t_tasks,
                &mut t_calls,
                &mut t_charges,
            ] {
                t.flush(&mut conn, i + 1 == customers).await;
            }
        }
        if (i + 1) % 100_000 == 0 {
            conn.execute("COMMIT; BEGIN").await.unwrap();
            eprintln!("{} customers, {n_task} tasks, {:.0} s", i + 1, began.elapsed().as_secs_f64());
        }
    }
    conn.execute("COMMIT").await.unwrap();
    let rows_at = began.elapsed();
    for (_, sql) in &indexes {
        conn.execute(sql.as_str()).await.unwrap();
    }
    let indexed_at = began.elapsed();
    conn.execute("PRAGMA analysis_limit = 1000; ANALYZE").await.unwrap();
    conn.execute("PRAGMA journal_mode = WAL").await.unwrap();
    conn.close().await.unwrap();
    let total = began.elapsed();
    let counts = [&t_customers, &t_stages, &t_subs, &t_hist, &t_rev, &t_tasks, &t_calls, &t_charges]
        .iter()
        .map(|t| format!("{}={}", t.name, t.rows))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "generated seed={seed} {counts} rows_s={:.1} indexes_s={:.1} total_s={:.1}",
        rows_at.as_secs_f64(),
        (indexed_at - rows_at).as_secs_f64(),
        total.as_secs_f64()
    );
}
