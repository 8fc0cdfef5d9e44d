//! `/admin/review/morning` (what needs the operator this morning, worst first) and
//! `/admin/review/evening` (the day's spend by model, team and customer, the month's
//! margins with the loss-makers first, and the what-if: `POST` reprices the month's ledger
//! under prices and routing typed into the form, on the page or as CSV with `format=csv`;
//! a simulation, nothing stored changes).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Form, Router};
use j1msky_accounts::sessions::Session;
use j1msky_core::Money;
use j1msky_insights::evening::{self, Evening, Scenario, WhatIf};
use j1msky_insights::kpis::MarginRow;
use j1msky_insights::{morning, InsightsError};
use minijinja::{context, Value};

use super::board::{choose, BoardQuery};
use super::csv;
use crate::auth::OperatorUser;
use crate::error::ApiError;
use crate::render::{error_page_for, page, page_with_status, stamp};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/review/morning", get(morning_page))
        .route("/admin/review/evening", get(evening_page).post(what_if))
}

/// `GET /admin/review/morning` (`format=csv`: the same list as a file).
async fn morning_page(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Query(q): Query<BoardQuery>,
) -> Response {
    let csv_wanted = match choose(&state, &q) {
        Ok(c) => c.csv,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let items = match morning::review(&state.insights()).await {
        Ok(i) => i,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    if csv_wanted {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                let severity = serde_json::to_value(i.severity).ok().and_then(|v| v.as_str().map(String::from));
                vec![severity.unwrap_or_default(), i.area.clone(), i.title.clone(), i.detail.clone(), i.link.clone()]
            })
            .collect();
        return csv::response("morning-review.csv", &["severity", "area", "title", "detail", "link"], &rows);
    }
    let ctx = context! { items, now => state.now(), csv => "/admin/review/morning?format=csv" };
    page(&state, Some(&s), "admin/review_morning.html", "reviews", ctx)
}

const MARGIN_HEADER: &[&str] = &["key", "name", "revenue_micros", "cost_micros", "margin_micros", "margin_bp", "tasks"];

