//! The gateway: route, admit (caps and budget), call with retries and fallbacks,
//! settle the budget and write the ledger — one path for API calls and task calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use j1msky_accounts::access;
use j1msky_accounts::activity;
use j1msky_core::catalogue::{Catalogue, LiveCatalogue, ModelOutsidePlan};
use j1msky_core::{Clock, Money};
use j1msky_db::invalidation::Topic;
use j1msky_db::Db;
use rand::Rng;

use crate::breaker::Breakers;
use crate::chat::{ChatRequest, ChatResponse, Usage};
use crate::controls::{ControlCache, Controls};
use crate::inprocess::InProcess;
use crate::leases::Leases;
use crate::ledger::{self, Attempt};
use crate::limits::{self, Budget, Cap, Reservation};
use crate::policy::{self, Route};
use crate::providers::{ProviderSet, Timeouts, UpstreamError};
use crate::roundtrip::Settlement;
use crate::settler::Settler;
use crate::{escalation, GatewayError};
use j1msky_core::windows;

/// Retry and back-off settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Extra attempts on the same model after a retryable failure.
    pub retries_per_model: u32,
    /// First back-off; doubles each retry, with ±50 % jitter.
    pub base_backoff: Duration,
    /// Longest `Retry-After` honoured by waiting (longer: fall back or fail).
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries_per_model: 2,
            base_backoff: Duration::from_millis(250),
            max_wait: Duration::from_secs(10),
        }
    }
}

/// How to reach a provider other than the catalogue says (the simulated provider in the
/// demo and tests, a proxy in production).
#[derive(Debug, Clone)]
pub struct ProviderOverride {
    pub base_url: String,
    pub api_key: String,
}

impl ProviderOverride {
    /// Every provider of `catalogue` sent to one server that speaks both wire formats
    /// (the simulated provider): OpenAI-kind providers to `openai_base` (`…/v1`),
    /// Anthropic-kind ones to `anthropic_base`.
    pub fn all_to(
        catalogue: &Catalogue,
        openai_base: &str,
        anthropic_base: &str,
        api_key: &str,
    ) -> HashMap<String, ProviderOverride> {
        catalogue
            .providers
            .iter()
            .map(|(id, p)| {
                let base_url = match p.kind {
                    j1msky_core::catalogue::ProviderKind::Openai => openai_base,
                    j1msky_core::catalogue::ProviderKind::Anthropic => anthropic_base,
                };
                (id.clone(), ProviderOverride { base_url: base_url.to_string(), api_key: api_key.to_string() })
            })
            .collect()
    }
}

/// Who is calling and for what.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub request_id: String,
    pub customer_id: Option<String>,
    pub category: String,
    pub task_id: Option<String>,
    pub team: Option<String>,
    pub role: Option<String>,
}

/// A completed call.
#[derive(Debug, Clone)]
pub struct Completed {
    pub response: ChatResponse,
    /// Catalogue id of the model that answered.
    pub model: String,
    /// Catalogue id of the model asked for (the category's model for `auto`).
    pub requested: String,
    pub cost: Money,
    pub attempts: Vec<Attempt>,
}

/// The model gateway.
pub struct Gateway {
    pub db: Db,
    pub catalogue: LiveCatalogue,
    pub clock: Arc<dyn Clock>,
    /// Follows the catalogue version in force (endpoints, key variables).
    providers: ProviderSet,
    pub(crate) breakers: Breakers,
    pub(crate) controls: ControlCache,
    retry: RetryPolicy,
    /// Caps and budgets in memory (embedded SQLite) instead of in the database.
    pub(crate) in_process: Option<Arc<InProcess>>,
    terms: TermsCache,
    /// Alerts known to be recorded already, so a crossed level is not re-inserted on
    /// every call.
    pub(crate) raised: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Names this gateway's reservations in the database (one per process).
    owner: String,
    /// Group commit of settlements when limits are shared on PostgreSQL (started on first use).
    settler: std::sync::OnceLock<Arc<Settler>>,
    /// This process's slices of the shared caps and day budget (PostgreSQL, [`crate::leases`]).
    leases: Option<Arc<Leases>>,
    /// How long a settlement batch may wait for short calls on their way ([`crate::settler`]).
    settle_linger: std::time::Duration,
}

