//! Browser pages: login and logout, the operator's customer list (`/admin/customers`;
//! `/admin` is the board) and the customer's home (`/app`).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use axum_extra::extract::CookieJar;
use j1msky_accounts::{api_keys, customers, devices, sessions, users, AccountsError};
use j1msky_audit::{audit, Actor};
use j1msky_core::vocab::{Stage, UseCase, UserRole};
use minijinja::context;
use serde::Deserialize;

use crate::auth::{
    cookie, is_https, safe_next, ClientIp, CustomerUser, MaybeSession, OperatorUser, PageUser, DEVICE_COOKIE,
    SESSION_COOKIE,
};
use crate::csrf::LOGIN_CSRF_COOKIE;
use crate::error::ApiError;
use crate::render::{error_page_for, page_with_status, stamp};
use crate::state::AppState;

/// `/`: wherever the caller belongs.
pub async fn root(PageUser(s): PageUser) -> Redirect {
    Redirect::to(if s.user.role == UserRole::Operator { "/admin" } else { "/app" })
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The login form; sets the pre-login CSRF cookie.
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(q): Query<LoginQuery>,
) -> Response {
    login_page(&state, &headers, jar, q.next.as_deref(), "", None, StatusCode::OK)
}

fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    jar: CookieJar,
    next: Option<&str>,
    email: &str,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let (jar, token) = crate::csrf::form_token(state, headers, jar, None);
    let ctx = context! { csrf => token, next => safe_next(next).unwrap_or_default(), email, flash => error, flash_kind => "error" };
    (jar, page_with_status(state, None, status, "login.html", "", ctx)).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// Checks the credentials, opens a session, and goes where the user was headed.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    ClientIp(ip): ClientIp,
    Form(form): Form<LoginForm>,
) -> Response {
    let now = state.now();
    let device = jar.get(DEVICE_COOKIE).map(|c| c.value().to_string());
    match users::authenticate(&state.db, &form.email, &form.password, &ip, device.as_deref(), now).await {
        Ok(users::Login { user, device }) => match sessions::create(&state.db, &user.id, Some(&ip), now).await {
            Ok((token, _csrf)) => {
                let secure = is_https(&state, &headers);
                let jar = jar
                    .add(cookie(SESSION_COOKIE, token, secure, sessions::SESSION_TTL / 1_000_000))
                    .add(cookie(DEVICE_COOKIE, device, secure, devices::DEVICE_TTL / 1_000_000))
                    .remove(axum_extra::extract::cookie::Cookie::build(LOGIN_CSRF_COOKIE).path("/"));
                let home = if user.role == UserRole::Operator { "/admin" } else { "/app" };
                let target = safe_next(form.next.as_deref()).filter(|n| n != "/").unwrap_or_else(|| home.to_string());
                (jar, Redirect::to(&target)).into_response()
            }
            Err(e) => error_page_for(&state, None, e),
        },
        // The login form again, with the status, code and Retry-After of the mapping.
        Err(e @ (AccountsError::Throttled { .. } | AccountsError::BadCredentials)) => {
            let msg = match &e {
                AccountsError::Throttled { retry_after_secs } => {
                    format!("Too many failed attempts. Try again in {} minute(s).", (retry_after_secs + 59) / 60)
                }
                _ => "Wrong email or password.".to_string(),
            };
            let e = ApiError::from(e);
            let page = login_page(&state, &headers, jar, form.next.as_deref(), &form.email, Some(msg), e.status);
            stamp(page, &e)
        }
        Err(e) => error_page_for(&state, None, e),
    }
}

/// Ends the session.
pub async fn logout(State(state): State<AppState>, jar: CookieJar) -> Response {
    if let Some(c) = jar.get(SESSION_COOKIE) {
        if let Err(e) = sessions::delete(&state.db, c.value()).await {
            return error_page_for(&state, None, e);
        }
    }
    let jar = jar.remove(axum_extra::extract::cookie::Cookie::build(SESSION_COOKIE).path("/"));
    (jar, Redirect::to("/login")).into_response()
}

