//! `/admin/spend`: the acquisition spend per month behind CAC (operator only). The list
//! and the form; `?format=csv` exports the list. Posting goes through
//! `people::set_spend`, the one path the CLI uses too (audited, refused when negative,
//! absurd or for a month not begun).

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use j1msky_accounts::sessions::Session;
use j1msky_audit::Actor;
use j1msky_insights::{people, InsightsError, Month};
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::auth::OperatorUser;
use crate::error::ApiError;
use crate::render::{error_page_for, page_with_status, stamp};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/spend", get(list).post(save))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    format: String,
}

#[derive(Deserialize, Default, Serialize)]
pub struct SpendForm {
    #[serde(default)]
    month: String,
    #[serde(default)]
    amount: String,
}

/// `12345` cents as `123.45`.
fn amount(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// `GET /admin/spend[?format=csv]`.
async fn list(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<ListQuery>) -> Response {
    if q.format == "csv" {
        return match people::spend(&state.insights()).await {
            Ok(rows) => csv(&rows),
            Err(e) => error_page_for(&state, Some(&s), e),
        };
    }
    let form = SpendForm { month: state.insights().this_month().to_string(), amount: String::new() };
    render(&state, &s, &form, None, StatusCode::OK).await
}

/// The list as CSV: `month,spend_cents,spend` (newest first).
fn csv(rows: &[(Month, i64)]) -> Response {
    let mut body = String::from("month,spend_cents,spend\n");
    for (month, cents) in rows {
        body.push_str(&format!("{month},{cents},{}\n", amount(*cents)));
    }
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
        (header::CONTENT_DISPOSITION, "attachment; filename=\"acquisition-spend.csv\""),
    ];
    (headers, body).into_response()
}

/// The page, with the form as given and the error that refused it, if any.
async fn render(
    state: &AppState,
    s: &Session,
    form: &SpendForm,
    error: Option<&ApiError>,
    status: StatusCode,
) -> Response {
    let rows = match people::spend(&state.insights()).await {
        Ok(rows) => rows,
        Err(e) => return error_page_for(state, Some(s), e),
    };
    let rows: Vec<_> = rows
        .iter()
        .map(|(m, cents)| context! { month => m.to_string(), cents => *cents, amount => amount(*cents) })
        .collect();
    let ctx = context! {
        rows, form, this_month => state.insights().this_month().to_string(),
        error => error.map(|e| e.message.clone()),
    };
    let resp = page_with_status(state, Some(s), status, "admin/spend.html", "spend", ctx);
    match error {
        Some(e) => stamp(resp, e),
        None => resp,
    }
}

/// `POST /admin/spend`: sets a month's spend; bad input shows the form again (422) with
/// the field named.
async fn save(State(state): State<AppState>, OperatorUser(s): OperatorUser, Form(form): Form<SpendForm>) -> Response {
    // Long junk is refused before it is quoted back in an error or the form.
    let too_long = [("month", form.month.chars().count(), 20), ("amount", form.amount.chars().count(), 40)]
        .into_iter()
        .find(|(_, len, max)| len > max);
    if let Some((field, _, max)) = too_long {
        let shown =
            SpendForm { month: form.month.chars().take(20).collect(), amount: form.amount.chars().take(40).collect() };
        let e = ApiError::from(InsightsError::invalid(field, format!("too long (at most {max} characters)")));
        return render(&state, &s, &shown, Some(&e), e.status).await;
    }
    let parsed = Month::parse(&form.month).and_then(|m| Ok((m, people::parse_amount(&form.amount)?)));
    let result = match parsed {
        Ok((month, cents)) => people::set_spend(&state.insights(), month, cents, &Actor::user(&s.user.id)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to("/admin/spend").into_response(),
        Err(e @ InsightsError::Invalid { .. }) => {
            let e = ApiError::from(e);
            render(&state, &s, &form, Some(&e), e.status).await
        }
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}
