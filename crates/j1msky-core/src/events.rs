//! The catalogue of event kinds the outbox stores. The strings are the ones
//! stored rows already carry, so old rows stay readable; every stored payload
//! carries a `v` number (a payload written before versioning reads as 1), so a
//! reader can tell which shape it holds when a kind's payload changes.

use serde::{Deserialize, Serialize};

macro_rules! kinds {
    ($($variant:ident => $s:literal),* $(,)?) => {
        /// Every kind of event the system emits.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind { $($variant),* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The stored string.
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$variant => $s),* }
            }

            /// The kind a stored string names; `None` for a kind this build does not know.
            pub fn parse(s: &str) -> Option<Kind> {
                match s { $($s => Some(Kind::$variant),)* _ => None }
            }
        }
    };
}

kinds! {
    UserCreated => "user.created",
    UserLoggedIn => "user.logged_in",
    CustomerCreated => "customer.created",
    CustomerStageChanged => "customer.stage_changed",
    CustomerContractChanged => "customer.contract_changed",
    CustomerPlanChanged => "customer.plan_changed",
    CustomerBudgetChanged => "customer.budget_changed",
    CustomerBillingStatusChanged => "customer.billing_status_changed",
    CustomerPaymentMethodChanged => "customer.payment_method_changed",
    CustomerAccessRestricted => "customer.access_restricted",
    CustomerActive => "customer.active",
    PlanLimitHit => "plan.limit_hit",
    CustomerSubscriptionState => "customer.subscription_state",
    TaskSubmitted => "task.submitted",
    TaskStarted => "task.started",
    TaskSucceeded => "task.succeeded",
    TaskFailed => "task.failed",
    TaskCancelled => "task.cancelled",
    TaskRetried => "task.retried",
    UsageApiMetered => "usage.api_metered",
    UsageReported => "usage.reported",
    GatewayModeChanged => "gateway.mode_changed",
    GatewayCapChanged => "gateway.cap_changed",
    BudgetLevelCrossed => "budget.level_crossed",
    ProviderAuthFailed => "provider.auth_failed",
    LedgerBacklog => "ledger.backlog",
    BillingOfferGranted => "billing.offer_granted",
    RetentionExitSurvey => "retention.exit_survey",
    RetentionOfferAccepted => "retention.offer_accepted",
    RetentionCancelled => "retention.cancelled",
    CheckoutCompleted => "checkout.completed",
    CheckoutPaymentSucceeded => "checkout.payment_succeeded",
    CheckoutPaymentFailed => "checkout.payment_failed",
    InvoicePaid => "invoice.paid",
    InvoiceVoided => "invoice.voided",
    InvoiceMarkedUncollectible => "invoice.marked_uncollectible",
    InvoicePaymentFailed => "invoice.payment_failed",
    ChargeRefunded => "charge.refunded",
    SubscriptionCreated => "subscription.created",
    SubscriptionUpdated => "subscription.updated",
    SubscriptionDeleted => "subscription.deleted",
    SubscriptionPaused => "subscription.paused",
    SubscriptionResumed => "subscription.resumed",
    SubscriptionTrialWillEnd => "subscription.trial_will_end",
    SubscriptionCancelled => "subscription.cancelled",
    TodoOpened => "todo.opened",
    TodoDone => "todo.done",
    SurveyNpsAnswered => "survey.nps_answered",
    SurveyTestimonialGiven => "survey.testimonial_given",
}

impl Kind {
    /// The payload version written today. Bump it (and teach readers the old
    /// shape) when a kind's payload changes meaning.
    pub fn version(self) -> u32 {
        1
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Kind::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown event kind `{s}`")))
    }
}

/// The payload as stored: the kind's current version added under `v` (an
/// explicit `v` the caller set wins).
pub fn versioned(kind: Kind, payload: &serde_json::Value) -> serde_json::Value {
    match payload {
        serde_json::Value::Object(map) => {
            let mut map = map.clone();
            map.entry("v").or_insert_with(|| kind.version().into());
            serde_json::Value::Object(map)
        }
        other => serde_json::json!({"v": kind.version(), "value": other}),
    }
}

/// A stored event read back in typed terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub kind: Kind,
    /// The payload's version; 1 for a row written before versioning.
    pub version: u32,
    pub payload: serde_json::Value,
}

/// Why a stored event cannot be read by this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    #[error("unknown event kind `{0}`")]
    UnknownKind(String),
    #[error("event `{kind}` payload version {version} is newer than this build reads ({known})")]
    FutureVersion { kind: String, version: u64, known: u32 },
    #[error("event `{kind}` payload: {reason}")]
    BadPayload { kind: String, reason: String },
}

/// Reads a stored kind and payload.
pub fn decode(kind: &str, payload: &serde_json::Value) -> Result<Decoded, Undecodable> {
    let k = Kind::parse(kind).ok_or_else(|| Undecodable::UnknownKind(kind.to_string()))?;
    if !payload.is_object() {
        return Err(Undecodable::BadPayload { kind: kind.to_string(), reason: "not a JSON object".into() });
    }
    let version = match payload.get("v") {
        None => 1,
        Some(v) => v.as_u64().ok_or_else(|| Undecodable::BadPayload {
            kind: kind.to_string(),
            reason: format!("`v` is {v}, not a version number"),
        })?,
    };
    if version > u64::from(k.version()) {
        return Err(Undecodable::FutureVersion { kind: kind.to_string(), version, known: k.version() });
    }
    let version = u32::try_from(version).unwrap_or(1);
    Ok(Decoded { kind: k, version, payload: payload.clone() })
}

impl Decoded {
    /// The payload in a typed shape (the new kinds below have one).
    pub fn payload_as<T: for<'de> Deserialize<'de>>(&self) -> Result<T, Undecodable> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| Undecodable::BadPayload { kind: self.kind.as_str().to_string(), reason: e.to_string() })
    }
}

/// `customer.active`: a customer used the product (throttled to one per hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerActive {
    /// `api_key` (a model or /api/v1 call with a key) or `task` (a task submitted).
    pub source: String,
}

/// `plan.limit_hit`: a request the plan refused (throttled per customer and limit per hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitHit {
    /// `hourly_cap`, `monthly_budget`, `team_not_in_plan`, `model_not_in_plan`, or a task limit.
    pub limit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `subscription.cancelled`: the customer cancelled outside our own cancel flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionCancelled {
    pub subscription: String,
    /// `customer_portal` today.
    pub source: String,
    /// True when it ends at the period's end, false when it ended now.
    pub at_period_end: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_string() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(*k));
        }
    }

    #[test]
    fn a_payload_without_v_reads_as_version_1() {
        let d = decode("task.succeeded", &serde_json::json!({"task": "t1"})).map_err(|e| e.to_string());
        assert_eq!(d.map(|d| d.version), Ok(1));
    }

    #[test]
    fn an_unknown_kind_or_future_version_is_undecodable() {
        assert!(matches!(decode("nope.kind", &serde_json::json!({})), Err(Undecodable::UnknownKind(_))));
        assert!(matches!(
            decode("task.succeeded", &serde_json::json!({"v": 99})),
            Err(Undecodable::FutureVersion { .. })
        ));
    }

    #[test]
    fn versioned_adds_v_and_keeps_fields() {
        let p = versioned(Kind::CustomerActive, &serde_json::json!({"source": "task"}));
        assert_eq!(p, serde_json::json!({"source": "task", "v": 1}));
    }
}