/// `GET /admin/review/evening` (`format=csv&table=by_model|by_team|spend_by_customer|by_customer`).
async fn evening_page(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Query(q): Query<BoardQuery>,
) -> Response {
    let chosen = match choose(&state, &q) {
        Ok(c) => c,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let day = match evening::review(&state.insights(), state.now()).await {
        Ok(d) => d,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    if chosen.csv {
        let (name, rows) = match q.table.trim() {
            "by_model" | "" => ("by_model", &day.by_model),
            "by_team" => ("by_team", &day.by_team),
            "spend_by_customer" => ("spend_by_customer", &day.spend_by_customer),
            "by_customer" => ("by_customer", &day.by_customer),
            other => {
                let msg = format!(
                    "`{other}` is not a table of the evening review: one of by_model, by_team, spend_by_customer, by_customer"
                );
                return error_page_for(&state, Some(&s), InsightsError::invalid("table", msg));
            }
        };
        return csv::response(&format!("evening-{name}.csv"), MARGIN_HEADER, &csv::margin_rows(rows));
    }
    let form = WhatIfForm::blank(&state);
    render_evening(&state, &s, &day, &form, None, None, StatusCode::OK)
}

/// The what-if form as typed (shown again with the result or the error).
struct WhatIfForm {
    month: String,
    plan: String,
    team: String,
    fields: BTreeMap<String, String>,
    /// `format=csv` (the form's CSV button): the result's customers as a file.
    csv: bool,
}

impl WhatIfForm {
    fn blank(state: &AppState) -> WhatIfForm {
        WhatIfForm {
            month: state.insights().this_month().to_string(),
            plan: String::new(),
            team: String::new(),
            fields: BTreeMap::new(),
            csv: false,
        }
    }
}

/// Reads the what-if form into a scenario; the error names the field. Blank fields keep
/// today's value; every other field must be a known model or plan with a sane amount.
fn scenario(state: &AppState, pairs: &[(String, String)]) -> Result<(WhatIfForm, Scenario), InsightsError> {
    let mut form = WhatIfForm::blank(state);
    let mut seen = std::collections::BTreeSet::new();
    let mut s = Scenario::default();
    // At most $100,000 per million tokens and $1,000,000 a month: anything above is a typo.
    let max_mtok = Money::from_micros(100_000 * 1_000_000);
    let max_plan = Money::from_micros(1_000_000 * 1_000_000);
    let amount = |field: &str, text: &str, max: Money| -> Result<Money, InsightsError> {
        let m: Money = text.parse().map_err(|e| InsightsError::invalid(field, format!("`{text}`: {e}")))?;
        if m.is_negative() {
            return Err(InsightsError::invalid(field, "cannot be negative"));
        }
        if m > max {
            return Err(InsightsError::invalid(field, format!("at most {max}")));
        }
        Ok(m)
    };
    let model_of = |field: &str, id: &str| -> Result<(), InsightsError> {
        if state.catalogue.models.contains_key(id) {
            Ok(())
        } else {
            Err(InsightsError::invalid(field, format!("`{id}` is not a model of the catalogue")))
        }
    };
    for (key, value) in pairs {
        if key == "csrf_token" {
            continue;
        }
        if !seen.insert(key.clone()) {
            return Err(InsightsError::invalid(key.as_str(), "given twice"));
        }
        let v = value.trim();
        match key.as_str() {
            "month" => form.month = v.to_string(),
            "plan" => form.plan = v.to_string(),
            "team" => form.team = v.to_string(),
            "format" => {
                form.csv = match v {
                    "csv" => true,
                    "" | "html" => false,
                    other => {
                        return Err(InsightsError::invalid("format", format!("`{other}` is not a format: csv or html")))
                    }
                };
                continue;
            }
            _ => {
                form.fields.insert(key.clone(), v.to_string());
            }
        }
        if v.is_empty() || matches!(key.as_str(), "month" | "plan" | "team") {
            continue;
        }
        if let Some(model) = key.strip_prefix("price_in.").or_else(|| key.strip_prefix("price_out.")) {
            model_of(key, model)?;
            let m = amount(key, v, max_mtok)?;
            let current = &state.catalogue.models[model];
            let entry = s
                .model_prices
                .entry(model.to_string())
                .or_insert((current.input_per_mtok.micros(), current.output_per_mtok.micros()));
            if key.starts_with("price_in.") {
                entry.0 = m.micros();
            } else {
                entry.1 = m.micros();
            }
        } else if let Some(model) = key.strip_prefix("route.") {
            model_of(key, model)?;
            model_of(key, v)?;
            if v != model {
                s.routing.insert(model.to_string(), v.to_string());
            }
        } else if let Some(plan) = key.strip_prefix("plan_price.") {
            if !state.catalogue.plans.contains_key(plan) {
                return Err(InsightsError::invalid(key.as_str(), format!("`{plan}` is not a plan of the catalogue")));
            }
            let m = amount(key, v, max_plan)?;
            if m.micros() % 10_000 != 0 {
                return Err(InsightsError::invalid(key.as_str(), "a plan price is whole cents"));
            }
            s.plan_prices.insert(plan.to_string(), m.micros() / 10_000);
        } else {
            return Err(InsightsError::invalid(key.as_str(), "is not a field of the what-if"));
        }
    }
    Ok((form, s))
}

/// `POST /admin/review/evening`: the what-if (CSRF-checked like every form; read-only),
/// shown on the page, or with `format=csv` its customers as a file.
async fn what_if(
    State(state): State<AppState>,
    OperatorUser(s): OperatorUser,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let day = match evening::review(&state.insights(), state.now()).await {
        Ok(d) => d,
        Err(e) => return error_page_for(&state, Some(&s), e),
    };
    let parsed = scenario(&state, &pairs).and_then(|(form, scenario)| {
        let q = BoardQuery::filters(&form.month, &form.plan, &form.team);
        let chosen = choose(&state, &q)?;
        Ok((form, scenario, chosen))
    });
    let (form, scenario, chosen) = match parsed {
        Ok(v) => v,
        Err(e) => {
            let mut form = WhatIfForm::blank(&state);
            for (k, v) in &pairs {
                match k.as_str() {
                    "month" => form.month = v.clone(),
                    "plan" => form.plan = v.clone(),
                    "team" => form.team = v.clone(),
                    "csrf_token" | "format" => {}
                    _ => {
                        form.fields.insert(k.clone(), v.clone());
                    }
                }
            }
            let e = ApiError::from(e);
            if e.is_internal() {
                return error_page_for(&state, Some(&s), e);
            }
            let resp = render_evening(&state, &s, &day, &form, None, Some(e.message.clone()), e.status);
            return stamp(resp, &e);
        }
    };
    match evening::what_if(&state.insights(), chosen.month, &chosen.filter, &scenario).await {
        Ok(result) if form.csv => what_if_csv(&chosen.month.to_string(), &result),
        Ok(result) => render_evening(&state, &s, &day, &form, Some(&result), None, StatusCode::OK),
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

/// The what-if's customers as a file: each customer's month as it was and as it would
/// have been, in raw micro-dollars, the biggest change first (as on the page).
fn what_if_csv(month: &str, result: &WhatIf) -> Response {
    let rows: Vec<Vec<String>> = result
        .by_customer
        .iter()
        .map(|(was, would)| {
            vec![
                was.key.clone(),
                was.label.clone(),
                was.revenue_micros.to_string(),
                was.cost_micros.to_string(),
                was.margin_micros.to_string(),
                would.revenue_micros.to_string(),
                would.cost_micros.to_string(),
                would.margin_micros.to_string(),
                (would.margin_micros - was.margin_micros).to_string(),
            ]
        })
        .collect();
    csv::response(
        &format!("what-if-{month}.csv"),
        &[
            "customer",
            "name",
            "revenue_micros",
            "cost_micros",
            "margin_micros",
            "would_revenue_micros",
            "would_cost_micros",
            "would_margin_micros",
            "change_micros",
        ],
        &rows,
    )
}

fn money(micros: i64) -> String {
    Money::from_micros(micros).to_string()
}

fn rows_ctx(rows: &[MarginRow]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            context! {
                key => r.key.clone(), label => r.label.clone(), revenue => money(r.revenue_micros),
                cost => money(r.cost_micros), margin => money(r.margin_micros), margin_micros => r.margin_micros,
                margin_bp => r.margin_bp, tasks => r.tasks, loss => r.margin_micros < 0,
            }
        })
        .collect()
}

fn render_evening(
    state: &AppState,
    s: &Session,
    day: &Evening,
    form: &WhatIfForm,
    result: Option<&WhatIf>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let field = |k: String| form.fields.get(&k).cloned().unwrap_or_default();
    let models: Vec<Value> = state
        .catalogue
        .models
        .iter()
        .map(|(id, m)| {
            context! {
                id, name => m.name.clone(), input => m.input_per_mtok.to_decimal_string(),
                output => m.output_per_mtok.to_decimal_string(),
                price_in => field(format!("price_in.{id}")), price_out => field(format!("price_out.{id}")),
                route => field(format!("route.{id}")),
            }
        })
        .collect();
    let plans: Vec<Value> = state
        .catalogue
        .plans
        .iter()
        .map(|(id, p)| context! { id, name => p.name.clone(), price => p.monthly_price.to_decimal_string(), value => field(format!("plan_price.{id}")) })
        .collect();
    let result = result.map(|r| {
        context! {
            actual_revenue => money(r.actual_revenue_micros), actual_cost => money(r.actual_cost_micros),
            actual_margin => money(r.actual_margin_micros), actual_margin_micros => r.actual_margin_micros,
            revenue => money(r.revenue_micros), cost => money(r.cost_micros), margin => money(r.margin_micros),
            margin_micros => r.margin_micros, change => money(r.margin_micros - r.actual_margin_micros),
            by_customer => r.by_customer.iter().map(|(a, b)| context! {
                key => a.key.clone(), label => a.label.clone(), was => money(a.margin_micros), would => money(b.margin_micros),
                change => money(b.margin_micros - a.margin_micros),
            }).collect::<Vec<_>>(),
        }
    });
    let ctx = context! {
        start => day.start, end => day.end, spend => money(day.spend_micros), spend_micros => day.spend_micros,
        by_model => rows_ctx(&day.by_model), by_team => rows_ctx(&day.by_team),
        spend_by_customer => rows_ctx(&day.spend_by_customer), by_customer => rows_ctx(&day.by_customer),
        models, plans, result, month => form.month.clone(), plan => form.plan.clone(), team => form.team.clone(),
        all_plans => state.catalogue.plans.keys().cloned().collect::<Vec<_>>(),
        all_teams => state.catalogue.teams.keys().cloned().collect::<Vec<_>>(),
        model_ids => state.catalogue.models.keys().cloned().collect::<Vec<_>>(),
        flash => error, flash_kind => "error",
    };
    page_with_status(state, Some(s), status, "admin/review_evening.html", "reviews", ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_what_if_file_has_each_customer_as_it_was_and_would_have_been() {
        let row = |key: &str, label: &str, revenue: i64, cost: i64| MarginRow {
            key: key.into(),
            label: label.into(),
            revenue_micros: revenue,
            cost_micros: cost,
            margin_micros: revenue - cost,
            ..MarginRow::default()
        };
        let result = WhatIf {
            by_customer: vec![
                (row("cus_a", "=SUM(A1)", 5_000_000, 4_000_000), row("cus_a", "=SUM(A1)", 5_000_000, 1_000_000)),
                (row("cus_b", "Bee", 2_000_000, 500_000), row("cus_b", "Bee", 2_500_000, 500_000)),
            ],
            ..WhatIf::default()
        };
        let resp = what_if_csv("2026-11", &result);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[axum::http::header::CONTENT_DISPOSITION],
            "attachment; filename=\"what-if-2026-11.csv\""
        );
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        assert_eq!(
            String::from_utf8(body.to_vec()).expect("utf-8"),
            "customer,name,revenue_micros,cost_micros,margin_micros,would_revenue_micros,would_cost_micros,\
             would_margin_micros,change_micros\r\n\
             cus_a,'=SUM(A1),5000000,4000000,1000000,5000000,1000000,4000000,3000000\r\n\
             cus_b,Bee,2000000,500000,1500000,2500000,500000,2000000,500000\r\n"
        );
    }
}
