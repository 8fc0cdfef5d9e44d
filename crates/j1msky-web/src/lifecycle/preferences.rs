//! `/app/mail`: which of the business's mail a customer receives. Transactional mail
//! (receipts, password links, payment failures) always goes; onboarding and retention
//! mail go unless turned off; the newsletter and other marketing only once turned on
//! (the only way a customer opts in; an unsubscribe link turns a category off).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use j1msky_core::vocab::UserRole;
use j1msky_lifecycle::delivery::{self, Category};
use minijinja::context;

use crate::auth::CustomerUser;
use crate::error::ApiError;
use crate::render::{error_page_for, page_with_status};
use crate::state::AppState;

/// The categories a customer chooses, with what each is.
const CHOSEN: &[(Category, &str)] = &[
    (Category::Onboarding, "Getting started: the first month's tips and check-ins"),
    (Category::Retention, "Account care: reminders when the service goes unused, offers, surveys"),
    (Category::Marketing, "The newsletter: tips, new features and use cases"),
];

pub fn router() -> Router<AppState> {
    Router::new().route("/app/mail", get(page).post(save))
}

async fn page(State(state): State<AppState>, CustomerUser(s, cid): CustomerUser) -> Response {
    let mut rows = Vec::new();
    for (category, what) in CHOSEN {
        match delivery::consents(&state.db, &cid, *category).await {
            Ok(on) => rows.push(context! { id => category.as_str(), what => what, on => on }),
            Err(e) => return error_page_for(&state, Some(&s), e),
        }
    }
    let can_change = s.user.role == UserRole::Owner;
    page_with_status(&state, Some(&s), StatusCode::OK, "app/mail.html", "account", context! { rows, can_change })
}

/// Checkboxes `mail_<category>`: a box left out is turned off.
async fn save(
    State(state): State<AppState>,
    CustomerUser(s, cid): CustomerUser,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if s.user.role != UserRole::Owner {
        return error_page_for(&state, Some(&s), ApiError::forbidden("Only the account owner chooses the mail."));
    }
    if let Some(unknown) = form
        .keys()
        .find(|k| *k != "csrf_token" && !CHOSEN.iter().any(|(c, _)| k.strip_prefix("mail_") == Some(c.as_str())))
    {
        let e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("no mail choice `{unknown}`"));
        return error_page_for(&state, Some(&s), e);
    }
    let source = format!("user:{}", s.user.id);
    for (category, _) in CHOSEN {
        let on = form.contains_key(&format!("mail_{}", category.as_str()));
        if let Err(e) = delivery::set_consent(&state.db, &cid, *category, on, &source, state.now()).await {
            return error_page_for(&state, Some(&s), e);
        }
    }
    Redirect::to("/app/mail").into_response()
}
