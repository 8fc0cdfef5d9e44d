//! The shape of `config/business.json`. Unknown fields are errors everywhere so that a
//! typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::money::Money;

/// The whole catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub business: Business,
    /// Length of the free trial, in days (0: no trial).
    pub trial_days: u32,
    /// The plan a customer moves to when they pause instead of cancelling.
    pub pause_plan: String,
    /// The most tasks one customer may have waiting or running at once, whatever its plan
    /// includes (a bounded queue: every claim reads past a customer's parked tasks).
    #[serde(default = "default_max_waiting_tasks")]
    pub max_waiting_tasks_per_customer: u32,
    pub plans: BTreeMap<String, Plan>,
    /// Pay-per-task price tiers (`simple`, `medium`, `complex`).
    pub pay_per_task: BTreeMap<String, Money>,
    /// What pay-per-task customers pay for direct API calls (`/v1/*`), as a percentage
    /// of the calls' model cost: billed per customer and UTC day (default 300: 3× cost).
    #[serde(default = "default_api_markup")]
    pub api_calls_markup_percent: u32,
    /// The hourly cap on a pay-per-task customer's model calls (direct and through its
    /// tasks), as a plan's `api_calls_per_hour` is a subscriber's (default 50).
    #[serde(default = "default_pay_per_task_calls")]
    pub pay_per_task_calls_per_hour: u32,
    pub teams: BTreeMap<String, Team>,
    pub models: BTreeMap<String, Model>,
    pub providers: BTreeMap<String, Provider>,
    pub routing: Routing,
    pub stripe: Stripe,
    /// Onboarding and retention: journeys, triggers, delivery, engagement.
    #[serde(default)]
    pub lifecycle: super::lifecycle::Lifecycle,
    /// Operator alerts (recipients, webhook, rate limit, cost spike) and report times.
    #[serde(default)]
    pub alerts: super::alerts::Alerts,
}

/// Who is selling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Business {
    pub name: String,
    pub support_email: String,
    /// IANA zone used for the business's own day boundaries (daily budget, reports).
    pub time_zone: String,
}

/// A subscription plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    /// Price per month, a decimal USD string.
    pub monthly_price: Money,
    /// True when `monthly_price` is a floor and the real price is agreed per customer.
    #[serde(default)]
    pub price_is_minimum: bool,
    /// `"all"` or the number of teams the customer chooses.
    pub teams: TeamAllowance,
    /// Tasks per month; `null` means unlimited.
    pub tasks_per_month: Option<u32>,
    /// Requests per hour on the customer API.
    pub api_calls_per_hour: u32,
    /// The most the business spends on models for one customer of this plan in a business
    /// month (its tasks' calls and its own API calls together), unless an operator sets
    /// the customer's own budget (`j1msky gateway budget`). Absent: no limit per customer
    /// but the operator's; a flat price with unlimited use otherwise lets one customer
    /// spend the business's whole daily budget for its subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_model_budget: Option<Money>,
    /// True when an operator may set limits per customer.
    #[serde(default)]
    pub custom_limits: bool,
    /// Service level, for plans that promise one.
    #[serde(default)]
    pub sla: Option<Sla>,
    /// The models this plan's calls may use (catalogue ids); absent means every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// What a call naming a model outside `models` gets (default: refused).
    #[serde(default, skip_serializing_if = "ModelOutsidePlan::is_refuse")]
    pub model_outside_plan: ModelOutsidePlan,
}

/// What happens to an API call that names a model its plan does not include.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelOutsidePlan {
    /// Refused with an error naming the plan's models: a customer is never billed for,
    /// nor silently served by, a model other than the one asked for.
    #[default]
    Refuse,
    /// Served by the first model of the asked model's fallback chain the plan includes;
    /// the response says so in `x-j1msky-rerouted-from`.
    Reroute,
}

impl ModelOutsidePlan {
    /// Whether this is the default.
    pub fn is_refuse(&self) -> bool {
        *self == ModelOutsidePlan::Refuse
    }
}

/// Which teams a plan includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeamAllowance {
    /// Every team in the catalogue.
    All,
    /// This many teams, chosen by the customer.
    Choose(u32),
}

