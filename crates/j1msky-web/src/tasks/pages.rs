//! Task pages: the customer's `/app/tasks` (new task form with templates, list, detail
//! with each step) and the operator's `/admin/queue` (depth, running, held back,
//! failures, retry and cancel). Thin over `j1msky_tasks`, like the JSON API.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use j1msky_core::catalogue::TeamAllowance;
use j1msky_tasks::{NewTask, Priority, TaskError};
use minijinja::context;

use crate::auth::{CustomerUser, OperatorUser};
use crate::error::ApiError;
use crate::render::{error_page_for, page_with_status, stamp};
use crate::state::AppState;

/// `GET /app/tasks`.
pub async fn app_tasks(State(state): State<AppState>, CustomerUser(s, cid): CustomerUser) -> Response {
    app_tasks_page(&state, &s, &cid, None, StatusCode::OK).await
}

async fn app_tasks_page(
    state: &AppState,
    s: &j1msky_accounts::sessions::Session,
    cid: &str,
    flash: Option<String>,
    status: StatusCode,
) -> Response {
    let loaded = async {
        let customer = j1msky_accounts::customers::get(&state.db, cid).await?;
        let tasks = j1msky_tasks::list(&state.db, Some(cid), None, 100).await?;
        Ok::<_, TaskError>((customer, tasks))
    }
    .await;
    let (customer, tasks) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(state, Some(s), e),
    };
    let plan = customer.plan.as_deref().and_then(|p| state.catalogue.plans.get(p));
    let in_force = j1msky_accounts::customers::teams_in_force(&state.catalogue, &customer);
    let allowed: Vec<&String> = state.catalogue.teams.keys().filter(|t| in_force.contains(t)).collect();
    // Slots of a plan of chosen teams still open: the owner chooses them here.
    let open_slots = match plan.map(|p| p.teams) {
        Some(TeamAllowance::Choose(n)) => (n as usize).saturating_sub(in_force.len()),
        _ => 0,
    };
    let choosable: Vec<minijinja::Value> = state
        .catalogue
        .teams
        .iter()
        .map(|(id, t)| context! { id => id, name => t.name.clone(), chosen => in_force.contains(id) })
        .collect();
    let can_choose = open_slots > 0 && s.user.role == j1msky_core::vocab::UserRole::Owner;
    let teams: Vec<minijinja::Value> =
        allowed.iter().map(|id| context! { id => id, name => state.catalogue.teams[*id].name.clone() }).collect();
    let templates: Vec<minijinja::Value> = allowed
        .iter()
        .flat_map(|team| {
            state.catalogue.teams[*team].templates.iter().map(move |(id, t)| {
                context! { team => team, id => id, title => t.title.clone(), fields => t.fields.clone() }
            })
        })
        .collect();
    page_with_status(
        state,
        Some(s),
        status,
        "app/tasks.html",
        "tasks",
        context! { teams, templates, tasks, flash, open_slots, choosable, can_choose },
    )
}

