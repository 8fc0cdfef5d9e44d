//! Shared by the MRR tests: a database, a clock and the insights context; Stripe
//! subscription events as Stripe writes them, stored and applied by billing's real
//! webhook store and applier; the MRR consumer run to the end.

#![allow(dead_code)]

use std::sync::Arc;

use j1msky_accounts::customers::{self, NewCustomer};
use j1msky_audit::Actor;
use j1msky_billing::{apply, webhook};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_core::vocab::Stage;
use j1msky_core::{Clock, ManualClock};
use j1msky_db::consumers::{self, Runner};
use j1msky_db::testing::TestDb;
use j1msky_db::Db;
use j1msky_insights::Ctx;
use serde_json::{json, Value};

pub mod story;

pub struct World {
    pub db: Db,
    pub clock: ManualClock,
    pub ctx: Ctx,
    /// The database's owner when the world made it (dropped last).
    _t: Option<TestDb>,
}

/// A fresh database with the shipped catalogue counted in `zone`, the clock at `now`.
pub async fn world(zone: &str, now_secs: i64) -> World {
    let t = TestDb::new().await;
    let mut catalogue = Catalogue::from_json_str(SHIPPED).expect("catalogue");
    catalogue.business.time_zone = zone.to_string();
    let clock = ManualClock::new(now_secs * 1_000_000);
    let ctx = Ctx { db: t.db.clone(), catalogue: Arc::new(catalogue).into(), clock: Arc::new(clock.clone()) };
    World { db: t.db.clone(), clock, ctx, _t: Some(t) }
}

/// A world over someone else's database, catalogue and clock (`ctx`'s; `clock` is the
/// same clock, to move it): an app's or a command's, to show the story through them.
pub fn on(ctx: Ctx, clock: ManualClock) -> World {
    World { db: ctx.db.clone(), clock, ctx, _t: None }
}

impl World {
    pub fn set_now(&self, secs: i64) {
        let now = self.clock.now_micros();
        self.clock.advance_micros(secs * 1_000_000 - now);
    }

    /// One of our customers.
    pub async fn customer(&self, name: &str) -> String {
        customers::create(
            &self.db,
            &self.ctx.catalogue,
            &Actor::cli(),
            NewCustomer { name: name.into(), stage: Some(Stage::Qualified), ..Default::default() },
            self.clock.now_micros(),
        )
        .await
        .expect("customer")
        .id
    }

    /// Stores the events (as webhook deliveries would) and applies everything pending.
    pub async fn deliver(&self, events: &[Value]) {
        let now = self.clock.now_micros();
        for e in events {
            webhook::store(&self.db, e, now).await.expect("store");
        }
        let ctx = apply::Ctx { catalogue: &self.ctx.catalogue };
        while webhook::apply_pending(&self.db, &ctx, 100, now).await.expect("apply") > 0 {}
        let failed: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT id, error FROM stripe_events WHERE state <> 'applied'")
                .fetch_all(self.db.pool())
                .await
                .unwrap();
        assert!(failed.is_empty(), "events not applied: {failed:?}");
    }

    /// Runs the MRR consumer until it has read every event.
    pub async fn consume(&self) {
        let runner = Runner::new("mrr-test");
        let all = j1msky_insights::mrr::consumers(&self.ctx);
        loop {
            let p = consumers::run_once(&self.db, &runner, &all, &self.clock).await.expect("consumer");
            assert_eq!(p.failed, 0, "the MRR consumer failed");
            if !p.moved() {
                break;
            }
        }
    }
}

/// A subscription item: a price (`lookup_key`, amount in cents, interval) × quantity.
#[derive(Debug, Clone)]
pub struct Item {
    pub lookup_key: String,
    pub cents: i64,
    pub interval: &'static str,
    pub quantity: i64,
    pub metered: bool,
    /// Contract prices name their plan and customer in metadata, without a plan lookup key.
    pub contract_for: Option<(String, String)>,
}

impl Item {
    pub fn plan(plan: &str, cents: i64) -> Item {
        Item {
            lookup_key: format!("j1msky_{plan}_monthly"),
            cents,
            interval: "month",
            quantity: 1,
            metered: false,
            contract_for: None,
        }
    }

    fn json(&self, n: usize) -> Value {
        let mut price = json!({
            "id": format!("price_{}_{}", self.lookup_key, self.cents), "object": "price", "currency": "usd",
            "unit_amount": self.cents, "lookup_key": self.lookup_key, "type": "recurring",
            "recurring": {"interval": self.interval, "interval_count": 1,
                          "usage_type": if self.metered { "metered" } else { "licensed" }},
        });
        if let Some((plan, customer)) = &self.contract_for {
            price["lookup_key"] = json!(format!("j1msky_contract_{customer}"));
            price["metadata"] = json!({"j1msky_plan": plan, "j1msky_customer": customer});
        }
        json!({"id": format!("si_{n}"), "object": "subscription_item", "price": price,
               "quantity": if self.metered { Value::Null } else { json!(self.quantity) }})
    }
}

/// A discount on a subscription snapshot.
#[derive(Debug, Clone)]
pub enum Discount {
    Percent { percent: f64, end: Option<i64> },
    AmountOff { cents: i64, end: Option<i64> },
}

/// One `customer.subscription.*` event.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub event: String,
    pub created: i64,
    pub subscription: String,
    pub stripe_customer: String,
    pub status: &'static str,
    pub items: Vec<Item>,
    pub discount: Option<Discount>,
    /// Ours, in metadata (links the Stripe customer when not linked yet).
    pub ours: Option<String>,
}

impl Snapshot {
    pub fn event(&self) -> Value {
        let kind = match self.status {
            "canceled" => "customer.subscription.deleted",
            _ => "customer.subscription.updated",
        };
        let discount = self.discount.as_ref().map(|d| {
            let (coupon, end) = match d {
                Discount::Percent { percent, end } => {
                    (json!({"id": "co_pct", "object": "coupon", "percent_off": percent, "amount_off": null}), end)
                }
                Discount::AmountOff { cents, end } => {
                    (json!({"id": "co_off", "object": "coupon", "percent_off": null, "amount_off": cents}), end)
                }
            };
            json!({"id": "di_1", "object": "discount", "coupon": coupon, "end": end, "start": self.created,
                   "customer": self.stripe_customer, "subscription": self.subscription})
        });
        let items: Vec<Value> = self.items.iter().enumerate().map(|(i, it)| it.json(i)).collect();
        let meta = match &self.ours {
            Some(c) => json!({"j1msky_customer": c}),
            None => json!({}),
        };
        json!({"id": self.event, "object": "event", "type": kind, "created": self.created, "livemode": false,
               "data": {"object": {
                   "id": self.subscription, "object": "subscription", "customer": self.stripe_customer,
                   "status": self.status, "items": {"object": "list", "data": items},
                   "cancel_at_period_end": false, "current_period_end": self.created + 30 * 86_400,
                   "created": self.created, "discount": discount, "metadata": meta}}})
    }
}
