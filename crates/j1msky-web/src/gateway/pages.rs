//! `/admin/gateway`: the cost mode, the rate-limit panel (usage against cap for every
//! scope, edited in place), today's budget, provider circuits and recent alerts; and the
//! mode banner every admin page carries.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use j1msky_audit::Actor;
use j1msky_gateway::controls::{self, Controls};
use j1msky_gateway::panel;
use j1msky_gateway::policy::Mode;
use minijinja::context;
use serde::Deserialize;

use crate::auth::OperatorUser;
use crate::error::ApiError;
use crate::render::page_with_status;
use crate::state::AppState;

async fn current(state: &AppState) -> Result<Controls, String> {
    match state.gateway.as_ref() {
        Some(gw) => gw.controls().await.map_err(|e| e.to_string()),
        None => controls::load(&state.db).await.map_err(|e| e.to_string()),
    }
}

/// Middleware: loads the controls (cached by the gateway) for `/admin` pages.
pub async fn with_controls(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/admin") {
        return next.run(req).await;
    }
    match current(&state).await {
        Ok(c) => crate::cost_banner::CONTROLS.scope(c, next.run(req)).await,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the gateway controls for the banner");
            next.run(req).await
        }
    }
}

/// `GET /admin/gateway`.
pub async fn page(State(state): State<AppState>, OperatorUser(s): OperatorUser) -> Response {
    render(&state, &s, None, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    s: &j1msky_accounts::sessions::Session,
    flash: Option<(String, &str)>,
    status: StatusCode,
) -> Response {
    let now = state.now();
    let loaded = async {
        let c = controls::load(&state.db).await?;
        if let Some(gw) = &state.gateway {
            // Usage held in memory is written behind the responses: show it all.
            gw.flush().await;
        }
        let mut p = panel::load(&state.db, &state.catalogue, &c, now).await?;
        if let Some(reserved) = state
            .gateway
            .as_ref()
            .and_then(|gw| gw.reserved_in_process(j1msky_gateway::BUSINESS_DAY, p.budget.day_start))
        {
            p.budget.reserved = reserved;
        }
        let alerts = j1msky_audit::alerts::recent(&state.db, 20).await?;
        Ok::<_, j1msky_db::DbError>((p, alerts))
    }
    .await;
    let (p, alerts) = match loaded {
        Ok(x) => x,
        Err(e) => return crate::render::internal_error(state, Some(s), "gateway page", &e),
    };
    let circuits: Vec<_> = state
        .catalogue
        .providers
        .keys()
        .map(|id| {
            let open = state.gateway.as_ref().is_some_and(|g| g.breakers_open(id, now));
            context! { provider => id, open }
        })
        .collect();
    let caps: Vec<_> = p
        .caps
        .iter()
        .map(|r| {
            let percent = r.cap.filter(|c| *c > 0).map(|c| (r.used * 100 / c).min(100));
            context! { scope => r.scope, label => r.label, used => r.used, cap => r.cap, default => r.default,
            overridden => r.overridden, percent }
        })
        .collect();
    let (flash, flash_kind) = match flash {
        Some((m, k)) => (Some(m), k),
        None => (None, ""),
    };
    let ctx = context! {
        mode => p.mode.as_str(), mode_set_by => p.mode_set_by, mode_set_at => p.mode_set_at,
        modes => Mode::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        caps, circuits,
        budget => context! {
            cap => p.budget.cap.to_string(), default => p.budget.default.to_string(), spent => p.budget.spent.to_string(),
            reserved => p.budget.reserved.to_string(), overridden => p.budget.overridden,
            percent => if p.budget.cap.micros() > 0 { (p.budget.spent.micros() as i128 * 100 / p.budget.cap.micros() as i128) as i64 } else { 0 },
        },
        alerts => alerts.into_iter().map(|a| context! { kind => a.kind, message => a.message, at => a.created_at }).collect::<Vec<_>>(),
        flash, flash_kind,
    };
    page_with_status(state, Some(s), status, "admin/gateway.html", "gateway", ctx)
}

#[derive(Deserialize)]
pub struct ModeForm {
    mode: String,
    #[serde(default)]
    reason: String,
}

/// `POST /admin/gateway/mode`.
pub async fn set_mode(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(form): Form<ModeForm>,
) -> Response {
    let mode: Mode = match form.mode.parse() {
        Ok(m) => m,
        Err(e) => return refused(&state, &s, ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e)).await,
    };
    match controls::set_mode_with_reason(&state.db, &Actor::user(&s.user.id), mode, &form.reason, state.now()).await {
        Ok(()) => done(&state),
        Err(e) => refused(&state, &s, e.into()).await,
    }
}

#[derive(Deserialize)]
pub struct CapForm {
    scope: String,
    /// Requests per hour; empty for the catalogue's cap.
    #[serde(default)]
    cap: String,
    /// Why (kept in the configuration history).
    #[serde(default)]
    reason: String,
}

/// `POST /admin/gateway/caps`: one scope's cap, edited in place.
pub async fn set_cap(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(form): Form<CapForm>,
) -> Response {
    let actor = Actor::user(&s.user.id);
    match controls::set_cap_text(&state.db, &state.catalogue, &actor, &form.scope, &form.cap, &form.reason, state.now())
        .await
    {
        Ok(_) => done(&state),
        Err(e) => refused(&state, &s, e.into()).await,
    }
}

#[derive(Deserialize)]
pub struct BudgetForm {
    /// USD; empty for the catalogue's budget.
    #[serde(default)]
    amount: String,
    /// Why (kept in the configuration history).
    #[serde(default)]
    reason: String,
}

/// `POST /admin/gateway/budget`: the business's daily budget.
pub async fn set_budget(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(form): Form<BudgetForm>,
) -> Response {
    let actor = Actor::user(&s.user.id);
    match controls::set_daily_budget_text(&state.db, &actor, &form.amount, &form.reason, state.now()).await {
        Ok(_) => done(&state),
        Err(e) => refused(&state, &s, e.into()).await,
    }
}

#[derive(Deserialize)]
pub struct CustomerBudgetForm {
    /// `cus_…`.
    #[serde(default)]
    customer: String,
    /// USD; `none` or empty removes the budget.
    #[serde(default)]
    amount: String,
    /// Why (kept in the configuration history).
    #[serde(default)]
    reason: String,
}

/// `POST /admin/gateway/customer-budget`: one customer's monthly spending budget.
pub async fn set_customer_budget(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(form): Form<CustomerBudgetForm>,
) -> Response {
    let actor = Actor::user(&s.user.id);
    let customer = form.customer.trim();
    match controls::set_customer_budget_text(&state.db, &actor, customer, &form.amount, &form.reason, state.now()).await
    {
        Ok(_) => done(&state),
        Err(e) => refused(&state, &s, e.into()).await,
    }
}

/// A refused change: the page again with the error's message, status and code (the
/// mapping in `crate::error`); an internal failure gets the error page.
async fn refused(state: &AppState, s: &j1msky_accounts::sessions::Session, e: ApiError) -> Response {
    if e.is_internal() {
        return crate::render::error_page_for(state, Some(s), e);
    }
    let page = render(state, s, Some((e.message.clone(), "error")), e.status).await;
    crate::render::stamp(page, &e)
}

fn done(state: &AppState) -> Response {
    if let Some(gw) = &state.gateway {
        gw.controls_changed();
    }
    Redirect::to("/admin/gateway").into_response()
}
