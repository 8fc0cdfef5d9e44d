//! The catalogue of event kinds the outbox stores. The strings are the ones
//! stored rows already carry, so old rows stay readable; every stored payload
//! carries a `v` number (a payload written before versioning reads as 1), so a
//! reader can tell which shape it holds when a kind's payload changes.

use serde::{Deserialize, Serialize};

mod payloads;
pub use payloads::*;

macro_rules! kinds {
    ($($variant:ident => $s:literal : $payload:ty),* $(,)?) => {
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

        /// An event's payload with its kind: the variant fixes the kind, the
        /// struct the stored fields. Built by every emitter, read back by [`decode_typed`].
        #[derive(Debug, Clone, PartialEq)]
        pub enum Typed { $($variant($payload)),* }

        impl Typed {
            /// The kind this payload is stored under.
            pub fn kind(&self) -> Kind {
                match self { $(Typed::$variant(_) => Kind::$variant),* }
            }

            /// The payload's JSON (without `v`; the outbox adds it).
            pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
                match self { $(Typed::$variant(p) => serde_json::to_value(p)),* }
            }

            /// Reads a payload (without `v`) of `kind`.
            fn from_value(kind: Kind, v: serde_json::Value) -> Result<Typed, serde_json::Error> {
                match kind { $(Kind::$variant => serde_json::from_value(v).map(Typed::$variant)),* }
            }
        }
    };
}

/// A payload struct that belongs to exactly one kind: emitting it cannot pick
/// another kind. (Shapes shared by several kinds are emitted as a [`Typed`]
/// variant, which names the kind.)
pub trait Payload: Serialize + for<'de> Deserialize<'de> + Into<Typed> {
    const KIND: Kind;
}

macro_rules! one_kind {
    ($($variant:ident),* $(,)?) => {
        $(
            impl Payload for $variant {
                const KIND: Kind = Kind::$variant;
            }
            impl From<$variant> for Typed {
                fn from(p: $variant) -> Typed {
                    Typed::$variant(p)
                }
            }
        )*
    };
}