#[derive(Deserialize, Default)]
pub struct StageQuery {
    stage: Option<String>,
    /// Where the previous page ended (`customers::Cursor::encode`).
    after: Option<String>,
    /// What to look for (`customers::search`): the start of a name or an email, or an id.
    q: Option<String>,
}

/// Customers a search shows at most (the operator types more to narrow it).
pub const SEARCH_RESULTS: i64 = 100;

/// Customers shown per page of `/admin/customers`.
pub const CUSTOMERS_PER_PAGE: i64 = 500;

/// `/admin/customers`: the customers list and the add-customer form.
pub async fn admin_customers(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Query(q): Query<StageQuery>,
) -> Response {
    admin_customers_page(&state, &s, &q, None, StatusCode::OK).await
}

async fn admin_customers_page(
    state: &AppState,
    s: &sessions::Session,
    q: &StageQuery,
    flash: Option<(String, &str)>,
    status: StatusCode,
) -> Response {
    let stage = match q.stage.as_deref().filter(|v| !v.is_empty()).map(str::parse::<Stage>).transpose() {
        Ok(stage) => stage,
        Err(e) => return error_page_for(state, Some(s), AccountsError::invalid("stage", e.to_string())),
    };
    let after =
        match q.after.as_deref().filter(|v| !v.is_empty()).map(|a| customers::Cursor::decode("after", a)).transpose() {
            Ok(after) => after,
            Err(e) => return error_page_for(state, Some(s), e),
        };
    let search = q.q.as_deref().map(str::trim).filter(|v| !v.is_empty());
    let list = match search {
        // One more than shown: whether there are more to narrow down.
        Some(text) => customers::search(&state.db, text, stage, SEARCH_RESULTS + 1).await,
        None => customers::list_after(&state.db, stage, after.as_ref(), CUSTOMERS_PER_PAGE).await,
    };
    let mut list = match list {
        Ok(l) => l,
        Err(e) => return error_page_for(state, Some(s), e),
    };
    let more_found = search.is_some() && list.len() as i64 > SEARCH_RESULTS;
    if more_found {
        list.truncate(SEARCH_RESULTS as usize);
    }
    let counts = match customers::count_by_stage(&state.db).await {
        Ok(c) => c,
        Err(e) => return error_page_for(state, Some(s), e),
    };
    // A full page may have more after it; a shorter one is the last.
    let next = list
        .last()
        .filter(|_| search.is_none() && list.len() as i64 == CUSTOMERS_PER_PAGE)
        .map(customers::Cursor::after);
    let stage_counts: Vec<_> = counts.iter().map(|(st, n)| context! { stage => st.as_str(), count => n }).collect();
    let total: i64 = counts.iter().filter(|(st, _)| stage.is_none_or(|x| x == *st)).map(|(_, n)| n).sum();
    let (flash, flash_kind) = match flash {
        Some((m, k)) => (Some(m), k),
        None => (None, ""),
    };
    let ctx = context! {
        customers => list, stage_counts, stage => stage.map(|x| x.as_str()), total,
        paged => after.is_some() && search.is_none(), next => next.map(|c| c.encode()),
        search, found => list.len(), more_found, search_max => SEARCH_RESULTS,
        stages => Stage::ALL.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        use_cases => UseCase::ALL.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        plans => state.catalogue.plans.keys().cloned().collect::<Vec<_>>(),
        flash, flash_kind,
    };
    page_with_status(state, Some(s), status, "admin/customers.html", "customers", ctx)
}