impl Serialize for TeamAllowance {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TeamAllowance::All => s.serialize_str("all"),
            TeamAllowance::Choose(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for TeamAllowance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AllowanceVisitor;
        impl Visitor<'_> for AllowanceVisitor {
            type Value = TeamAllowance;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\" or the number of teams the customer chooses")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<TeamAllowance, E> {
                u32::try_from(n).map(TeamAllowance::Choose).map_err(|_| E::custom("too many teams"))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<TeamAllowance, E> {
                Err(E::custom(format!("a plan cannot include {n} teams; use \"all\" or a number from 0")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TeamAllowance, E> {
                if s == "all" {
                    Ok(TeamAllowance::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
        }
        d.deserialize_any(AllowanceVisitor)
    }
}

/// What an enterprise-style plan promises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    /// Queue priority; higher runs first.
    pub priority: u32,
    /// Longest a task may wait in the queue before it is an SLA breach.
    pub max_queue_wait_secs: u32,
}

/// An agent team: roles run in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Team {
    pub name: String,
    /// The routing category of the team's tasks (`code`, `writing`, `analysis`,
    /// `strategy`…); absent: the team's id.
    #[serde(default)]
    pub category: Option<String>,
    pub roles: Vec<Role>,
    /// Pre-built task templates, by id.
    #[serde(default)]
    pub templates: BTreeMap<String, TaskTemplate>,
}

/// One step of a team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub role: String,
    pub model: String,
    pub purpose: String,
    /// Largest answer of this step, in tokens.
    #[serde(default = "default_role_max_tokens")]
    pub max_tokens: u32,
    /// The step's system prompt, a minijinja template over `team`, `role`, `purpose`,
    /// `task` (title, prompt, category) and `previous` (earlier steps' role and output).
    /// Absent: a prompt built from the purpose.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A reviewing step: may send the work back to the step before it, once, by starting
    /// its answer with `REVISE:`.
    #[serde(default)]
    pub reviews: bool,
}

fn default_role_max_tokens() -> u32 {
    1024
}

/// A pre-built task: a title and a prompt template with fields the customer fills in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    pub title: String,
    /// Field names, each required, referenced in `prompt` as `{{ name }}`.
    pub fields: Vec<String>,
    /// A minijinja template producing the task's prompt.
    pub prompt: String,
}

/// A model offered through a provider, with its list prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub name: String,
    pub provider: String,
    /// The model name the provider's API expects.
    pub upstream: String,
    /// USD per million input tokens.
    pub input_per_mtok: Money,
    /// USD per million output tokens.
    pub output_per_mtok: Money,
    pub context_window: u32,
    /// Model to use when this one is rate-limited or down (usually a cheaper one).
    #[serde(default)]
    pub fallback: Option<String>,
    /// When the prices were last checked against the provider's price list (YYYY-MM-DD).
    pub prices_checked: String,
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions.
    Openai,
    /// Anthropic messages.
    Anthropic,
}

/// A model provider endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub kind: ProviderKind,
    pub base_url: String,
    /// Name of the environment variable that holds the API key (never the key itself).
    pub api_key_env: String,
    pub requests_per_hour: u32,
}

/// Which model runs which kind of task, and the spending caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    pub default_model: String,
    /// Task category → model.
    pub categories: BTreeMap<String, String>,
    /// Models that may only serve the listed categories (e.g. Opus for architecture/strategy).
    #[serde(default)]
    pub model_only_for: BTreeMap<String, Vec<String>>,
    /// The model every task is forced onto in economy mode (costs spiking).
    pub economy_model: String,
    /// Upstream requests per hour across all customers.
    pub hourly_request_cap: u32,
    /// Spending cap per business day, a decimal USD string.
    pub daily_budget: Money,
    /// Percentages of the daily budget at which the operator is alerted, ascending.
    pub alert_levels_percent: Vec<u32>,
    /// The most one customer's model calls may spend in a business day, as a percentage
    /// of the daily budget in force (1–100), so one customer cannot take the day's budget
    /// from every other; customers of a plan with `custom_limits` (contracts) are held to
    /// their contract instead. Absent: no share per customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_daily_share_percent: Option<u32>,
}

/// Where the Stripe secrets are found. Names of environment variables only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stripe {
    pub secret_key_env: String,
    pub webhook_secret_env: String,
    #[serde(default)]
    pub publishable_key_env: Option<String>,
    /// Webhook events the endpoint must be subscribed to.
    pub webhook_events: Vec<String>,
    /// The Stripe API version every request pins (`Stripe-Version`).
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Three-letter ISO currency for prices and coupons (lowercase, as Stripe writes it).
    #[serde(default = "default_currency")]
    pub currency: String,
    /// True only for a deployment that may use a live (`sk_live_`) key.
    #[serde(default)]
    pub live: bool,
    /// Days a customer keeps using the service after a failed payment (`past_due`).
    #[serde(default = "default_past_due_grace_days")]
    pub past_due_grace_days: u32,
    /// Whether a customer whose payment is disputed (a chargeback open or lost) is kept
    /// from the service until it is won or the operator lets them back.
    #[serde(default = "default_pause_on_dispute")]
    pub pause_on_dispute: bool,
    /// Retention and upgrade discounts, by offer id (`we_miss_you`, `win_back`, `upgrade`).
    #[serde(default)]
    pub offers: BTreeMap<String, Offer>,
}

fn default_api_version() -> String {
    "2024-06-20".into()
}

fn default_past_due_grace_days() -> u32 {
    7
}

fn default_max_waiting_tasks() -> u32 {
    500
}

fn default_pause_on_dispute() -> bool {
    true
}

fn default_currency() -> String {
    "usd".into()
}

/// A discount offered to keep or win a customer; becomes a Stripe coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    pub name: String,
    /// Whole percent off, 1–100.
    pub percent_off: u32,
    /// For how many monthly invoices: 1 is the next one only.
    pub months: u32,
    /// Days before the same customer may be granted this offer again; absent means once
    /// per customer, ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_days: Option<u32>,
}

fn default_api_markup() -> u32 {
    300
}

fn default_pay_per_task_calls() -> u32 {
    50
}