impl Gateway {
    /// Builds provider clients from the catalogue; keys come from the environment
    /// variables it names unless an override gives one. Callers use [`Gateway::builder`].
    pub(crate) fn new(
        db: Db,
        catalogue: LiveCatalogue,
        clock: Arc<dyn Clock>,
        overrides: &HashMap<String, ProviderOverride>,
        timeouts: Timeouts,
        retry: RetryPolicy,
    ) -> Gateway {
        let providers = ProviderSet::new(&catalogue, overrides, timeouts);
        let owner = format!("{}-{}", std::process::id(), j1msky_core::ids::new_id("gw"));
        let leases = (db.backend() == j1msky_db::Backend::Postgres).then(|| Arc::new(Leases::new(&owner)));
        Gateway {
            db,
            catalogue,
            clock,
            providers,
            breakers: Breakers::default(),
            controls: ControlCache::default(),
            retry,
            in_process: None,
            terms: TermsCache::default(),
            raised: Default::default(),
            owner,
            settler: std::sync::OnceLock::new(),
            leases,
            settle_linger: crate::settler::LINGER,
        }
    }

    /// Holds caps and budgets in this process's memory and persists them, with the
    /// ledger, by group commit ([`crate::inprocess`]): the embedded default. Fails when
    /// another process already holds this database's limits.
    pub fn in_process_limits(self) -> Result<Gateway, GatewayError> {
        self.in_process_limits_bounded(crate::inprocess::MAX_UNFLUSHED)
    }

    /// As [`Gateway::in_process_limits`], refusing calls while more than `max_unflushed`
    /// ledger rows wait for the database.
    pub fn in_process_limits_bounded(mut self, max_unflushed: usize) -> Result<Gateway, GatewayError> {
        self.in_process = Some(InProcess::open_bounded(&self.db, max_unflushed)?);
        Ok(self)
    }

    /// Settlement batches on PostgreSQL wait up to `linger` for short calls still on their
    /// way (default [`crate::settler::LINGER`]; zero: a batch goes at once, for comparison).
    pub fn settlement_linger(mut self, linger: std::time::Duration) -> Gateway {
        self.settle_linger = linger;
        self
    }

    /// Admits every call's shared caps and day budget in the database one by one instead
    /// of from slices held by this process (the path before slices; for comparison).
    pub fn without_leases(mut self) -> Gateway {
        self.leases = None;
        self
    }

    /// Renews this process's own reservation leases, then releases the database
    /// reservations of processes that died (their leases ran out); nothing to do when
    /// limits are held in memory. Returns how many were released.
    pub async fn release_expired_reservations(&self) -> Result<u64, GatewayError> {
        if self.in_process.is_some() {
            return Ok(0);
        }
        let now = self.clock.now_micros();
        limits::renew(&self.db, &self.owner, now).await?;
        if let Some(leases) = &self.leases {
            leases.renew(&self.db, now).await?;
            leases.give_back_idle(&self.db, now, false).await?;
        }
        Ok(limits::release_expired(&self.db, now).await?)
    }

    /// Until `stop`: each time the database announces a change to customers (a lowered
    /// budget or cap, a suspension, made by any process), gives back what this process's
    /// slices of customers' own limits hold unused, so the shared rows count only calls in
    /// flight and the next busy calls take slices under the new terms. Started by the
    /// runtime beside the sweeper; returns at once without slices.
    pub async fn follow_customer_changes(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(leases) = &self.leases else {
            let _ = stop.wait_for(|s| *s).await;
            return;
        };
        let invalidations = self.db.invalidations();
        let mut seen = invalidations.generation(Topic::Customers);
        while !*stop.borrow() {
            let changed = invalidations.changed();
            let now = invalidations.generation(Topic::Customers);
            if now != seen {
                seen = now;
                if let Err(e) = leases.give_back_customers(&self.db).await {
                    tracing::error!(error = %e, "cannot give back the customers' slices after a change");
                }
                continue;
            }
            tokio::select! {
                _ = changed => {}
                gone = stop.changed() => if gone.is_err() {
                    return;
                },
            }
        }
    }

    /// The limits a deployment on this database should use: in memory for SQLite (one
    /// process), in the database for PostgreSQL (any number of processes).
    pub fn default_limits(self) -> Result<Gateway, GatewayError> {
        match self.db.backend() {
            j1msky_db::Backend::Sqlite => self.in_process_limits(),
            j1msky_db::Backend::Postgres => Ok(self),
        }
    }