#[derive(Deserialize, Default)]
pub struct NewCustomerForm {
    #[serde(default)]
    name: String,
    contact_email: Option<String>,
    stage: Option<String>,
    use_case: Option<String>,
    plan: Option<String>,
    teams: Option<String>,
    expected_monthly_tasks: Option<String>,
    time_zone: Option<String>,
    owner_email: Option<String>,
    owner_password: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn parse_customer_form(
    form: NewCustomerForm,
) -> Result<(customers::NewCustomer, Option<(String, String)>), AccountsError> {
    let stage = non_empty(form.stage)
        .map(|s| s.parse::<Stage>())
        .transpose()
        .map_err(|e| AccountsError::invalid("stage", e.to_string()))?;
    let use_case = non_empty(form.use_case)
        .map(|s| s.parse::<UseCase>())
        .transpose()
        .map_err(|e| AccountsError::invalid("use_case", e.to_string()))?;
    let expected_monthly_tasks = non_empty(form.expected_monthly_tasks)
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| AccountsError::invalid("expected_monthly_tasks", format!("`{s}` is not a whole number")))
        })
        .transpose()?;
    let chosen_teams = non_empty(form.teams)
        .map(|t| t.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    let owner = match (non_empty(form.owner_email), non_empty(form.owner_password)) {
        (Some(email), Some(password)) => {
            j1msky_accounts::Email::parse(&email)?;
            j1msky_accounts::passwords::check_policy(&password)?;
            Some((email, password))
        }
        (Some(_), None) => {
            return Err(AccountsError::invalid("owner_password", "is required when an owner email is given"))
        }
        (None, _) => None,
    };
    let input = customers::NewCustomer {
        name: form.name,
        contact_email: non_empty(form.contact_email),
        stage,
        use_case,
        plan: non_empty(form.plan),
        chosen_teams,
        expected_monthly_tasks,
        time_zone: non_empty(form.time_zone),
    };
    Ok((input, owner))
}

/// Adds a customer (and optionally its owner user) from the admin form.
pub async fn admin_create_customer(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(form): Form<NewCustomerForm>,
) -> Response {
    let actor = Actor::user(&s.user.id);
    let now = state.now();
    // A form that does not parse and one the domain refuses are answered the same way.
    let created = match parse_customer_form(form) {
        Ok((input, owner)) => {
            let owner =
                owner.map(|(email, password)| customers::NewOwner { email, display_name: String::new(), password });
            customers::create_with_owner(&state.db, &state.catalogue, &actor, input, owner, now).await
        }
        Err(e) => Err(e),
    };
    let customer = match created {
        Ok((c, _)) => c,
        Err(e) => {
            let e = ApiError::from(e);
            if e.is_internal() {
                return error_page_for(&state, Some(&s), e);
            }
            let page =
                admin_customers_page(&state, &s, &StageQuery::default(), Some((e.message.clone(), "error")), e.status)
                    .await;
            return stamp(page, &e);
        }
    };
    Redirect::to(&format!("/admin/customers/{}", customer.id)).into_response()
}

/// One customer: details, stage history, users, keys, audit.
pub async fn admin_customer(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
) -> Response {
    customer_page(&state, &s, &id, None, StatusCode::OK).await
}

async fn customer_page(
    state: &AppState,
    s: &sessions::Session,
    id: &str,
    flash: Option<(String, &str)>,
    status: StatusCode,
) -> Response {
    let db = &state.db;
    let loaded = async {
        let customer = customers::get(db, id).await?;
        let history = customers::stage_history(db, id).await?;
        let users = users::list(db, Some(id)).await?;
        let keys = api_keys::list(db, id).await?;
        let audit = audit::list(db, Some(id), 50).await?;
        Ok::<_, AccountsError>((customer, history, users, keys, audit))
    }
    .await;
    let (customer, history, users, keys, audit) = match loaded {
        Ok(v) => v,
        Err(e) => return error_page_for(state, Some(s), e),
    };
    let (flash, flash_kind) = match flash {
        Some((m, k)) => (Some(m), k),
        None => (None, ""),
    };
    // Billing as Stripe last told us; a failure to read it does not hide the rest.
    let subscription = j1msky_billing::changes::current(db, id).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "reading the subscription mirror");
        None
    });
    let payments = j1msky_billing::revenue::for_customer(db, id, 12).await.unwrap_or_default();
    let disputes = j1msky_billing::disputes::of_customer(db, id).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "reading the customer's disputes");
        Vec::new()
    });
    let ctx = context! {
        customer, history, users, keys, audit, flash, flash_kind, subscription, payments, disputes,
        stages => Stage::ALL.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
    };
    page_with_status(state, Some(s), status, "admin/customer.html", "customers", ctx)
}

