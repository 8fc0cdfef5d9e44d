//! Leads: the list with pilot mode, a lead's page (qualify with notes and a suggested
//! plan, start a trial, the stage history) under `/admin/leads`; and members invited by
//! the customer's owner (`/app/members`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use j1msky_audit::Actor;
use j1msky_ops::leads::trial::{self, Outcome, Terms};
use j1msky_ops::leads::{self, Mailer};
use minijinja::context;
use serde::Deserialize;

use super::start::ops_ctx;
use crate::auth::{CustomerUser, OperatorUser};
use crate::render::{error_page, error_page_for, page};
use crate::state::AppState;

const SHOWN: i64 = 300;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/leads", get(list))
        .route("/admin/leads/pilot", post(pilot))
        .route("/admin/leads/next", post(next))
        .route("/admin/leads/{id}", get(detail))
        .route("/admin/leads/{id}/qualify", post(qualify))
        .route("/admin/leads/{id}/trial", post(start_trial))
        .route("/app/members", get(members).post(invite))
}

fn mailer(state: &AppState, s: &j1msky_accounts::sessions::Session) -> Result<Mailer, Box<Response>> {
    state.lifecycle.as_ref().map(Mailer::of).ok_or_else(|| {
        Box::new(error_page(state, Some(s), StatusCode::SERVICE_UNAVAILABLE, "Mail is not configured on this server."))
    })
}

/// `GET /admin/leads`.
async fn list(State(state): State<AppState>, OperatorUser(s): OperatorUser) -> Response {
    let ctx = ops_ctx(&state);
    match (leads::list(&ctx, SHOWN).await, trial::pilot(&ctx).await) {
        (Ok(leads), Ok(pilot)) => page(&state, Some(&s), "admin/leads.html", "leads", context! { leads, pilot }),
        (Err(e), _) | (_, Err(e)) => error_page_for(&state, Some(&s), e),
    }
}

/// `GET /admin/leads/{id}`: the lead, its stage history and the actions.
async fn detail(State(state): State<AppState>, OperatorUser(s): OperatorUser, Path(id): Path<String>) -> Response {
    let ctx = ops_ctx(&state);
    let lead = match leads::get(&ctx, &id).await {
        Ok(l) => l,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let history = match j1msky_accounts::customers::stage_history(&state.db, &id).await {
        Ok(h) => h,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let plans: Vec<String> =
        state.catalogue.plans.keys().filter(|p| **p != state.catalogue.pause_plan).cloned().collect();
    let trial = match j1msky_accounts::trials::get(&state.db, &id).await {
        Ok(t) => t,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let earlier = match j1msky_accounts::trials::earlier_for_mailbox(&state.db, &lead.email, &id).await {
        Ok(e) => e,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let defaults = context! { days => state.catalogue.trial_days, tasks => trial::DEFAULT_TRIAL_TASKS };
    page(&state, Some(&s), "admin/lead.html", "leads", context! { lead, history, plans, trial, earlier, defaults })
}

#[derive(Deserialize)]
pub struct QualifyForm {
    #[serde(default)]
    notes: String,
    #[serde(default)]
    plan: String,
}

/// `POST /admin/leads/{id}/qualify`.
async fn qualify(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
    Form(f): Form<QualifyForm>,
) -> Response {
    let actor = Actor::user(&s.user.id);
    match leads::qualify(&ops_ctx(&state), &actor, &id, &f.notes, Some(&f.plan), state.now()).await {
        Ok(_) => Redirect::to(&format!("/admin/leads/{id}")).into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

#[derive(Deserialize)]
pub struct TrialForm {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    tasks: String,
}

fn number(field: &'static str, v: &str) -> Result<Option<i64>, leads::LeadError> {
    match v.trim() {
        "" => Ok(None),
        t => t.parse().map(Some).map_err(|_| leads::LeadError::invalid(field, "a whole number")),
    }
}

/// `POST /admin/leads/{id}/trial`: starts the trial (or puts the lead in line).
async fn start_trial(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
    Form(f): Form<TrialForm>,
) -> Response {
    let mailer = match mailer(&state, &s) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let terms = match (number("days", &f.days), number("tasks", &f.tasks)) {
        (Ok(days), Ok(tasks)) => Terms { plan: Some(f.plan.clone()), days, tasks },
        (Err(e), _) | (_, Err(e)) => return error_page_for(&state, Some(&s), e),
    };
    let actor = Actor::user(&s.user.id);
    match trial::start(&ops_ctx(&state), &mailer, &actor, &id, &terms, state.now()).await {
        Ok(Outcome::Started { .. } | Outcome::Waiting { .. }) => {
            Redirect::to(&format!("/admin/leads/{id}")).into_response()
        }
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

#[derive(Deserialize)]
pub struct PilotForm {
    #[serde(default)]
    slots: String,
}

/// `POST /admin/leads/pilot`: pilot mode on with N slots, or off (empty).
async fn pilot(State(state): State<AppState>, OperatorUser(s): OperatorUser, Form(f): Form<PilotForm>) -> Response {
    let slots = match number("slots", &f.slots) {
        Ok(n) => n,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    match trial::set_slots(&ops_ctx(&state), &Actor::user(&s.user.id), slots, state.now()).await {
        Ok(()) => Redirect::to("/admin/leads").into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `POST /admin/leads/next`: starts the trial of the first lead in line.
async fn next(State(state): State<AppState>, OperatorUser(s): OperatorUser) -> Response {
    let mailer = match mailer(&state, &s) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    match trial::start_next(&ops_ctx(&state), &mailer, &Actor::user(&s.user.id), state.now()).await {
        Ok(_) => Redirect::to("/admin/leads").into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `GET /app/members`: the account's people, and (for the owner) the invite form.
async fn members(State(state): State<AppState>, CustomerUser(s, cid): CustomerUser) -> Response {
    match j1msky_accounts::users::list(&state.db, Some(&cid)).await {
        Ok(users) => {
            let owner = s.user.role == j1msky_core::vocab::UserRole::Owner;
            page(&state, Some(&s), "app/members.html", "members", context! { users, owner })
        }
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    display_name: String,
}

/// `POST /app/members`: the owner invites a member by mail.
async fn invite(
    State(state): State<AppState>,
    CustomerUser(s, _): CustomerUser,
    Form(f): Form<InviteForm>,
) -> Response {
    let mailer = match mailer(&state, &s) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    match leads::mail::invite_member(&ops_ctx(&state), &mailer, &s.user, &f.email, &f.display_name, state.now()).await {
        Ok(_) => Redirect::to("/app/members").into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}
