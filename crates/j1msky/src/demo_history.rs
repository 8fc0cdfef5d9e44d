//! The demo's past: a few months of billing and work behind its paying customers, so the
//! board shows real numbers from the first page. Nothing here writes a table itself:
//! subscriptions and invoices happen at the fake Stripe (its clock moved back) and come
//! in as Stripe's events through the real applier (`webhook::reconcile`, what
//! `j1msky stripe reconcile` runs); tasks are submitted and run by a task worker whose
//! clock is set to the day they happened, through the gateway on the simulated provider.

use std::collections::HashMap;
use std::sync::Arc;

use j1msky_billing::{changes, checkout, webhook, Stripe};
use j1msky_core::catalogue::Catalogue;
use j1msky_core::clock::ManualClock;
use j1msky_core::{Clock, SystemClock};
use j1msky_db::consumers::{self, Runner};
use j1msky_db::Db;
use serde_json::json;

use crate::context;
use crate::Failure;

const DAY_SECS: i64 = 86_400;
const DAY: i64 = DAY_SECS * 1_000_000;

/// How far back the demo's history starts (its oldest customer signed up then).
pub const DAYS: i64 = 80;

/// One paying customer's billing story, in days before today.
struct Billed {
    customer: &'static str,
    /// Checkout on this plan, this many days ago (no trial: they had theirs).
    start: (&'static str, i64),
    /// Upgrade to this plan, this many days ago (MRR expansion).
    upgrade: Option<(&'static str, i64)>,
    /// Cancelled in the Customer Portal this many days ago (MRR churn).
    cancel: Option<i64>,
}

const BILLED: &[Billed] = &[
    Billed { customer: "Northwind Software", start: ("starter", 78), upgrade: Some(("pro", 40)), cancel: None },
    Billed { customer: "Harbor Analytics", start: ("starter", 70), upgrade: None, cancel: Some(15) },
];

#[derive(Debug, Clone, Copy)]
enum Step {
    Start,
    Upgrade,
    Cancel,
}

/// Work done in the past: (customer, team, days ago).
const WORK: &[(&str, &str, i64)] = &[
    ("Northwind Software", "code", 77),
    ("Northwind Software", "research", 76),
    ("Northwind Software", "code", 60),
    ("Northwind Software", "content", 45),
    ("Northwind Software", "code", 31),
    ("Northwind Software", "business", 20),
    ("Northwind Software", "code", 9),
    ("Northwind Software", "research", 2),
    ("Harbor Analytics", "research", 68),
    ("Harbor Analytics", "code", 50),
    ("Harbor Analytics", "research", 33),
];

/// Whether the history bills this customer (the running demo then starts no checkout
/// for it, also on a later run, when the fresh fake Stripe no longer knows it).
pub fn bills(customer: &str) -> bool {
    BILLED.iter().any(|b| b.customer == customer)
}

/// What the history made.
#[derive(Debug, Default)]
pub struct Made {
    pub events: usize,
    pub tasks: usize,
}

/// A fake Stripe whose clock starts at the history's beginning; `webhook_url` is set
/// later, once the demo's server listens.
pub async fn fake_stripe(
    catalogue: &Catalogue,
    secret: &str,
    now: i64,
) -> Result<(j1msky_sim::stripe::RunningStripe, Stripe), Failure> {
    let fake = j1msky_sim::stripe::spawn_stripe(j1msky_sim::stripe::FakeStripeConfig {
        webhook_url: None,
        webhook_secret: secret.into(),
        now: Some(j1msky_billing::secs(now) - (DAYS + 1) * DAY_SECS),
    })
    .await
    .map_err(anyhow::Error::from)?;
    let stripe = Stripe::new(j1msky_billing::StripeConfig {
        base_url: fake.base(),
        secret_key: "sk_test_demo".into(),
        api_version: catalogue.stripe.api_version.clone(),
        allow_live: false,
    })
    .map_err(anyhow::Error::from)?;
    Ok((fake, stripe))
}

/// Moves the fake's clock by `secs` (and returns its new now).
async fn advance(base: &str, secs: i64) -> Result<i64, Failure> {
    let v: serde_json::Value = control(base, "clock", json!({"advance_secs": secs})).await?;
    Ok(v["now"].as_i64().unwrap_or_default())
}

async fn control(base: &str, path: &str, body: serde_json::Value) -> Result<serde_json::Value, Failure> {
    let resp = reqwest::Client::new()
        .post(format!("{base}/_sim/{path}"))
        .json(&body)
        .send()
        .await
        .map_err(anyhow::Error::from)?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.map_err(anyhow::Error::from)?;
    if !status.is_success() {
        return Err(anyhow::anyhow!("fake Stripe /_sim/{path}: {status} {v}").into());
    }
    Ok(v)
}

/// Stores and applies every event the fake has made since `since_secs` (as a reconcile
/// after missed webhooks would), then lets accounts apply the customers' new states.
async fn settle(db: &Db, stripe: &Stripe, catalogue: &Catalogue, since_secs: i64) -> Result<usize, Failure> {
    let ctx = j1msky_billing::apply::Ctx { catalogue };
    let done = webhook::reconcile(db, stripe, &ctx, since_secs, context::now()).await.map_err(anyhow::Error::from)?;
    j1msky_accounts::reactions::catch_up(db, &SystemClock).await.map_err(anyhow::Error::from)?;
    Ok(done.applied)
}

/// Runs the billing and work histories once (a later demo run finds them and adds none),
/// then leaves the fake's clock at today and the insights' rollups caught up.
pub async fn run(
    db: &Db,
    catalogue: &Arc<Catalogue>,
    overrides: &HashMap<String, j1msky_gateway::ProviderOverride>,
    fake: &j1msky_sim::stripe::RunningStripe,
    stripe: &Stripe,
) -> Result<Made, Failure> {
    let now = context::now();
    let base = fake.base();
    let mut made = Made::default();
    let all = j1msky_accounts::customers::list(db, None, 10_000).await.map_err(anyhow::Error::from)?;
    let id_of = |name: &str| all.iter().find(|c| c.name == name).map(|c| c.id.clone());
    // The revenue ledger outlives `forget_account`: booked invoices mean it was played.
    let fresh = match id_of(BILLED[0].customer) {
        Some(id) => j1msky_billing::revenue::for_customer(db, &id, 1).await.map_err(anyhow::Error::from)?.is_empty(),
        None => false,
    };
    // The work first: a customer who leaves later still worked while it paid.
    made.tasks = work(db, catalogue, overrides, &id_of, now).await?;
    let start_secs = j1msky_billing::secs(now) - (DAYS + 1) * DAY_SECS;
    // The catalogue is synced at the fake's (past) time.
    j1msky_billing::sync::forget_account(db).await.map_err(anyhow::Error::from)?;
    j1msky_billing::sync::sync(db, stripe, catalogue, now).await.map_err(anyhow::Error::from)?;
    if fresh {
        // Every step of every story, oldest first: (days ago, customer index, what).
        let mut steps: Vec<(i64, usize, Step)> = Vec::new();
        for (i, b) in BILLED.iter().enumerate() {
            steps.push((b.start.1, i, Step::Start));
            if let Some((_, d)) = b.upgrade {
                steps.push((d, i, Step::Upgrade));
            }
            if let Some(d) = b.cancel {
                steps.push((d, i, Step::Cancel));
            }
        }
        steps.sort_by_key(|s| std::cmp::Reverse(s.0));
        let mut fake_now = advance(&base, 0).await?;
        let mut renewed: Vec<i64> = vec![0; BILLED.len()];
        for (days_ago, i, what) in steps {
            let at = j1msky_billing::secs(now) - days_ago * DAY_SECS;
            fake_now = renew_until(db, stripe, catalogue, &base, &mut renewed, fake_now, at, start_secs).await?;
            if at > fake_now {
                fake_now = advance(&base, at - fake_now).await?;
            }
            let b = &BILLED[i];
            let Some(cid) = id_of(b.customer) else { continue };
            match what {
                Step::Start => {
                    j1msky_billing::offers::record_trial_had(db, &cid, "cli", now)
                        .await
                        .map_err(anyhow::Error::from)?;
                    let req = checkout::CheckoutRequest {
                        plan: b.start.0.into(),
                        success_url: "http://demo.invalid/app/billing".into(),
                        cancel_url: "http://demo.invalid/app/billing".into(),
                        attempt: "demo-history".into(),
                    };
                    let link =
                        checkout::start(db, stripe, catalogue, &cid, &req, now).await.map_err(anyhow::Error::from)?;
                    control(&base, &format!("checkout/{}/complete", link.session_id), json!({})).await?;
                    renewed[i] = fake_now;
                }
                Step::Upgrade => {
                    if let Some((plan, _)) = b.upgrade {
                        changes::upgrade(db, stripe, catalogue, &cid, plan, at * 1_000_000)
                            .await
                            .map_err(anyhow::Error::from)?;
                    }
                }
                Step::Cancel => {
                    if let Some(sub) = changes::current(db, &cid).await.map_err(anyhow::Error::from)? {
                        control(
                            &base,
                            &format!("subscriptions/{}/portal_cancel", sub.id),
                            json!({"at_period_end": false}),
                        )
                        .await?;
                    }
                }
            }
            made.events += settle(db, stripe, catalogue, start_secs).await?;
        }
        let today = j1msky_billing::secs(now);
        renew_until(db, stripe, catalogue, &base, &mut renewed, fake_now, today, start_secs).await?;
        made.events += settle(db, stripe, catalogue, start_secs).await?;
        opinions_and_spend(db, catalogue, &id_of, now).await?;
        // Stripe's fee of every payment, as the billing timer reads them (a hundred a pass).
        while j1msky_billing::fees::fetch_due(db, stripe, now).await.map_err(anyhow::Error::from)? > 0 {}
    }
    // The fake's clock back at today, for the checkouts the running demo makes.
    let fake_now = advance(&base, 0).await?;
    let real = j1msky_billing::secs(context::now());
    if real > fake_now {
        advance(&base, real - fake_now).await?;
    }
    catch_up_insights(db, catalogue).await?;
    Ok(made)
}

/// What the paying customers answered to the NPS survey, and days ago (a score per
/// customer: a promoter who stayed, a detractor who left a few days later).
const OPINIONS: &[(&str, &str, i64)] = &[("Northwind Software", "9", 3), ("Harbor Analytics", "5", 18)];

/// What the operator spent on acquisition in the months the paying customers started,
/// in cents (the board's CAC and LTV:CAC need it).
const SPEND_CENTS: i64 = 45_000;

/// The paying customers' NPS answers, through the survey a customer answers by its
/// link, and the acquisition spend of the months they started, as the operator enters it.
async fn opinions_and_spend(
    db: &Db,
    catalogue: &Arc<Catalogue>,
    id_of: &impl Fn(&str) -> Option<String>,
    now: i64,
) -> Result<(), Failure> {
    use j1msky_lifecycle::surveys::{self, Answer, SurveyKind};
    let valid_days = catalogue.lifecycle.engagement.nps_valid_days;
    for (customer, score, days_ago) in OPINIONS {
        let Some(cid) = id_of(customer) else { continue };
        let at = now - days_ago * DAY;
        let mut conn = db.pool().acquire().await.map_err(anyhow::Error::from)?;
        let link = surveys::create(&mut conn, &cid, SurveyKind::Nps, at).await.map_err(anyhow::Error::from)?;
        drop(conn);
        let answer = Answer { score: Some(score), comment: "", testimonial: "", consent_to_publish: false };
        surveys::answer(db, valid_days, &link.token, &answer, at).await.map_err(anyhow::Error::from)?;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ctx = j1msky_insights::Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock };
    let mut months: Vec<j1msky_insights::Month> =
        BILLED.iter().map(|b| j1msky_insights::Month::of(ctx.tz(), now - b.start.1 * DAY)).collect();
    months.dedup();
    for month in months {
        j1msky_insights::people::set_spend(&ctx, month, SPEND_CENTS, &j1msky_audit::Actor::system())
            .await
            .map_err(anyhow::Error::from)?;
    }
    Ok(())
}

/// Renews every live subscription whose period ended before `until` (unix seconds), the
/// fake's clock moved to each period's end first, and applies what that billed.
#[allow(clippy::too_many_arguments)]
async fn renew_until(
    db: &Db,
    stripe: &Stripe,
    catalogue: &Catalogue,
    base: &str,
    renewed: &mut [i64],
    mut fake_now: i64,
    until: i64,
    since: i64,
) -> Result<i64, Failure> {
    const PERIOD: i64 = 30 * DAY_SECS;
    loop {
        // The next renewal due, across the customers with a live subscription.
        let next = renewed.iter().enumerate().filter(|(_, at)| **at > 0).map(|(i, at)| (at + PERIOD, i)).min();
        let Some((due, i)) = next.filter(|(due, _)| *due <= until) else { return Ok(fake_now) };
        if due > fake_now {
            fake_now = advance(base, due - fake_now).await?;
        }
        renewed[i] = due;
        let all = j1msky_accounts::customers::list(db, None, 10_000).await.map_err(anyhow::Error::from)?;
        let Some(c) = all.iter().find(|c| c.name == BILLED[i].customer) else { continue };
        match changes::current(db, &c.id).await.map_err(anyhow::Error::from)? {
            Some(sub) => {
                control(base, &format!("subscriptions/{}/renew", sub.id), json!({})).await?;
                settle(db, stripe, catalogue, since).await?;
            }
            // Cancelled: no more renewals.
            None => renewed[i] = 0,
        }
    }
}

/// Runs the past tasks (`WORK`) through their teams, each on its day. Tasks carry an
/// idempotency key, so a second demo run submits none again.
async fn work(
    db: &Db,
    catalogue: &Arc<Catalogue>,
    overrides: &HashMap<String, j1msky_gateway::ProviderOverride>,
    id_of: &dyn Fn(&str) -> Option<String>,
    now: i64,
) -> Result<usize, Failure> {
    let clock = ManualClock::new(now - DAYS * DAY);
    let gateway = j1msky_gateway::Gateway::builder(db.clone(), catalogue.clone())
        .overrides(overrides.clone())
        .clock(Arc::new(clock.clone()))
        .build()
        .map_err(anyhow::Error::from)?;
    let gateway = Arc::new(gateway);
    let worker = j1msky_tasks::Worker::new(
        db.clone(),
        catalogue.clone(),
        gateway.clone(),
        Arc::new(clock.clone()),
        "demo-history",
        j1msky_tasks::WorkerConfig::default(),
    );
    let mut ran = 0;
    // Oldest first: the worker's clock only moves forward.
    let mut work: Vec<(usize, &(&str, &str, i64))> = WORK.iter().enumerate().collect();
    work.sort_by_key(|(_, (_, _, days_ago))| -days_ago);
    for (i, (customer, team, days_ago)) in work {
        let Some(cid) = id_of(customer) else { continue };
        let at = now - days_ago * DAY + 3_600_000_000 * (i as i64 % 5 + 9);
        if at > clock.now_micros() {
            clock.advance_micros(at - clock.now_micros());
        }
        let input = j1msky_tasks::NewTask {
            team: (*team).into(),
            prompt: Some(format!("Demo {team} work for {customer}, {days_ago} days ago")),
            ..j1msky_tasks::NewTask::default()
        };
        let key = format!("demo-history-{i}");
        match j1msky_tasks::submit(db, catalogue, &cid, &input, Some(&key), clock.now_micros()).await {
            Ok(done) if done.replayed => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::info!(%customer, %team, error = %e, "demo history task not queued");
                continue;
            }
        }
        while let Some((_, outcome)) = worker.run_once().await.map_err(anyhow::Error::from)? {
            clock.advance_secs(90);
            if outcome == j1msky_tasks::worker::Outcome::Succeeded {
                ran += 1;
            }
        }
    }
    gateway.flush().await;
    Ok(ran)
}

/// Runs the insights' consumers over everything written so far, as the server's
/// `reactions` role would, so `j1msky kpi` shows the numbers before the server starts.
async fn catch_up_insights(db: &Db, catalogue: &Arc<Catalogue>) -> Result<(), Failure> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ctx = j1msky_insights::Ctx { db: db.clone(), catalogue: catalogue.clone().into(), clock: clock.clone() };
    let all = j1msky_insights::rollups::consumers(&ctx);
    if all.is_empty() {
        return Ok(());
    }
    let runner = Runner::for_this_process();
    loop {
        let p = consumers::run_once(db, &runner, &all, clock.as_ref()).await.map_err(anyhow::Error::from)?;
        if p.handled + p.passed == 0 {
            return Ok(());
        }
    }
}