kinds! {
    UserCreated => "user.created": UserCreated,
    UserLoggedIn => "user.logged_in": UserLoggedIn,
    CustomerCreated => "customer.created": CustomerCreated,
    CustomerStageChanged => "customer.stage_changed": CustomerStageChanged,
    CustomerContractChanged => "customer.contract_changed": CustomerContractChanged,
    CustomerPlanChanged => "customer.plan_changed": CustomerPlanChanged,
    CustomerBudgetChanged => "customer.budget_changed": CustomerBudgetChanged,
    CustomerBillingStatusChanged => "customer.billing_status_changed": CustomerBillingStatusChanged,
    CustomerPaymentMethodChanged => "customer.payment_method_changed": CustomerPaymentMethodChanged,
    CustomerAccessRestricted => "customer.access_restricted": CustomerAccessRestricted,
    CustomerActive => "customer.active": CustomerActive,
    PlanLimitHit => "plan.limit_hit": LimitHit,
    CustomerSubscriptionState => "customer.subscription_state": CustomerSubscriptionState,
    TaskSubmitted => "task.submitted": TaskSubmitted,
    TaskStarted => "task.started": TaskStarted,
    TaskSucceeded => "task.succeeded": TaskSucceeded,
    TaskFailed => "task.failed": TaskFailed,
    TaskCancelled => "task.cancelled": TaskCancelled,
    TaskRetried => "task.retried": TaskRetried,
    UsageApiMetered => "usage.api_metered": UsageApiMetered,
    UsageReported => "usage.reported": UsageReported,
    GatewayModeChanged => "gateway.mode_changed": GatewayModeChanged,
    GatewayCapChanged => "gateway.cap_changed": GatewayCapChanged,
    BudgetLevelCrossed => "budget.level_crossed": BudgetLevelCrossed,
    ProviderAuthFailed => "provider.auth_failed": ProviderAuthFailed,
    LedgerBacklog => "ledger.backlog": LedgerBacklog,
    AlertRaised => "alert.raised": AlertRaised,
    BillingOfferGranted => "billing.offer_granted": BillingOfferGranted,
    RetentionExitSurvey => "retention.exit_survey": RetentionExitSurvey,
    RetentionOfferAccepted => "retention.offer_accepted": SurveyDecided,
    RetentionCancelled => "retention.cancelled": SurveyDecided,
    CheckoutCompleted => "checkout.completed": CheckoutOutcome,
    CheckoutPaymentSucceeded => "checkout.payment_succeeded": CheckoutOutcome,
    CheckoutPaymentFailed => "checkout.payment_failed": CheckoutOutcome,
    InvoicePaid => "invoice.paid": InvoicePaid,
    InvoiceVoided => "invoice.voided": InvoiceGivenUp,
    InvoiceMarkedUncollectible => "invoice.marked_uncollectible": InvoiceGivenUp,
    InvoicePaymentFailed => "invoice.payment_failed": InvoicePaymentFailed,
    ChargeRefunded => "charge.refunded": ChargeRefunded,
    ChargeDisputed => "charge.disputed": ChargeDisputed,
    StripeFeeBooked => "billing.stripe_fee_booked": StripeFeeBooked,
    SubscriptionCreated => "subscription.created": SubscriptionChange,
    SubscriptionUpdated => "subscription.updated": SubscriptionChange,
    SubscriptionDeleted => "subscription.deleted": SubscriptionChange,
    SubscriptionPaused => "subscription.paused": SubscriptionChange,
    SubscriptionResumed => "subscription.resumed": SubscriptionChange,
    SubscriptionTrialWillEnd => "subscription.trial_will_end": SubscriptionTrialWillEnd,
    SubscriptionCancelled => "subscription.cancelled": SubscriptionCancelled,
    SubscriptionHistoryChanged => "subscription.history_changed": SubscriptionHistoryChanged,
    TodoOpened => "todo.opened": TodoChanged,
    TodoDone => "todo.done": TodoChanged,
    SurveyNpsAnswered => "survey.nps_answered": NpsAnswered,
    SurveyTestimonialGiven => "survey.testimonial_given": TestimonialGiven,
    LifecycleMessageSent => "lifecycle.message_sent": LifecycleMessageSent,
    LifecycleMessageFailed => "lifecycle.message_failed": LifecycleMessageFailed,
    LifecycleUnsubscribed => "lifecycle.unsubscribed": LifecycleUnsubscribed,
}

one_kind! {
    UserCreated,
    UserLoggedIn,
    CustomerCreated,
    CustomerStageChanged,
    CustomerContractChanged,
    CustomerPlanChanged,
    CustomerBudgetChanged,
    CustomerBillingStatusChanged,
    CustomerPaymentMethodChanged,
    CustomerAccessRestricted,
    CustomerSubscriptionState,
    TaskSubmitted,
    TaskStarted,
    TaskSucceeded,
    TaskFailed,
    TaskCancelled,
    TaskRetried,
    UsageApiMetered,
    UsageReported,
    GatewayModeChanged,
    GatewayCapChanged,
    BudgetLevelCrossed,
    ProviderAuthFailed,
    LedgerBacklog,
    AlertRaised,
    BillingOfferGranted,
    RetentionExitSurvey,
    InvoicePaid,
    InvoicePaymentFailed,
    ChargeRefunded,
    ChargeDisputed,
    StripeFeeBooked,
    SubscriptionTrialWillEnd,
    SubscriptionCancelled,
    SubscriptionHistoryChanged,
    CustomerActive,
    LifecycleMessageSent,
    LifecycleMessageFailed,
    LifecycleUnsubscribed,
}

impl Payload for LimitHit {
    const KIND: Kind = Kind::PlanLimitHit;
}

impl From<LimitHit> for Typed {
    fn from(p: LimitHit) -> Typed {
        Typed::PlanLimitHit(p)
    }
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
    /// The payload in a typed shape of the caller's choosing.
    pub fn payload_as<T: for<'de> Deserialize<'de>>(&self) -> Result<T, Undecodable> {
        serde_json::from_value(without_v(&self.payload))
            .map_err(|e| Undecodable::BadPayload { kind: self.kind.as_str().to_string(), reason: e.to_string() })
    }

    /// The payload as its kind's struct.
    pub fn typed(&self) -> Result<Typed, Undecodable> {
        Typed::from_value(self.kind, without_v(&self.payload))
            .map_err(|e| Undecodable::BadPayload { kind: self.kind.as_str().to_string(), reason: e.to_string() })
    }
}