/// `POST /app/tasks`: a free prompt, or a template with `field_<name>` inputs.
pub async fn app_submit(
    State(state): State<AppState>,
    CustomerUser(s, cid): CustomerUser,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let text = |k: &str| form.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let priority = match text("priority").as_deref().unwrap_or("normal").parse::<Priority>() {
        Ok(p) => p,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let input = NewTask {
        team: text("team").unwrap_or_default(),
        title: text("title"),
        prompt: if text("template").is_some() { None } else { text("prompt") },
        template: text("template"),
        fields: form.iter().filter_map(|(k, v)| k.strip_prefix("field_").map(|f| (f.to_string(), v.clone()))).collect(),
        priority,
        category: None,
    };
    match j1msky_tasks::submit(&state.db, &state.catalogue, &cid, &input, None, state.now()).await {
        Ok(done) => Redirect::to(&format!("/app/tasks/{}", done.task.id)).into_response(),
        Err(e) => {
            // Refused input: the form again, with the status and code the API gives.
            let e = ApiError::from(e);
            if e.is_internal() {
                return error_page_for(&state, Some(&s), e);
            }
            stamp(app_tasks_page(&state, &s, &cid, Some(e.message.clone()), e.status).await, &e)
        }
    }
}

/// `POST /app/teams`: the owner chooses the teams its plan leaves open (checkboxes
/// `team_<id>`; the teams already chosen stay).
pub async fn app_choose_teams(
    State(state): State<AppState>,
    CustomerUser(s, cid): CustomerUser,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if s.user.role != j1msky_core::vocab::UserRole::Owner {
        return error_page_for(&state, Some(&s), ApiError::forbidden("Only the account owner chooses the teams."));
    }
    let teams: Vec<String> = form.keys().filter_map(|k| k.strip_prefix("team_")).map(str::to_string).collect();
    let by = j1msky_accounts::customers::TeamsBy::Owner;
    let actor = j1msky_audit::Actor::user(&s.user.id);
    match j1msky_accounts::customers::choose_teams(&state.db, &state.catalogue, &actor, &cid, teams, by, state.now())
        .await
    {
        Ok(_) => Redirect::to("/app/tasks").into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            if e.is_internal() {
                return error_page_for(&state, Some(&s), e);
            }
            stamp(app_tasks_page(&state, &s, &cid, Some(e.message.clone()), e.status).await, &e)
        }
    }
}

/// `GET /app/tasks/{id}`: the task and each step's output, cost and time.
pub async fn app_task(
    State(state): State<AppState>,
    CustomerUser(s, cid): CustomerUser,
    Path(id): Path<String>,
) -> Response {
    match j1msky_tasks::get(&state.db, &id, Some(&cid)).await {
        Ok(d) => page_with_status(
            &state,
            Some(&s),
            StatusCode::OK,
            "app/task.html",
            "tasks",
            context! { task => d.task, steps => d.steps },
        ),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `POST /app/tasks/{id}/cancel`.
pub async fn app_cancel(
    State(state): State<AppState>,
    CustomerUser(s, cid): CustomerUser,
    Path(id): Path<String>,
) -> Response {
    match j1msky_tasks::cancel(&state.db, &id, Some(&cid), &format!("user:{}", s.user.id), state.now()).await {
        Ok(_) => Redirect::to(&format!("/app/tasks/{id}")).into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `GET /admin/queue`.
pub async fn admin_queue(State(state): State<AppState>, OperatorUser(s): OperatorUser) -> Response {
    queue_page(&state, &s, None).await
}

async fn queue_page(state: &AppState, s: &j1msky_accounts::sessions::Session, flash: Option<String>) -> Response {
    let now = state.now();
    let read = async {
        let queue = j1msky_tasks::queue_view(&state.db, now).await?;
        let sla = j1msky_tasks::sla_lanes(&state.db, &state.catalogue.current(), now).await?;
        Ok::<_, j1msky_tasks::TaskError>((queue, sla))
    };
    match read.await {
        Ok((queue, sla)) => page_with_status(
            state,
            Some(s),
            StatusCode::OK,
            "admin/queue.html",
            "queue",
            context! { queue, sla, flash },
        ),
        Err(e) => error_page_for(state, Some(s), e),
    }
}

/// `POST /admin/queue/{id}/retry`.
pub async fn admin_retry(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
) -> Response {
    match j1msky_tasks::retry(&state.db, &id, &format!("user:{}", s.user.id), state.now()).await {
        Ok(t) => queue_page(&state, &s, Some(format!("{} is queued again", t.id))).await,
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `POST /admin/queue/{id}/cancel`.
pub async fn admin_cancel(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
) -> Response {
    match j1msky_tasks::cancel(&state.db, &id, None, &format!("user:{}", s.user.id), state.now()).await {
        Ok(t) => queue_page(&state, &s, Some(format!("{} cancelled", t.id))).await,
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}
