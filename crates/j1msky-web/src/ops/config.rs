//! Configuration history: changes, diffs and rollback (`/admin/config`), through the
//! same `j1msky_ops::config_history` functions as `j1msky config …`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use j1msky_accounts::sessions::Session;
use j1msky_audit::Actor;
use j1msky_ops::config_history::{self as ch, ConfigError, Entry, PathChange, Target};
use minijinja::context;
use serde::Deserialize;

use crate::auth::OperatorUser;
use crate::error::ApiError;
use crate::render::{error_page_for, page_with_status, stamp};
use crate::state::AppState;

/// Entries shown on the page.
const SHOWN: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/config", get(page))
        .route("/admin/config/diff", get(diff))
        .route("/admin/config/rollback", post(rollback))
}

#[derive(Deserialize, Default)]
pub struct HistoryQuery {
    #[serde(default)]
    key: String,
}

/// `GET /admin/config[?key=K]`: the merged history, newest first.
async fn page(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<HistoryQuery>) -> Response {
    render(&state, &s, &q.key, None, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct DiffQuery {
    a: String,
    #[serde(default)]
    b: String,
}

/// `GET /admin/config/diff?a=1&b=2`: two catalogue versions path by path.
async fn diff(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<DiffQuery>) -> Response {
    let versions = match (q.a.parse::<Target>(), q.b.parse::<Target>()) {
        (Ok(Target::Version(a)), Ok(Target::Version(b))) => Ok((a, b)),
        _ => Err(ConfigError::Rule { field: "a", message: "compare two catalogue versions (a=1&b=2)".into() }),
    };
    let result = match versions {
        Ok((a, b)) => ch::diff_versions(&state.db, a, b).await.map(|d| (a, b, d)),
        Err(e) => Err(e),
    };
    match result {
        Ok((a, b, changes)) => render(&state, &s, "", Some((a, b, changes)), None, StatusCode::OK).await,
        Err(e) => refused(&state, &s, e).await,
    }
}

#[derive(Deserialize)]
pub struct RollbackForm {
    target: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /admin/config/rollback`: a catalogue version back in force (as a new version),
/// or a settings change undone; needs a reason and the box ticked.
async fn rollback(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(f): Form<RollbackForm>,
) -> Response {
    if f.confirm != "yes" {
        let e = ConfigError::Rule { field: "confirm", message: "tick the box: every process switches at once".into() };
        return refused(&state, &s, e).await;
    }
    let result = match f.target.parse::<Target>() {
        Ok(t) => ch::rollback(&state.db, &state.catalogue, &Actor::user(&s.user.id), &t, &f.reason, state.now()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => {
            if let Some(gw) = &state.gateway {
                gw.controls_changed();
            }
            Redirect::to("/admin/config").into_response()
        }
        Err(e) => refused(&state, &s, e).await,
    }
}

/// A refused request: the page again with the message and the error's status.
async fn refused(state: &AppState, s: &Session, e: ConfigError) -> Response {
    let e = ApiError::from(e);
    if e.is_internal() {
        return error_page_for(state, Some(s), e);
    }
    let resp = render(state, s, "", None, Some(e.message.clone()), e.status).await;
    stamp(resp, &e)
}

async fn render(
    state: &AppState,
    s: &Session,
    key: &str,
    diff: Option<(i64, i64, Vec<PathChange>)>,
    flash: Option<String>,
    status: StatusCode,
) -> Response {
    let key = key.trim();
    let entries = match ch::history(&state.db, Some(key).filter(|k| !k.is_empty()), SHOWN).await {
        Ok(e) => e,
        Err(e) => return error_page_for(state, Some(s), e),
    };
    let in_force = state.catalogue.version();
    let rows: Vec<_> = entries.iter().map(|e| row(e, in_force)).collect();
    let diff = diff.map(|(a, b, changes)| {
        let show = |v: &Option<serde_json::Value>| v.as_ref().map_or_else(|| "(absent)".to_string(), |v| v.to_string());
        let changes: Vec<_> = changes
            .iter()
            .map(|c| context! { path => c.path.clone(), old => show(&c.old), new => show(&c.new) })
            .collect();
        context! { a, b, changes }
    });
    let ctx = context! { rows, key, in_force, diff, flash };
    page_with_status(state, Some(s), status, "admin/config.html", "config", ctx)
}

fn row(e: &Entry, in_force: Option<i64>) -> minijinja::Value {
    match e {
        Entry::Catalogue(v) => context! {
            kind => "catalogue", at => v.created_at, who => v.created_by.clone(),
            what => format!("catalogue v{}", v.version), change => format!("from {}", v.source),
            reason => v.reason.clone(), target => v.version.to_string(),
            previous => (v.version > 1).then(|| v.version - 1), version => v.version,
            current => in_force == Some(v.version),
        },
        Entry::Setting(c) => context! {
            kind => "setting", at => c.changed_at, who => c.changed_by.clone(), what => c.key.clone(),
            change => format!("{} → {}", c.previous.as_deref().unwrap_or("(unset)"), c.value.as_deref().unwrap_or("(unset)")),
            reason => c.reason.clone(), target => c.id.clone(), current => false,
        },
    }
}