    /// Whether caps and budgets are held in this process's memory.
    pub fn limits_in_process(&self) -> bool {
        self.in_process.is_some()
    }

    /// What is reserved in a budget window, when limits are held in memory.
    pub fn reserved_in_process(&self, scope: &str, window_start: i64) -> Option<Money> {
        self.in_process.as_ref().and_then(|ip| ip.reserved(scope, window_start))
    }

    /// Everything reserved by calls in flight and not yet settled, in every budget (with
    /// shared limits, less the unused part of this process's own slices; other processes'
    /// slices count as reserved; what was spent from slices is spent, not reserved).
    pub async fn reserved_now(&self) -> Result<Money, GatewayError> {
        if let Some(ip) = &self.in_process {
            return Ok(ip.reserved_total());
        }
        let (n,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE((SELECT SUM(reserved_micros) FROM budget_windows), 0)
                       - COALESCE((SELECT SUM(spent) FROM limit_leases WHERE kind = 'budget'), 0) AS BIGINT)",
        )
        .fetch_one(self.db.pool())
        .await?;
        let unused = match &self.leases {
            Some(leases) => leases.unused_budget().await,
            None => 0,
        };
        Ok(Money::from_micros(n - unused))
    }

    /// Waits until every ledger row and usage count of calls finished so far is in the
    /// database (immediate with shared limits), and gives back what this process's slices
    /// of shared limits hold unused.
    pub async fn flush(&self) {
        if let Some(ip) = &self.in_process {
            ip.flush().await;
        }
        if let Some(leases) = &self.leases {
            if let Err(e) = leases.give_back_idle(&self.db, self.clock.now_micros(), true).await {
                tracing::error!(error = %e, "cannot give back the unused slices of shared limits");
            }
        }
    }

    /// Forgets the cached plan and budget of a customer after a change made through
    /// this process (other processes see it within [`TERMS_TTL`]).
    pub fn customer_changed(&self, customer_id: &str) {
        self.terms.forget(customer_id);
    }

    /// The controls in force now.
    pub async fn controls(&self) -> Result<Controls, GatewayError> {
        Ok(self.controls.get(&self.db, self.clock.now_micros()).await?)
    }

    /// Whether `provider`'s circuit is open now (for the admin page).
    pub fn breakers_open(&self, provider: &str, now: i64) -> bool {
        self.breakers.is_open(provider, now)
    }

    /// Forgets cached controls after a change made through this process.
    pub fn controls_changed(&self) {
        self.controls.invalidate();
    }

    fn tz(&self) -> chrono_tz::Tz {
        self.catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// What admission would let `customer_id` use now (its plan in force, the pause plan
    /// while paused, or pay-per-task), read through the same short cache as every call;
    /// None when it would refuse the customer.
    pub async fn admitted(&self, customer_id: &str) -> Result<Option<access::Admitted>, GatewayError> {
        let (standing, ..) = self.terms.get(&self.db, customer_id).await?;
        Ok(access::admit(&self.catalogue, &standing, self.clock.now_micros()).ok())
    }

    /// Routes and admits a call: caps counted and budget reserved, or an error.
    pub async fn admit(
        &self,
        ctx: &CallContext,
        model: Option<&str>,
        req: &ChatRequest,
    ) -> Result<(Route, Reservation), GatewayError> {
        if req.turns.is_empty() {
            return Err(GatewayError::Invalid("at least one message is required".into()));
        }
        let now = self.clock.now_micros();
        let controls = self.controls().await?;
        let mut trial = None;
        let mut granted_trial = false;
        // The customer's budget windows (`limits::customer_budgets`, the customer's view of
        // its budget included): the operator's budget for it, else its plan's (the plan in
        // force).
        let mut budget_terms = None;
        let (plan, contract_calls) = match &ctx.customer_id {
            Some(id) => {
                let (standing, budget, calls, window, period) = self.terms.get(&self.db, id).await?;
                let admitted = access::admit(&self.catalogue, &standing, now)?;
                trial = window.filter(|_| standing.stage == Some(j1msky_core::vocab::Stage::Trial));
                granted_trial = standing.trial.is_some();
                budget_terms =
                    Some(limits::CustomerBudget::of(&self.catalogue, id, &standing, budget, admitted.plan(), period));
                (admitted.plan().map(str::to_string), calls)
            }
            None => (None, None),
        };
        let plan_entry = plan.as_deref().and_then(|p| self.catalogue.plans.get(p));
        let allowed = plan_entry.and_then(|p| p.models.as_deref());
        // A task's model is the team's choice, not the customer's: it always reroutes
        // within the plan. Only a model a caller names on the API can be refused.
        let outside = match (&ctx.task_id, plan_entry) {
            (None, Some(p)) => p.model_outside_plan,
            _ => ModelOutsidePlan::Reroute,
        };
        let route = match policy::route(&self.catalogue, model, &ctx.category, controls.mode, allowed, outside) {
            Ok(r) => r,
            Err(e) => {
                if let (Some(id), policy::RouteError::OutsidePlan { .. } | policy::RouteError::NotAllowed) =
                    (&ctx.customer_id, &e)
                {
                    activity::limit_hit(&self.db, id, "model_not_in_plan", &e.to_string(), now).await;
                }
                return Err(e.into());
            }
        };
        let first = &route.chain[0];
        let provider = self.catalogue.models.get(first).map(|m| m.provider.clone()).unwrap_or_default();
        let cap_of = |scope: &str, default: Option<i64>| controls.caps.get(scope).copied().or(default);
        let mut caps = Vec::new();
        let mut add_cap = |scope: String, default: Option<i64>| {
            if let Some(cap) = cap_of(&scope, default) {
                caps.push(Cap { scope, cap });
            }
        };
        add_cap("global".into(), Some(i64::from(self.catalogue.routing.hourly_request_cap)));
        let provider_cap = self.catalogue.providers.get(&provider).map(|p| i64::from(p.requests_per_hour));
        add_cap(format!("provider:{provider}"), provider_cap);
        add_cap(format!("model:{first}"), None);
        if let Some(id) = &ctx.customer_id {
            let contract = contract_calls.filter(|_| plan_entry.is_some_and(|p| p.custom_limits));
            // Without a plan (pay-per-task): the catalogue's cap for such customers.
            let per_plan = plan_entry.map_or(self.catalogue.pay_per_task_calls_per_hour, |p| p.api_calls_per_hour);
            add_cap(format!("customer:{id}"), contract.or(Some(i64::from(per_plan))));
        }
        let tz = self.tz();
        let (day_start, day_end) = windows::day(tz, now);
        let daily_cap = controls.daily_budget(&self.catalogue);
        let mut budgets = vec![Budget {
            scope: crate::admission::BUSINESS_DAY.into(),
            window_start: day_start,
            window_end: day_end,
            cap: daily_cap,
        }];
        if let Some(terms) = &budget_terms {
            budgets.extend(limits::customer_budgets(&self.catalogue, tz, terms, now));
        }
        // One customer's share of the business's day, so it cannot take the day from every
        // other (a contract customer is held to its contract instead).
        if let (Some(id), Some(cap)) =
            (&ctx.customer_id, limits::customer_day_cap(&self.catalogue, plan_entry, daily_cap))
        {
            budgets.push(Budget {
                scope: limits::customer_day_scope(id),
                window_start: day_start,
                window_end: day_end,
                cap,
            });
        }
        // A trial's calls share one budget over the trial: a granted trial's direct calls
        // (its tasks are held to its included tasks by the task queue instead), and every
        // call of a trial started at Checkout, which includes no count of tasks.
        let held = ctx.task_id.is_none() || !granted_trial;
        if let (Some(id), Some(dates), Some(plan), true) = (&ctx.customer_id, trial, plan.as_deref(), held) {
            budgets.extend(limits::customer_trial_budget(&self.catalogue, id, plan, dates));
        }
        let input = req.most_input_tokens();
        let amount = route
            .chain
            .iter()
            .map(|m| policy::max_cost(&self.catalogue, m, input, req.max_tokens))
            .max()
            .unwrap_or(Money::ZERO);
        let admitted = match &self.in_process {
            Some(ip) => ip.admit(&self.db, &caps, &budgets, amount, now).await,
            None => {
                let leases = self.leases.as_deref();
                limits::admit_leased(&self.db, leases, &caps, &budgets, amount, now, &self.owner).await
            }
        };
        if let Err(limits::LimitError::Backlog { unflushed }) = &admitted {
            escalation::ledger_backlog(self, *unflushed).await;
        }
        if let (Some(id), Err(e)) = (&ctx.customer_id, &admitted) {
            // Only the customer's own plan limits are playbook news; the business's
            // caps and budget are the operator's.
            let limit = match e {
                limits::LimitError::Cap { scope, .. } if *scope == format!("customer:{id}") => Some("hourly_cap"),
                limits::LimitError::Budget { scope, .. }
                    if *scope == limits::customer_month_scope(id) || *scope == limits::customer_period_scope(id) =>
                {
                    Some("monthly_budget")
                }
                limits::LimitError::Budget { scope, .. } if *scope == limits::customer_trial_scope(id) => {
                    Some("trial_budget")
                }
                limits::LimitError::Budget { scope, .. } if *scope == limits::customer_day_scope(id) => {
                    Some("daily_share")
                }
                _ => None,
            };
            if let Some(limit) = limit {
                activity::limit_hit(&self.db, id, limit, &e.to_string(), now).await;
            }
        }
        let reservation = admitted?;
        Ok((route, reservation))
    }

    /// A non-streaming call, end to end.
    pub async fn complete(
        &self,
        ctx: &CallContext,
        model: Option<&str>,
        req: &ChatRequest,
    ) -> Result<Completed, GatewayError> {
        let _expected = self.expect_settlement();
        let (route, reservation) = self.admit(ctx, model, req).await?;
        let (answer, model_id, mut attempts) = self.call_chain(ctx, &route, &reservation, req, Kind::Complete).await?;
        let Answer::Complete(response) = answer else {
            return Err(GatewayError::Invalid("internal: a stream answered a non-streaming call".into()));
        };
        if let Some(last) = attempts.last_mut() {
            last.input_tokens = response.usage.input_tokens as i64;
            last.output_tokens = response.usage.output_tokens as i64;
            last.cost =
                policy::cost(&self.catalogue, &model_id, response.usage.input_tokens, response.usage.output_tokens);
        }
        let cost = self.settle(&reservation, &attempts).await?;
        Ok(Completed { response, model: model_id, requested: route.requested, cost, attempts })
    }

    /// Tries the route's models in order, with retries, back-off, the circuit breaker and
    /// fallbacks. On success returns the answer, the model that gave it and every attempt
    /// (the last one successful, not yet priced); on failure settles the reservation for
    /// the failed attempts and returns the last error.
    pub(crate) async fn call_chain(
        &self,
        ctx: &CallContext,
        route: &Route,
        reservation: &Reservation,
        req: &ChatRequest,
        kind: Kind,
    ) -> Result<(Answer, String, Vec<Attempt>), GatewayError> {
        let mut attempts = Vec::new();
        let mut reason = route.reason.clone();
        let mut last_error = None;
        'models: for model_id in &route.chain {
            let Some(model) = self.catalogue.models.get(model_id) else { continue };
            let Some(client) = self.providers.get(&self.catalogue, &model.provider) else { continue };
            if !self.breakers.allow(&model.provider, self.clock.now_micros()) {
                reason = Some(format!("{} circuit open", model.provider));
                last_error = Some(UpstreamError::Overloaded { status: 503 });
                continue;
            }
            let mut tries = 0;
            loop {
                let started = std::time::Instant::now();
                let result = match kind {
                    Kind::Complete => client.complete(&model.upstream, req).await.map(Answer::Complete),
                    Kind::Stream => client.stream(&model.upstream, req).await.map(Answer::Stream),
                };
                let latency = started.elapsed().as_micros() as i64;
                let at = self.clock.now_micros();
                let mut attempt =
                    self.attempt(ctx, route, model_id, &model.provider, attempts.len(), reason.clone(), latency, at);
                match result {
                    Ok(answer) => {
                        self.breakers.success(&model.provider);
                        attempts.push(attempt);
                        return Ok((answer, model_id.clone(), attempts));
                    }
                    Err(e) => {
                        attempt.outcome = e.outcome().to_string();
                        if matches!(e, UpstreamError::Timeout) {
                            // No answer in time, but the provider may have generated (and
                            // bill) one: booked at the most it could cost on this model, so
                            // budgets and margins see a call made to run out the clock;
                            // never more than the call reserved, less what a fallback may
                            // still cost (the settlement stays within the reservation).
                            let input = req.most_input_tokens();
                            let most = |m: &str| policy::max_cost(&self.catalogue, m, input, req.max_tokens).micros();
                            let booked: i64 = attempts.iter().map(|a| a.cost.micros()).sum();
                            let later = route.chain.iter().skip_while(|m| *m != model_id).skip(1);
                            let fallback = later.map(|m| most(m)).max().unwrap_or(0);
                            let room = (reservation.amount.micros() - booked - fallback).max(0);
                            attempt.cost = Money::from_micros(most(model_id).min(room));
                        }
                        attempts.push(attempt);
                        // A provider throttling us is alive: its 429s wait or fall back, but
                        // never open its circuit.
                        if e.is_retryable()
                            && !matches!(e, UpstreamError::RateLimited { .. })
                            && self.breakers.failure(&model.provider, at)
                        {
                            escalation::circuit_opened(self, &model.provider).await;
                        }
                        if matches!(e, UpstreamError::Auth { .. }) {
                            escalation::provider_auth_failed(self, &model.provider).await;
                        }
                        let has_fallback = Some(model_id) != route.chain.last();
                        let step = if e.is_retryable() && self.breakers.is_open(&model.provider, at) {
                            // This failure opened the circuit: stop hammering the provider.
                            if has_fallback {
                                Step::Fallback
                            } else {
                                Step::Fail
                            }
                        } else {
                            self.next_step(&e, tries, has_fallback)
                        };
                        match step {
                            Step::Fail => {
                                self.settle(reservation, &attempts).await?;
                                return Err(GatewayError::Upstream(e));
                            }
                            Step::Wait(d) => {
                                tries += 1;
                                tokio::time::sleep(d).await;
                            }
                            Step::Fallback => {
                                reason = Some(e.outcome().to_string());
                                last_error = Some(e);
                                continue 'models;
                            }
                        }
                    }
                }
            }
        }
        self.settle(reservation, &attempts).await?;
        Err(GatewayError::Upstream(last_error.unwrap_or(UpstreamError::Overloaded { status: 503 })))
    }

    pub(crate) fn next_step(&self, e: &UpstreamError, tries: u32, has_fallback: bool) -> Step {
        if !e.is_retryable() {
            return Step::Fail;
        }
        if let UpstreamError::RateLimited { retry_after_secs } = e {
            if has_fallback {
                return Step::Fallback;
            }
            let wait = Duration::from_secs(retry_after_secs.unwrap_or(1));
            return if tries < self.retry.retries_per_model && wait <= self.retry.max_wait {
                Step::Wait(wait)
            } else {
                Step::Fail
            };
        }
        if matches!(e, UpstreamError::Timeout) {
            // No answer within the request timeout: the same request on the same model
            // would most likely run the clock out again, keeping the caller waiting a
            // whole timeout per try while the provider may bill each one (a request made
            // to run long would otherwise cost the business one unanswered generation per
            // retry, none of them priced). The next model gets one try; without one the
            // caller hears at once.
            return if has_fallback { Step::Fallback } else { Step::Fail };
        }
        if tries < self.retry.retries_per_model {
            let base = self.retry.base_backoff.as_micros() as u64 * (1u64 << tries.min(10));
            let jittered = rand::thread_rng().gen_range(base / 2..=base + base / 2);
            Step::Wait(Duration::from_micros(jittered))
        } else if has_fallback {
            Step::Fallback
        } else {
            Step::Fail
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attempt(
        &self,
        ctx: &CallContext,
        route: &Route,
        model_id: &str,
        provider: &str,
        index: usize,
        reason: Option<String>,
        latency: i64,
        at: i64,
    ) -> Attempt {
        Attempt {
            request_id: ctx.request_id.clone(),
            attempt: index as i64 + 1,
            customer_id: ctx.customer_id.clone(),
            task_id: ctx.task_id.clone(),
            team: ctx.team.clone(),
            role: ctx.role.clone(),
            category: Some(ctx.category.clone()),
            provider: provider.to_string(),
            model_requested: route.requested.clone(),
            model_used: model_id.to_string(),
            input_tokens: 0,
            output_tokens: 0,
            cost: Money::ZERO,
            latency_micros: latency,
            outcome: "ok".into(),
            fallback_reason: if model_id == route.requested { None } else { reason },
            created_at: at,
        }
    }

    /// The settlement writer (PostgreSQL), started on first use.
    fn settler(&self) -> &Arc<Settler> {
        self.settler.get_or_init(|| Settler::start(self.db.clone(), self.leases.clone(), self.settle_linger))
    }

    /// Tells the settlement writer (PostgreSQL) that a call is on its way, so that a batch
    /// may wait a little for it ([`crate::settler`]).
    fn expect_settlement(&self) -> Option<crate::settler::Expected> {
        (self.in_process.is_none() && self.db.backend() == j1msky_db::Backend::Postgres)
            .then(|| self.settler().expect())
    }

    /// Releases the reservation, books the actual cost and the ledger rows in one
    /// transaction, then applies budget escalation.
    pub(crate) async fn settle(&self, reservation: &Reservation, attempts: &[Attempt]) -> Result<Money, GatewayError> {
        let total = attempts.iter().fold(Money::ZERO, |acc, a| acc.checked_add(a.cost).unwrap_or(acc));
        let mut day_spent = None;
        if let Some(ip) = &self.in_process {
            ip.settle(reservation, total, attempts);
        } else if self.db.backend() == j1msky_db::Backend::Postgres {
            let settler = self.settler();
            let job = Settlement { reservation: reservation.clone(), actual: total, attempts: attempts.to_vec() };
            let (day, _) = windows::day(self.tz(), self.clock.now_micros());
            day_spent = settler
                .settle(job)
                .await?
                .filter(|(scope, window, _)| scope == crate::admission::BUSINESS_DAY && *window == day)
                .map(|(_, _, spent)| Money::from_micros(spent));
        } else {
            let mut tx = self.db.begin().await?;
            // The ledger first: the budget rows every call shares are locked last, just
            // before the commit.
            ledger::record(&mut tx, attempts).await?;
            limits::settle(&mut tx, reservation, total).await?;
            tx.commit().await?;
        }
        if total.micros() > 0 {
            escalation::after_spend_at(self, day_spent).await?;
        }
        Ok(total)
    }

    /// Settles a stream that ended (or broke) with `usage` on `model_id`.
    pub(crate) async fn settle_stream(
        &self,
        reservation: Reservation,
        mut attempts: Vec<Attempt>,
        model_id: &str,
        usage: Usage,
        outcome: &str,
    ) -> Result<Money, GatewayError> {
        if let Some(last) = attempts.last_mut() {
            last.input_tokens = usage.input_tokens as i64;
            last.output_tokens = usage.output_tokens as i64;
            last.cost = policy::cost(&self.catalogue, model_id, usage.input_tokens, usage.output_tokens);
            last.outcome = outcome.to_string();
            // Dated when its cost is known, as a whole answer is dated when it came back:
            // a stream still running when its day was metered (pay-per-task API days)
            // would otherwise land in a day already charged, and never be billed.
            last.created_at = self.clock.now_micros();
        }
        self.settle(&reservation, &attempts).await
    }
}

/// Which kind of upstream call to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Complete,
    Stream,
}