/// The payload without its `v`, which is the envelope's, not the struct's.
fn without_v(payload: &serde_json::Value) -> serde_json::Value {
    let mut p = payload.clone();
    if let Some(map) = p.as_object_mut() {
        map.remove("v");
    }
    p
}

/// Reads a stored kind and payload into its kind's struct.
pub fn decode_typed(kind: &str, payload: &serde_json::Value) -> Result<Typed, Undecodable> {
    decode(kind, payload)?.typed()
}

/// A typed payload as stored: its JSON with the kind's version under `v`.
pub fn stored(payload: &Typed) -> Result<serde_json::Value, serde_json::Error> {
    Ok(versioned(payload.kind(), &payload.to_value()?))
}

impl Payload for NpsAnswered {
    const KIND: Kind = Kind::SurveyNpsAnswered;
}

impl From<NpsAnswered> for Typed {
    fn from(p: NpsAnswered) -> Typed {
        Typed::SurveyNpsAnswered(p)
    }
}

impl Payload for TestimonialGiven {
    const KIND: Kind = Kind::SurveyTestimonialGiven;
}

impl From<TestimonialGiven> for Typed {
    fn from(p: TestimonialGiven) -> Typed {
        Typed::SurveyTestimonialGiven(p)
    }
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

    fn snapshot() -> SubscriptionChange {
        SubscriptionChange {
            subscription: "sub_1".into(),
            status: Some("active".into()),
            plan: Some("pro".into()),
            cancel_at_period_end: Some(false),
            current_period_end: Some(1_700_000_000),
            stripe_customer: Some("cus_s".into()),
        }
    }

    fn survey() -> SurveyDecided {
        SurveyDecided {
            survey: "srv_1".into(),
            reason: "too_expensive".into(),
            offer: Some(RetentionOffer::Pause { days: 30 }),
        }
    }

    fn checkout() -> CheckoutOutcome {
        CheckoutOutcome {
            session: Some("cs_1".into()),
            subscription: None,
            payment_status: Some("paid".into()),
            plan: Some("pro".into()),
            offer: None,
        }
    }

    fn given_up(status: &str) -> InvoiceGivenUp {
        InvoiceGivenUp {
            invoice: "in_1".into(),
            status: status.into(),
            amount_due: Some(4900),
            usage_reversed_cents: 12,
        }
    }

