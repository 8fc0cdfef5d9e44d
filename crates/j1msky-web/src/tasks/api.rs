//! The task API: `POST/GET /api/v1/tasks`, `GET /api/v1/tasks/{id}`,
//! `POST /api/v1/tasks/{id}/cancel` — thin over `j1msky_tasks`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use j1msky_tasks::{NewTask, Priority, TaskError, TaskState};
use serde::Deserialize;
use serde_json::json;

use crate::auth::ApiCaller;
use crate::error::{ApiError, JsonBody, QueryParams};
use crate::state::AppState;

fn customer_of(caller: &ApiCaller) -> Result<&str, ApiError> {
    caller.customer_id().ok_or_else(|| ApiError::forbidden("operators submit tasks for customers with the CLI"))
}

/// A submit body: a prompt, or a template with its fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    pub team: String,
    pub title: Option<String>,
    pub prompt: Option<String>,
    pub template: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[schema(value_type = Option<crate::openapi::schemas::Priority>)]
    pub priority: Option<String>,
    /// Routing category of the task's calls; absent: the team's. A category a model is
    /// kept for (`model_only_for` in the catalogue) only for a team that works in it.
    pub category: Option<String>,
}

impl SubmitBody {
    pub fn into_new_task(self) -> Result<NewTask, TaskError> {
        Ok(NewTask {
            team: self.team,
            title: self.title,
            prompt: self.prompt,
            template: self.template,
            fields: self.fields,
            priority: match self.priority.as_deref() {
                Some(p) => p.parse::<Priority>()?,
                None => Priority::Normal,
            },
            category: self.category,
        })
    }
}

/// `POST /api/v1/tasks` (honours `Idempotency-Key`).
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", security(("bearer" = []), ("x_api_key" = []), ("session" = [])),
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$",
        description = "The same key answers the same task again (200, `replayed`); visible ASCII.")),
    request_body = SubmitBody,
    responses((status = 201, description = "Queued.", body = crate::openapi::schemas::Submitted),
        (status = 200, description = "An earlier submit with this Idempotency-Key made it.", body = crate::openapi::schemas::Submitted),
        crate::openapi::responses::Caller, crate::openapi::responses::Body, crate::openapi::responses::Plan))]
pub async fn submit(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Response, ApiError> {
    let cid = customer_of(&caller)?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "Idempotency-Key must be visible ASCII")
        })?),
        None => None,
    };
    let input = body.into_new_task()?;
    let done = j1msky_tasks::submit(&state.db, &state.catalogue, cid, &input, key, state.now()).await?;
    let status = if done.replayed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({"task": done.task, "replayed": done.replayed}))).into_response())
}

/// Which tasks to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks in this state.
    #[param(value_type = Option<crate::openapi::schemas::TaskState>)]
    pub state: Option<String>,
    /// At most this many, newest first (1 to 1000; default 50).
    pub limit: Option<i64>,
}

/// `GET /api/v1/tasks?state=&limit=`.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", security(("bearer" = []), ("x_api_key" = []), ("session" = [])), params(ListQuery),
    responses((status = 200, description = "The caller's tasks, newest first.", body = crate::openapi::schemas::TaskList),
        crate::openapi::responses::Caller, crate::openapi::responses::Query))]
pub async fn list(
    State(state): State<AppState>,
    caller: ApiCaller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cid = customer_of(&caller)?;
    let wanted = q.state.as_deref().map(str::parse::<TaskState>).transpose()?;
    let tasks = j1msky_tasks::list(&state.db, Some(cid), wanted, q.limit.unwrap_or(50)).await?;
    Ok(Json(json!({"data": tasks})))
}

/// `GET /api/v1/tasks/{id}`: the task with each step's output, cost and time.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", security(("bearer" = []), ("x_api_key" = []), ("session" = [])),
    params(("id" = String, Path, description = "The task's id.")),
    responses((status = 200, description = "The task and its steps.", body = crate::openapi::schemas::TaskShown),
        crate::openapi::responses::Caller, crate::openapi::responses::NotFound))]
pub async fn show(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cid = customer_of(&caller)?;
    let detail = j1msky_tasks::get(&state.db, &id, Some(cid)).await?;
    Ok(Json(json!({"task": detail})))
}

/// `POST /api/v1/tasks/{id}/cancel`.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks", security(("bearer" = []), ("x_api_key" = []), ("session" = [])),
    params(("id" = String, Path, description = "The task's id.")),
    responses((status = 200, description = "The cancelled task.", body = crate::openapi::schemas::TaskOnly),
        crate::openapi::responses::Caller, crate::openapi::responses::NotFound, crate::openapi::responses::Conflict))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cid = customer_of(&caller)?;
    let task = j1msky_tasks::cancel(&state.db, &id, Some(cid), "customer", state.now()).await?;
    Ok(Json(json!({"task": task})))
}

/// `GET /api/v1/templates`: every team's task templates, with their fields.
#[utoipa::path(get, path = "/api/v1/templates", tag = "tasks", security(("bearer" = []), ("x_api_key" = []), ("session" = [])),
    responses((status = 200, description = "Every template.", body = crate::openapi::schemas::TemplateList), crate::openapi::responses::Caller))]
pub async fn templates(State(state): State<AppState>, _caller: ApiCaller) -> Json<serde_json::Value> {
    let data: Vec<serde_json::Value> = state
        .catalogue
        .teams
        .iter()
        .flat_map(|(team, t)| {
            t.templates
                .iter()
                .map(move |(id, tpl)| json!({"team": team, "id": id, "title": tpl.title, "fields": tpl.fields}))
        })
        .collect();
    Json(json!({"data": data}))
}
