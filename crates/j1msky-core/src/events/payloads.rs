//! One payload struct per event kind, with the field names stored rows already
//! carry. Kinds that one code path emits by a runtime choice (a Stripe
//! subscription event, a checkout outcome, an invoice given up, a survey decided)
//! share a shape; [`Typed`](super::Typed)'s variant still names the kind.
//!
//! Fields a row written by an older build may lack are `Option`s (a missing
//! field reads as `None`), and unknown fields are ignored, so old rows decode.
//! `deny_unknown_fields` is kept to the kinds that were written from a struct
//! from their first day (and to the notice of `subscription.trial_will_end`, which
//! must not pass for a snapshot).

use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::vocab::{Stage, UseCase, UserRole};

/// `user.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: String,
    pub role: UserRole,
}

/// `user.logged_in`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLoggedIn {
    pub user_id: String,
}

/// Contract terms as events carry them; `None` falls back to the plan's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractTerms {
    pub tasks_per_month: Option<i64>,
    pub calls_per_hour: Option<i64>,
    pub monthly_price: Option<Money>,
}

/// `customer.created`: the customer as first stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerCreated {
    pub id: String,
    pub name: String,
    pub contact_email: Option<String>,
    pub stage: Stage,
    pub use_case: Option<UseCase>,
    pub plan: Option<String>,
    #[serde(default)]
    pub chosen_teams: Vec<String>,
    pub expected_monthly_tasks: Option<i64>,
    #[serde(default)]
    pub time_zone: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
    #[serde(default)]
    pub stage_changed_at: i64,
    #[serde(default)]
    pub contract: ContractTerms,
    pub stripe_customer_id: Option<String>,
    pub billing_status: Option<String>,
    pub billing_status_since: Option<i64>,
    #[serde(default)]
    pub payment_method_on_file: bool,
    #[serde(default)]
    pub disputed_since: Option<i64>,
}

/// `customer.stage_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerStageChanged {
    pub from: Stage,
    pub to: Stage,
}

/// `customer.contract_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerContractChanged {
    pub from: ContractTerms,
    pub to: ContractTerms,
}

/// `customer.plan_changed` (from Stripe's subscriptions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerPlanChanged {
    pub from: Option<String>,
    pub to: String,
}

/// `customer.budget_changed`; `None`: no monthly budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerBudgetChanged {
    pub monthly_budget: Option<Money>,
}

/// `customer.billing_status_changed`: `past_due` / `unpaid`, or `None` when paid up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerBillingStatusChanged {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// `customer.payment_method_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerPaymentMethodChanged {
    pub on_file: bool,
}

/// `customer.access_restricted`: the grace period of a failed payment ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerAccessRestricted {
    pub billing_status: String,
    /// When the billing status began (unix microseconds).
    pub since: i64,
}

/// `customer.active`: a customer used the product (throttled to one per hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerActive {
    /// `api_key` (a model or /api/v1 call with a key) or `task` (a task submitted).
    pub source: String,
}

/// `plan.limit_hit`: a request the plan refused (throttled per customer and limit per hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitHit {
    /// `hourly_cap`, `monthly_budget`, `team_not_in_plan`, `model_not_in_plan`, or a task limit.
    pub limit: String,
    /// Rows written before this struct called it `message`.
    #[serde(default, alias = "message", skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `customer.subscription_state`: what billing derived for a customer from all of
/// its subscriptions, which accounts applies to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerSubscriptionState {
    /// A plan of the catalogue, when the deciding subscription is on one.
    pub plan: Option<String>,
    /// None when the deciding subscription's status says nothing about the stage.
    pub stage: Option<String>,
    /// `past_due` / `unpaid`, or None when paid up.
    pub billing_status: Option<String>,
    /// When the change happened at Stripe (unix microseconds).
    pub at: i64,
    /// The deciding subscription's Stripe status.
    #[serde(default)]
    pub subscription_status: Option<String>,
    /// The deciding subscription's free trial, while it is trialing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialWindow>,
    /// The period its last invoice paid for, while it is paid (active, or failing in its
    /// grace period): `started_at` is the period's start, `ends_at` its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<TrialWindow>,
    /// The monthly model budget that period paid for (micro-USD): the plans' budgets for
    /// the shares of the period each was in force (an upgrade mid-period buys its share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_budget_micros: Option<i64>,
}