    /// A payload of every kind (the match is exhaustive: a new kind needs one here).
    fn sample(kind: Kind) -> Typed {
        use crate::money::Money;
        use crate::vocab::{Stage, UseCase, UserRole};
        let terms = ContractTerms {
            tasks_per_month: Some(900),
            calls_per_hour: None,
            monthly_price: Some(Money::from_micros(1_500_000_000)),
        };
        match kind {
            Kind::UserCreated => UserCreated { user_id: "usr_1".into(), role: UserRole::Owner }.into(),
            Kind::UserLoggedIn => UserLoggedIn { user_id: "usr_1".into() }.into(),
            Kind::CustomerCreated => CustomerCreated {
                id: "cus_1".into(),
                name: "Acme".into(),
                contact_email: Some("a@acme.test".into()),
                stage: Stage::Lead,
                use_case: Some(UseCase::Code),
                plan: None,
                chosen_teams: vec!["dev".into()],
                expected_monthly_tasks: Some(40),
                time_zone: "UTC".into(),
                created_at: 5,
                updated_at: 5,
                stage_changed_at: 5,
                contract: terms.clone(),
                stripe_customer_id: None,
                billing_status: None,
                billing_status_since: None,
                payment_method_on_file: false,
                disputed_since: None,
            }
            .into(),
            Kind::CustomerStageChanged => CustomerStageChanged { from: Stage::Trial, to: Stage::Active }.into(),
            Kind::CustomerContractChanged => {
                CustomerContractChanged { from: ContractTerms::default(), to: terms }.into()
            }
            Kind::CustomerPlanChanged => CustomerPlanChanged { from: None, to: "pro".into() }.into(),
            Kind::CustomerBudgetChanged => {
                CustomerBudgetChanged { monthly_budget: Some(Money::from_micros(49_000_000)) }.into()
            }
            Kind::CustomerBillingStatusChanged => {
                CustomerBillingStatusChanged { from: None, to: Some("past_due".into()) }.into()
            }
            Kind::CustomerPaymentMethodChanged => CustomerPaymentMethodChanged { on_file: true }.into(),
            Kind::CustomerAccessRestricted => {
                CustomerAccessRestricted { billing_status: "unpaid".into(), since: 7 }.into()
            }
            Kind::CustomerActive => CustomerActive { source: "task".into() }.into(),
            Kind::PlanLimitHit => LimitHit { limit: "hourly_cap".into(), detail: Some("60/h".into()) }.into(),
            Kind::CustomerSubscriptionState => CustomerSubscriptionState {
                plan: Some("pro".into()),
                stage: Some("active".into()),
                billing_status: None,
                at: 9,
                subscription_status: Some("active".into()),
                trial: None,
                period: None,
                period_budget_micros: None,
            }
            .into(),
            Kind::TaskSubmitted => {
                TaskSubmitted { task_id: "tsk_1".into(), team: "dev".into(), category: "code".into(), template: None }
                    .into()
            }
            Kind::TaskStarted => TaskStarted { task_id: "tsk_1".into(), attempt: 1, worker: "w1".into() }.into(),
            Kind::TaskSucceeded => TaskSucceeded {
                task_id: "tsk_1".into(),
                team: "dev".into(),
                steps: 3,
                cost_micros: 1_200,
                tier: Some("standard".into()),
                charge_micros: None,
            }
            .into(),
            Kind::TaskFailed => {
                TaskFailed { task_id: "tsk_1".into(), team: "dev".into(), error: "boom".into(), failures: 3 }.into()
            }
            Kind::TaskCancelled => TaskCancelled { task_id: "tsk_1".into(), by: "usr_1".into() }.into(),
            Kind::TaskRetried => TaskRetried { task_id: "tsk_1".into(), by: "usr_1".into() }.into(),
            Kind::UsageApiMetered => {
                UsageApiMetered { day: "2026-11-30".into(), cost_micros: 10, charge_micros: 15 }.into()
            }
            Kind::UsageReported => UsageReported {
                charge: "uch_1".into(),
                task: Some("tsk_1".into()),
                api_day: None,
                tier: "simple".into(),
                amount_cents: 50,
                invoice_item: Some("ii_1".into()),
            }
            .into(),
            Kind::GatewayModeChanged => GatewayModeChanged { mode: "economy".into(), reason: "budget".into() }.into(),
            Kind::GatewayCapChanged => GatewayCapChanged { scope: "global".into(), cap: Some(100) }.into(),
            Kind::BudgetLevelCrossed => BudgetLevelCrossed { level: 80, spent_micros: 8, budget_micros: 10 }.into(),
            Kind::ProviderAuthFailed => ProviderAuthFailed { provider: "sim".into() }.into(),
            Kind::LedgerBacklog => LedgerBacklog { unflushed: 12 }.into(),
            Kind::AlertRaised => {
                AlertRaised { alert: "alr_1".into(), kind: "budget_level".into(), message: "80% spent".into() }.into()
            }
            Kind::BillingOfferGranted => BillingOfferGranted {
                grant: "ofg_1".into(),
                offer: "win_back".into(),
                granted_by: "operator".into(),
                subscription: None,
                held_until: Some(99),
            }
            .into(),
            Kind::RetentionExitSurvey => RetentionExitSurvey {
                survey: "srv_1".into(),
                reason: "too_expensive".into(),
                offer: Some(RetentionOffer::Discount { offer: "win_back".into() }),
                subscription: Some("sub_1".into()),
            }
            .into(),
            Kind::RetentionOfferAccepted => Typed::RetentionOfferAccepted(survey()),
            Kind::RetentionCancelled => Typed::RetentionCancelled(survey()),
            Kind::CheckoutCompleted => Typed::CheckoutCompleted(checkout()),
            Kind::CheckoutPaymentSucceeded => Typed::CheckoutPaymentSucceeded(checkout()),
            Kind::CheckoutPaymentFailed => Typed::CheckoutPaymentFailed(checkout()),
            Kind::InvoicePaid => InvoicePaid {
                invoice: "in_1".into(),
                amount_cents: 4900,
                usage_cents: 0,
                plan: Some("pro".into()),
                subscription: Some("sub_1".into()),
            }
            .into(),
            Kind::InvoiceVoided => Typed::InvoiceVoided(given_up("void")),
            Kind::InvoiceMarkedUncollectible => Typed::InvoiceMarkedUncollectible(given_up("uncollectible")),
            Kind::InvoicePaymentFailed => InvoicePaymentFailed {
                invoice: Some("in_1".into()),
                subscription: Some("sub_1".into()),
                amount_due: Some(4900),
                attempt_count: Some(1),
                next_payment_attempt: None,
            }
            .into(),
            Kind::ChargeRefunded => {
                ChargeRefunded { charge: "ch_1".into(), amount_refunded: 100, invoice: None }.into()
            }
            Kind::StripeFeeBooked => StripeFeeBooked {
                balance_transaction: "txn_1".into(),
                charge: "ch_1".into(),
                fee_cents: 317,
                currency: "usd".into(),
            }
            .into(),
            Kind::ChargeDisputed => ChargeDisputed {
                dispute: "du_1".into(),
                charge: "ch_1".into(),
                status: "needs_response".into(),
                reason: "fraudulent".into(),
                amount_cents: 4900,
                currency: "usd".into(),
                evidence_due_by: Some(1_700_000_000_000_000),
                restricted: true,
            }
            .into(),
            Kind::SubscriptionCreated => Typed::SubscriptionCreated(snapshot()),
            Kind::SubscriptionUpdated => Typed::SubscriptionUpdated(snapshot()),
            Kind::SubscriptionDeleted => Typed::SubscriptionDeleted(snapshot()),
            Kind::SubscriptionPaused => Typed::SubscriptionPaused(snapshot()),
            Kind::SubscriptionResumed => Typed::SubscriptionResumed(snapshot()),
            Kind::SubscriptionTrialWillEnd => SubscriptionTrialWillEnd::Snapshot(snapshot()).into(),
            Kind::SubscriptionCancelled => SubscriptionCancelled {
                subscription: "sub_1".into(),
                source: "customer_portal".into(),
                at_period_end: true,
            }
            .into(),
            Kind::SubscriptionHistoryChanged => SubscriptionHistoryChanged {
                subscription: Some("sub_1".into()),
                customer: Some("cus_1".into()),
                stripe_customer: "cus_S1".into(),
            }
            .into(),
            Kind::TodoOpened => {
                Typed::TodoOpened(TodoChanged { todo: "todo_1".into(), reason: "call them".into(), by: None })
            }
            Kind::TodoDone => Typed::TodoDone(TodoChanged {
                todo: "todo_1".into(),
                reason: "call them".into(),
                by: Some("op@example.com".into()),
            }),
            Kind::SurveyNpsAnswered => {
                NpsAnswered { survey: "srv_1".into(), score: 9, comment: Some("great".into()) }.into()
            }
            Kind::SurveyTestimonialGiven => {
                TestimonialGiven { survey: "srv_1".into(), consent_to_publish: true }.into()
            }
            Kind::LifecycleMessageSent => LifecycleMessageSent {
                message: "msg_1".into(),
                template: "welcome".into(),
                category: "onboarding".into(),
                source: "enr_1".into(),
            }
            .into(),
            Kind::LifecycleMessageFailed => LifecycleMessageFailed {
                message: "msg_1".into(),
                template: "welcome".into(),
                state: "unknown".into(),
                error: "connection lost".into(),
            }
            .into(),
            Kind::LifecycleUnsubscribed => LifecycleUnsubscribed { category: "marketing".into() }.into(),
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_stored_json() {
        for kind in Kind::ALL {
            let payload = sample(*kind);
            assert_eq!(payload.kind(), *kind);
            let stored = stored(&payload).unwrap();
            assert_eq!(stored["v"], serde_json::json!(kind.version()), "{kind}: {stored}");
            let back = decode_typed(kind.as_str(), &stored).unwrap();
            assert_eq!(back, payload, "{kind}");
        }
    }

    #[test]
    fn every_kind_reads_a_row_written_before_versioning() {
        for kind in Kind::ALL {
            let payload = sample(*kind);
            let old = payload.to_value().unwrap();
            assert!(old.get("v").is_none());
            assert_eq!(decode_typed(kind.as_str(), &old).unwrap(), payload, "{kind}");
        }
    }

    #[test]
    fn stored_field_names_stay_what_old_rows_and_the_admin_page_read() {
        let task = stored(&sample(Kind::TaskSucceeded)).unwrap();
        assert_eq!(
            task,
            serde_json::json!({"v": 1, "task_id": "tsk_1", "team": "dev", "steps": 3, "cost_micros": 1_200,
                               "tier": "standard", "charge_micros": null})
        );
        let budget = stored(&sample(Kind::CustomerBudgetChanged)).unwrap();
        assert_eq!(budget, serde_json::json!({"v": 1, "monthly_budget": "49.00"}));
        let survey = stored(&sample(Kind::RetentionCancelled)).unwrap();
        assert_eq!(
            survey,
            serde_json::json!({"v": 1, "survey": "srv_1", "reason": "too_expensive",
                               "offer": {"kind": "pause", "days": 30}})
        );
        let notice = Typed::from(SubscriptionTrialWillEnd::Notice(TrialNotice {
            subscription: "sub_1".into(),
            trial_end: Some(1_700_000_000),
        }));
        let stored_notice = stored(&notice).unwrap();
        assert_eq!(stored_notice, serde_json::json!({"v": 1, "subscription": "sub_1", "trial_end": 1_700_000_000}));
        assert_eq!(decode_typed("subscription.trial_will_end", &stored_notice).unwrap(), notice);
    }

    #[test]
    fn old_rows_with_fewer_fields_still_decode() {
        // A snapshot row missing what later builds added, and a task row without tier or charge.
        let sub =
            decode_typed("subscription.updated", &serde_json::json!({"subscription": "sub_9", "status": "active"}))
                .unwrap();
        assert!(matches!(sub, Typed::SubscriptionUpdated(ref s) if s.subscription == "sub_9" && s.plan.is_none()));
        let task = decode_typed(
            "task.succeeded",
            &serde_json::json!({"task_id": "t", "team": "dev", "steps": 1, "cost_micros": 5}),
        )
        .unwrap();
        assert!(matches!(task, Typed::TaskSucceeded(ref t) if t.tier.is_none() && t.charge_micros.is_none()));
        let state = decode_typed(
            "customer.subscription_state",
            &serde_json::json!({"plan": "pro", "stage": null,
            "billing_status": null, "at": 3}),
        )
        .unwrap();
        assert!(matches!(state, Typed::CustomerSubscriptionState(ref s) if s.subscription_status.is_none()));
        // Shapes older builds wrote: a limit hit with `message`, an invoice without `usage_cents`.
        let hit =
            decode_typed("plan.limit_hit", &serde_json::json!({"limit": "tasks_per_month", "message": "100/100"}))
                .unwrap();
        assert_eq!(
            hit,
            Typed::PlanLimitHit(LimitHit { limit: "tasks_per_month".into(), detail: Some("100/100".into()) })
        );
        let paid = decode_typed(
            "invoice.paid",
            &serde_json::json!({"invoice": "in_1", "amount_cents": 4900, "plan": "pro", "subscription": "sub_1"}),
        )
        .unwrap();
        assert!(matches!(paid, Typed::InvoicePaid(ref p) if p.usage_cents == 0 && p.amount_cents == 4900));
    }

    #[test]
    fn a_payload_of_the_wrong_shape_or_an_unknown_kind_is_undecodable_not_a_panic() {
        assert!(matches!(decode_typed("nope.kind", &serde_json::json!({})), Err(Undecodable::UnknownKind(_))));
        assert!(matches!(
            decode_typed("task.started", &serde_json::json!({"task_id": 5})),
            Err(Undecodable::BadPayload { .. })
        ));
        // Kinds written from a struct since their first day refuse unknown fields.
        assert!(decode_typed("customer.active", &serde_json::json!({"source": "task", "extra": 1})).is_err());
    }

    #[test]
    fn versioned_adds_v_and_keeps_fields() {
        let p = versioned(Kind::CustomerActive, &serde_json::json!({"source": "task"}));
        assert_eq!(p, serde_json::json!({"source": "task", "v": 1}));
    }
}