#[derive(Deserialize)]
pub struct StageForm {
    #[serde(default)]
    stage: String,
}

/// Moves a customer to another stage.
pub async fn admin_set_stage(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path(id): Path<String>,
    Form(form): Form<StageForm>,
) -> Response {
    let stage = match form.stage.parse::<Stage>() {
        Ok(st) => st,
        Err(e) => {
            return customer_page(&state, &s, &id, Some((e.to_string(), "error")), StatusCode::UNPROCESSABLE_ENTITY)
                .await
        }
    };
    match customers::set_stage(&state.db, &Actor::user(&s.user.id), &id, stage, state.now()).await {
        Ok(_) => Redirect::to(&format!("/admin/customers/{id}")).into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            if e.is_internal() || e.status == StatusCode::NOT_FOUND {
                return error_page_for(&state, Some(&s), e);
            }
            stamp(customer_page(&state, &s, &id, Some((e.message.clone(), "error")), e.status).await, &e)
        }
    }
}

/// Lets the customer of a dispute use the service again despite it (the operator settled
/// it with them, or accepted it).
pub async fn admin_release_dispute(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Path((id, dispute)): Path<(String, String)>,
) -> Response {
    let found = j1msky_billing::disputes::of_customer(&state.db, &id).await;
    if !found.as_ref().is_ok_and(|ds| ds.iter().any(|d| d.id == dispute)) {
        return error_page_for(&state, Some(&s), j1msky_billing::BillingError::NotFound("dispute"));
    }
    let actor = Actor::user(&s.user.id);
    match j1msky_billing::disputes::release(&state.db, &state.catalogue, &actor, &dispute, state.now()).await {
        Ok(_) => Redirect::to(&format!("/admin/customers/{id}#disputes")).into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// `/app`: the customer's account and API keys.
pub async fn app_home(State(state): State<AppState>, CustomerUser(s, cid): CustomerUser) -> Response {
    app_page(&state, &s, &cid, None, StatusCode::OK).await
}

async fn app_page(
    state: &AppState,
    s: &sessions::Session,
    cid: &str,
    new_key: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let (customer, keys) = match async {
        Ok::<_, AccountsError>((customers::get(&state.db, cid).await?, api_keys::list(&state.db, cid).await?))
    }
    .await
    {
        Ok(v) => v,
        Err(e) => return error_page_for(state, Some(s), e),
    };
    let teams = customers::teams_in_force(&state.catalogue, &customer);
    let (new_key_name, new_secret) = match new_key {
        Some((n, sec)) => (Some(n), Some(sec)),
        None => (None, None),
    };
    // A failed payment: the grace period's end, or restricted until paid.
    let standing = j1msky_accounts::access::Standing::of(&customer);
    let payment_grace_until =
        j1msky_accounts::access::grace_until(&state.catalogue, &standing).filter(|end| *end > state.now());
    let payment_restricted = customer.billing_status.is_some() && payment_grace_until.is_none();
    let month = match this_month(state, &customer).await {
        Ok(m) => m,
        Err(e) => return error_page_for(state, Some(s), e),
    };
    let ctx = context! {
        customer, keys, teams, new_key_name, new_secret, payment_grace_until, payment_restricted, month,
        can_manage_keys => s.user.role == UserRole::Owner,
    };
    page_with_status(state, Some(s), status, "app/home.html", "account", ctx)
}

/// The customer's month so far (in its own time zone, as its task limit counts): tasks by
/// outcome, the success rate, the task allowance and the spending budget used.
async fn this_month(state: &AppState, customer: &customers::Customer) -> Result<minijinja::Value, ApiError> {
    let now = state.now();
    let tz: chrono_tz::Tz = customer.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let (from, to) = j1msky_core::windows::month(tz, now);
    let mut conn = state.db.pool().acquire().await.map_err(|e| ApiError::internal("the month's tasks", &e))?;
    let summary = j1msky_tasks::summary::of_customer(&mut conn, &customer.id, from, to).await?;
    let used = j1msky_tasks::submit::counted_toward_limit(&mut conn, &customer.id, from, to).await?;
    drop(conn);
    // The customer's limits as admission holds it to them, from one read of its terms: the
    // plan in force (the pause plan's while paused) gives the task allowance, as submitting
    // counts it; a customer admission refuses is told why instead.
    let view = j1msky_gateway::limits::customer_view(&state.db, &state.catalogue, &customer.id, now)
        .await
        .map_err(|e| ApiError::internal("the customer's limits", &e))?;
    let in_force = customers::Customer { plan: view.plan.clone(), ..customer.clone() };
    let task_limit = j1msky_tasks::submit::monthly_task_limit(&state.catalogue, &in_force).map(|(limit, _)| limit);
    let (budget, today, refused) = (view.month, view.day, view.refused);
    let percent = |part: i64, whole: i64| if whole > 0 { (part.max(0) * 100 / whole).min(100) } else { 0 };
    let finished = summary.succeeded + summary.failed;
    Ok(context! {
        from, to,
        succeeded => summary.succeeded, failed => summary.failed, running => summary.running, queued => summary.queued,
        total => summary.total,
        success_rate_bp => (finished > 0).then(|| summary.succeeded * 10_000 / finished),
        success_percent => summary.success_percent(),
        charged => j1msky_core::Money::from_micros(summary.charged_micros).to_string(),
        charged_micros => summary.charged_micros,
        tasks_used => used, task_limit, tasks_percent => task_limit.map(|l| percent(used, l)), refused,
        budget => budget.map(|(cap, spent, reserved)| context! {
            cap => cap.to_string(), spent => spent.to_string(), reserved => reserved.to_string(),
            cap_micros => cap.micros(), spent_micros => spent.micros(),
            percent => percent(spent.micros(), cap.micros()),
        }),
        today => today.map(|(cap, spent, _)| context! {
            cap => cap.to_string(), spent => spent.to_string(),
            cap_micros => cap.micros(), spent_micros => spent.micros(),
            percent => percent(spent.micros(), cap.micros()),
        }),
    })
}

#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
}

/// Creates an API key and shows its secret once.
pub async fn app_create_key(
    State(state): State<AppState>,
    CustomerUser(s, cid): CustomerUser,
    Form(form): Form<KeyForm>,
) -> Response {
    if s.user.role != UserRole::Owner {
        return error_page_for(&state, Some(&s), ApiError::forbidden("Only the account owner manages API keys."));
    }
    match api_keys::create(&state.db, &Actor::user(&s.user.id), &cid, &form.name, state.now()).await {
        Ok((key, secret)) => {
            // Shown this once: no cache (browser or proxy) keeps a copy of the secret.
            let mut page = app_page(&state, &s, &cid, Some((key.name, secret)), StatusCode::OK).await;
            page.headers_mut()
                .insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
            page
        }
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// Revokes one of the customer's keys (another customer's key: 404).
pub async fn app_revoke_key(
    State(state): State<AppState>,
    CustomerUser(s, cid): CustomerUser,
    Path(id): Path<String>,
) -> Response {
    if s.user.role != UserRole::Owner {
        return error_page_for(&state, Some(&s), ApiError::forbidden("Only the account owner manages API keys."));
    }
    match api_keys::revoke(&state.db, &Actor::user(&s.user.id), &id, Some(&cid), state.now()).await {
        Ok(_) => Redirect::to("/app").into_response(),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// Any unknown path: a 404 page (JSON under /api).
pub async fn not_found(
    State(state): State<AppState>,
    session: Option<axum::Extension<MaybeSession>>,
    uri: axum::http::Uri,
) -> Response {
    if uri.path().starts_with("/api/") || uri.path().starts_with("/v1/") {
        return crate::error::ApiError::not_found("route").into_response();
    }
    let s = session.and_then(|axum::Extension(m)| m.0);
    error_page_for(&state, s.as_deref(), ApiError::new(StatusCode::NOT_FOUND, "not_found", "There is no page here."))
}