/// When a subscription's free trial (or a paid period) started and ends (unix microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialWindow {
    pub started_at: i64,
    pub ends_at: i64,
}

/// `task.submitted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSubmitted {
    pub task_id: String,
    pub team: String,
    pub category: String,
    pub template: Option<String>,
}

/// `task.started`: a worker claimed the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStarted {
    pub task_id: String,
    pub attempt: i64,
    pub worker: String,
}

/// `task.succeeded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSucceeded {
    pub task_id: String,
    pub team: String,
    pub steps: i64,
    pub cost_micros: i64,
    pub tier: Option<String>,
    /// What the customer is charged, for pay-per-task; `None` on a plan.
    pub charge_micros: Option<i64>,
}

/// `task.failed`: for good (`failures` counts the attempts that failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailed {
    pub task_id: String,
    pub team: String,
    pub error: String,
    pub failures: i64,
}

/// `task.cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCancelled {
    pub task_id: String,
    /// Who cancelled it.
    pub by: String,
}

/// `task.retried`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRetried {
    pub task_id: String,
    /// Who asked for the retry.
    pub by: String,
}

/// `usage.api_metered`: a customer's day of direct API calls became a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageApiMetered {
    pub day: String,
    pub cost_micros: i64,
    pub charge_micros: i64,
}

/// `usage.reported`: a usage charge became a Stripe invoice item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReported {
    pub charge: String,
    pub task: Option<String>,
    pub api_day: Option<String>,
    pub tier: String,
    pub amount_cents: i64,
    pub invoice_item: Option<String>,
}

/// `gateway.mode_changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayModeChanged {
    pub mode: String,
    pub reason: String,
}

/// `gateway.cap_changed`: a cap (or the daily budget) set, `None`: back to the catalogue's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayCapChanged {
    pub scope: String,
    pub cap: Option<i64>,
}

/// `budget.level_crossed`: the day's spend crossed an alert level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLevelCrossed {
    /// Percent of the daily budget.
    pub level: u32,
    pub spent_micros: i64,
    pub budget_micros: i64,
}

/// `provider.auth_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAuthFailed {
    pub provider: String,
}

/// `alert.raised`: a new operator alert was recorded (emitted by `audit::alerts::record`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRaised {
    pub alert: String,
    pub kind: String,
    pub message: String,
}

/// `ledger.backlog`: cost rows could not be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerBacklog {
    pub unflushed: u64,
}

/// `billing.offer_granted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingOfferGranted {
    pub grant: String,
    pub offer: String,
    pub granted_by: String,
    #[serde(default)]
    pub subscription: Option<String>,
    /// Set when the offer is held for the customer to redeem later (an upgrade prompt's
    /// coupon): it lapses unspent at this time (unix microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<i64>,
}

/// What is offered instead of cancelling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetentionOffer {
    Pause { days: i64 },
    Downgrade { plan: String },
    Discount { offer: String },
}

/// `retention.exit_survey`: a customer who wants to cancel answered why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionExitSurvey {
    pub survey: String,
    pub reason: String,
    pub offer: Option<RetentionOffer>,
    pub subscription: Option<String>,
}

/// `retention.offer_accepted` and `retention.cancelled`: how an exit survey ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyDecided {
    pub survey: String,
    pub reason: String,
    pub offer: Option<RetentionOffer>,
}

/// `checkout.completed`, `checkout.payment_succeeded` and `checkout.payment_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutOutcome {
    pub session: Option<String>,
    pub subscription: Option<String>,
    pub payment_status: Option<String>,
    pub plan: Option<String>,
    pub offer: Option<String>,
}

/// `invoice.paid`: the plan's part is booked as revenue (`amount_cents`), usage apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePaid {
    pub invoice: String,
    pub amount_cents: i64,
    /// Absent from rows written before usage was booked apart: 0.
    #[serde(default)]
    pub usage_cents: i64,
    pub plan: Option<String>,
    pub subscription: Option<String>,
}

/// `invoice.voided` and `invoice.marked_uncollectible`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceGivenUp {
    pub invoice: String,
    /// `void` or `uncollectible`.
    pub status: String,
    pub amount_due: Option<i64>,
    pub usage_reversed_cents: i64,
}