/// What an upstream call gave.
pub(crate) enum Answer {
    Complete(ChatResponse),
    Stream(crate::providers::EventStream),
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Wait(Duration),
    Fallback,
    Fail,
}

/// How long a process trusts its copy of a customer's plan and budget.
pub const TERMS_TTL: Duration = Duration::from_secs(1);

/// Customers' standing, plans and monthly budgets, read through a short cache: the hot
/// path would otherwise query them on every call.
#[derive(Default)]
/// On PostgreSQL a change to a customer made by any process is announced and drops the
/// entries at once ([`j1msky_db::invalidation`]); [`TERMS_TTL`] bounds the rest.
struct TermsCache {
    entries: std::sync::Mutex<HashMap<String, TermsEntry>>,
}

/// When it was read, the customers' generation then, and the terms.
type TermsEntry = (std::time::Instant, u64, crate::terms::Terms);

impl TermsCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TermsEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn get(&self, db: &Db, id: &str) -> Result<crate::terms::Terms, GatewayError> {
        let generation = db.invalidations().generation(Topic::Customers);
        if let Some((at, seen, terms)) = self.lock().get(id) {
            if at.elapsed() < TERMS_TTL && *seen == generation {
                return Ok(terms.clone());
            }
        }
        let terms = crate::terms::read_terms(db, id).await?;
        let mut entries = self.lock();
        if entries.len() > 100_000 {
            entries.clear();
        }
        entries.insert(id.to_string(), (std::time::Instant::now(), generation, terms.clone()));
        Ok(terms)
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }
}