/// `invoice.payment_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePaymentFailed {
    pub invoice: Option<String>,
    pub subscription: Option<String>,
    pub amount_due: Option<i64>,
    pub attempt_count: Option<i64>,
    /// Unix seconds, as Stripe gives it; `None` when Stripe will not try again.
    pub next_payment_attempt: Option<i64>,
}

/// `charge.refunded`: `amount_refunded` is the charge's total refunded so far (cents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRefunded {
    pub charge: String,
    pub amount_refunded: i64,
    pub invoice: Option<String>,
}

/// `charge.disputed`: a dispute of a charge is new or moved on (a newer Stripe snapshot
/// with another status). `restricted`: whether the customer is kept from the service
/// after it. Amount in Stripe's minor units; `evidence_due_by` in unix microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeDisputed {
    pub dispute: String,
    pub charge: String,
    pub status: String,
    pub reason: String,
    pub amount_cents: i64,
    pub currency: String,
    pub evidence_due_by: Option<i64>,
    pub restricted: bool,
}

/// `billing.stripe_fee_booked`: what Stripe kept of money moved on a charge (a payment's
/// processing fee, a dispute's fee), as its balance transaction says, booked as revenue
/// entry `balance_transaction` (its amount −`fee_cents`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeFeeBooked {
    pub balance_transaction: String,
    pub charge: String,
    pub fee_cents: i64,
    pub currency: String,
}

/// `subscription.created|updated|deleted|paused|resumed`: the subscription as stored
/// after a newer Stripe snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionChange {
    pub subscription: String,
    pub status: Option<String>,
    pub plan: Option<String>,
    pub cancel_at_period_end: Option<bool>,
    /// Unix seconds, as Stripe gives it.
    pub current_period_end: Option<i64>,
    pub stripe_customer: Option<String>,
}

/// `subscription.trial_will_end`: a newer snapshot, or (when a newer one was
/// already held) the notice alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubscriptionTrialWillEnd {
    Notice(TrialNotice),
    Snapshot(SubscriptionChange),
}

/// The notice part of `subscription.trial_will_end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialNotice {
    pub subscription: String,
    /// Unix seconds, as Stripe gives it.
    pub trial_end: Option<i64>,
}

/// `subscription.cancelled`: the customer cancelled outside our own cancel flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionCancelled {
    pub subscription: String,
    /// `customer_portal` today.
    pub source: String,
    /// True when it ends at the period's end, false when it ended now.
    pub at_period_end: bool,
}

/// `subscription.history_changed`: billing recorded a subscription snapshot in
/// `subscription_history` (any snapshot, a stale one too), or joined a Stripe customer's
/// earlier snapshots to our customer (`subscription` is then `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionHistoryChanged {
    pub subscription: Option<String>,
    /// Ours, when linked.
    pub customer: Option<String>,
    pub stripe_customer: String,
}

/// `todo.opened` / `todo.done`: a staff to-do was opened, or marked done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoChanged {
    pub todo: String,
    pub reason: String,
    /// Who marked it done (`todo.done` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `survey.nps_answered`: a customer answered an NPS survey (score 0-10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpsAnswered {
    pub survey: String,
    pub score: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `survey.testimonial_given`: a customer wrote a testimonial (and said whether it may be published).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestimonialGiven {
    pub survey: String,
    pub consent_to_publish: bool,
}

/// `lifecycle.message_sent`: a lifecycle mail was handed to the mail server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleMessageSent {
    /// The `lifecycle_messages` row.
    pub message: String,
    pub template: String,
    /// `transactional`, `onboarding`, `retention` or `marketing`.
    pub category: String,
    /// The enrollment (or `newsletter:<id>`, `survey:<id>`) it came from.
    pub source: String,
}

/// `lifecycle.message_failed`: a lifecycle mail ended without a known delivery:
/// `failed` (refused) or `unknown` (it may have arrived; never resent by itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleMessageFailed {
    pub message: String,
    pub template: String,
    pub state: String,
    pub error: String,
}

/// `lifecycle.unsubscribed`: a customer unsubscribed from a mail category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleUnsubscribed {
    pub category: String,
}
