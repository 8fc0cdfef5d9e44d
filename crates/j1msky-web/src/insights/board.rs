//! The board: `/admin` (tiles for the chosen month against the month before, charts over
//! the last 12 months, margin and completion tables, filters by month, plan and team),
//! the drill-down `/admin/insights/behind?tile=…` and the CSV export of every table
//! (`format=csv`). The numbers are `kpis::series_detailed` (one call: the chosen month, the month
//! before and the charts all come from it).

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use j1msky_accounts::sessions::Session;
use j1msky_insights::kpis::{self, Behind, Filter, Kpis, MarginRow};
use j1msky_insights::mrr::Movement;
use j1msky_insights::people;
use j1msky_insights::{InsightsError, Month};
use minijinja::{context, Value};
use serde::Deserialize;

use super::charts::{self, Line};
use super::csv;
use crate::auth::OperatorUser;
use crate::render::{error_page_for, page};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin", get(board)).route("/admin/insights/behind", get(behind))
}

/// The board's query string (every field optional; empty means the default).
#[derive(Debug, Deserialize, Default)]
pub struct BoardQuery {
    #[serde(default)]
    month: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    team: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    pub(super) table: String,
    #[serde(default)]
    pub(super) tile: String,
}

impl BoardQuery {
    /// A query of just the filters (the what-if form carries them as fields).
    pub(super) fn filters(month: &str, plan: &str, team: &str) -> BoardQuery {
        BoardQuery { month: month.into(), plan: plan.into(), team: team.into(), ..BoardQuery::default() }
    }
}

/// The month, filter and output the query asks for; the error names the field.
pub(super) struct Chosen {
    pub month: Month,
    pub filter: Filter,
    pub csv: bool,
}

impl Chosen {
    /// `month=…&plan=…&team=…` (what a link to another view of the same filters carries).
    pub fn query(&self) -> String {
        let mut q = format!("month={}", self.month);
        if let Some(p) = &self.filter.plan {
            q.push_str(&format!("&plan={p}"));
        }
        if let Some(t) = &self.filter.team {
            q.push_str(&format!("&team={t}"));
        }
        q
    }
}

pub(super) fn choose(state: &AppState, q: &BoardQuery) -> Result<Chosen, InsightsError> {
    let month = match q.month.trim() {
        "" => state.insights().this_month(),
        m => Month::parse(m)?,
    };
    let given = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let filter = Filter { plan: given(&q.plan), team: given(&q.team) };
    j1msky_insights::usage::validate_filter(&state.catalogue, &filter)?;
    let csv = match q.format.trim() {
        "" | "html" => false,
        "csv" => true,
        other => return Err(InsightsError::invalid("format", format!("`{other}` is not a format: html or csv"))),
    };
    Ok(Chosen { month, filter, csv })
}

/// The unit a tile's raw integer is in.
#[derive(Clone, Copy)]
enum Unit {
    Cents,
    Micros,
    Bp,
    Count,
    X100,
    Score,
}

fn show(unit: Unit, v: Option<i64>) -> String {
    let Some(v) = v else { return "—".into() };
    match unit {
        Unit::Cents => j1msky_core::Money::from_cents(v).to_string(),
        Unit::Micros => j1msky_core::Money::from_micros(v).to_string(),
        Unit::Bp => format!("{}{}.{:02} %", if v < 0 { "-" } else { "" }, v.abs() / 100, v.abs() % 100),
        Unit::X100 => format!("{}.{:02}:1", v / 100, v.abs() % 100),
        Unit::Count | Unit::Score => v.to_string(),
    }
}

/// One tile: `data-kpi` key, label, unit, how to read it from a month, and its drill-down.
struct TileDef {
    key: &'static str,
    label: &'static str,
    unit: Unit,
    get: fn(&Kpis) -> Option<i64>,
    drill: bool,
}

const TILES: &[TileDef] = &[
    TileDef {
        key: "mrr.ending_cents",
        label: "MRR",
        unit: Unit::Cents,
        get: |k| Some(k.mrr.ending_cents),
        drill: true,
    },
    TileDef {
        key: "mrr.starting_cents",
        label: "MRR at the start",
        unit: Unit::Cents,
        get: |k| Some(k.mrr.starting_cents),
        drill: false,
    },
    TileDef { key: "mrr.new_cents", label: "New MRR", unit: Unit::Cents, get: |k| Some(k.mrr.new_cents), drill: true },
    TileDef {
        key: "mrr.expansion_cents",
        label: "Expansion",
        unit: Unit::Cents,
        get: |k| Some(k.mrr.expansion_cents),
        drill: true,
    },
    TileDef {
        key: "mrr.reactivation_cents",
        label: "Reactivation",
        unit: Unit::Cents,
        get: |k| Some(k.mrr.reactivation_cents),
        drill: true,
    },
    TileDef {
        key: "mrr.contraction_cents",
        label: "Contraction",
        unit: Unit::Cents,
        get: |k| Some(k.mrr.contraction_cents),
        drill: true,
    },
    TileDef {
        key: "mrr.churn_cents",
        label: "Churned MRR",
        unit: Unit::Cents,
        get: |k| Some(k.mrr.churn_cents),
        drill: true,
    },
    TileDef {
        key: "mrr.paying_end",
        label: "Customers paying",
        unit: Unit::Count,
        get: |k| Some(k.mrr.paying_end),
        drill: true,
    },
    TileDef {
        key: "mrr.paying_start",
        label: "Customers paying at the start",
        unit: Unit::Count,
        get: |k| Some(k.mrr.paying_start),
        drill: false,
    },
    TileDef {
        key: "mrr.reactivated_customers",
        label: "Reactivated customers",
        unit: Unit::Count,
        get: |k| Some(k.mrr.reactivated_customers),
        drill: true,
    },
    TileDef {
        key: "mrr.new_customers",
        label: "New customers",
        unit: Unit::Count,
        get: |k| Some(k.mrr.new_customers),
        drill: true,
    },
    TileDef {
        key: "mrr.churned_customers",
        label: "Churned customers",
        unit: Unit::Count,
        get: |k| Some(k.mrr.churned_customers),
        drill: true,
    },
    TileDef {
        key: "customers.churn_rate_bp",
        label: "Customer churn",
        unit: Unit::Bp,
        get: |k| k.customers.churn_rate_bp,
        drill: true,
    },
    TileDef {
        key: "customers.gross_revenue_churn_bp",
        label: "Gross revenue churn",
        unit: Unit::Bp,
        get: |k| k.customers.gross_revenue_churn_bp,
        drill: false,
    },
    TileDef {
        key: "customers.net_revenue_churn_bp",
        label: "Net revenue churn",
        unit: Unit::Bp,
        get: |k| k.customers.net_revenue_churn_bp,
        drill: false,
    },
    TileDef {
        key: "customers.arpa_cents",
        label: "ARPA",
        unit: Unit::Cents,
        get: |k| k.customers.arpa_cents,
        drill: true,
    },
    TileDef {
        key: "customers.ltv_cents",
        label: "LTV",
        unit: Unit::Cents,
        get: |k| k.customers.ltv_cents,
        drill: false,
    },
    TileDef {
        key: "customers.cac_cents",
        label: "CAC",
        unit: Unit::Cents,
        get: |k| k.customers.cac_cents,
        drill: false,
    },
    TileDef {
        key: "customers.ltv_to_cac_x100",
        label: "LTV : CAC",
        unit: Unit::X100,
        get: |k| k.customers.ltv_to_cac_x100,
        drill: false,
    },
    TileDef {
        key: "customers.activation_bp",
        label: "Activation (this cohort)",
        unit: Unit::Bp,
        get: activation,
        drill: true,
    },
    TileDef {
        key: "customers.nps",
        label: "NPS",
        unit: Unit::Score,
        get: |k| k.customers.nps.as_ref().map(|n| n.score),
        drill: true,
    },
    TileDef {
        key: "usage.revenue_micros",
        label: "Revenue",
        unit: Unit::Micros,
        get: |k| Some(k.usage.revenue_micros),
        drill: true,
    },
    TileDef {
        key: "usage.model_cost_micros",
        label: "Model cost",
        unit: Unit::Micros,
        get: |k| Some(k.usage.model_cost_micros),
        drill: true,
    },
    TileDef {
        key: "usage.stripe_fees_micros",
        label: "Stripe fees",
        unit: Unit::Micros,
        get: |k| k.usage.stripe_fees_micros,
        drill: false,
    },
    TileDef {
        key: "usage.gross_margin_micros",
        label: "Gross margin",
        unit: Unit::Micros,
        get: |k| Some(k.usage.gross_margin_micros),
        drill: true,
    },
    TileDef {
        key: "usage.gross_margin_bp",
        label: "Gross margin %",
        unit: Unit::Bp,
        get: |k| k.usage.gross_margin_bp,
        drill: true,
    },
    TileDef {
        key: "usage.cost_per_completed_task_micros",
        label: "Cost per completed task",
        unit: Unit::Micros,
        get: |k| k.usage.cost_per_completed_task_micros,
        drill: false,
    },
    TileDef {
        key: "usage.success_rate_bp",
        label: "Task success rate",
        unit: Unit::Bp,
        get: |k| k.usage.success_rate_bp,
        drill: false,
    },
    TileDef {
        key: "usage.tasks_completed",
        label: "Tasks completed",
        unit: Unit::Count,
        get: |k| Some(k.usage.tasks_completed),
        drill: false,
    },
];

/// The activation rate of the month's own signup cohort.
fn activation(k: &Kpis) -> Option<i64> {
    k.customers.activation.iter().find(|c| c.month == k.month).and_then(|c| c.rate_bp)
}

/// What a drill-down tile means: an MRR movement, the margin ranking, or the customers
/// behind a customer number (signups, funnel stages, NPS answers).
enum Drill {
    Mrr(Movement),
    Margin,
    People(people::Tile),
}

/// The funnel table's stages, each with its drill-down (not tiles).
const FUNNEL_DRILLS: [&str; 4] = ["funnel.lead", "funnel.qualified", "funnel.trial", "funnel.paid"];

fn drill_of(tile: &str) -> Option<Drill> {
    Some(match tile {
        "mrr.new_cents" | "mrr.new_customers" => Drill::Mrr(Movement::New),
        "mrr.expansion_cents" => Drill::Mrr(Movement::Expansion),
        "mrr.contraction_cents" => Drill::Mrr(Movement::Contraction),
        "mrr.churn_cents" | "mrr.churned_customers" | "customers.churn_rate_bp" => Drill::Mrr(Movement::Churn),
        "mrr.reactivation_cents" | "mrr.reactivated_customers" => Drill::Mrr(Movement::Reactivation),
        "mrr.ending_cents" | "mrr.paying_end" | "customers.arpa_cents" => Drill::Mrr(Movement::Paying),
        // Each customer's revenue, model cost and margin of the month.
        "usage.gross_margin_micros" | "usage.gross_margin_bp" | "usage.revenue_micros" | "usage.model_cost_micros" => {
            Drill::Margin
        }
        "customers.activation_bp" => Drill::People(people::Tile::Signups),
        "customers.nps" => Drill::People(people::Tile::Nps),
        // The funnel table's stages.
        "funnel.lead" => Drill::People(people::Tile::Lead),
        "funnel.qualified" => Drill::People(people::Tile::Qualified),
        "funnel.trial" => Drill::People(people::Tile::Trial),
        "funnel.paid" => Drill::People(people::Tile::Paid),
        _ => return None,
    })
}

/// A table of the board: its id (`table=`), title, header and rows.
struct Table {
    id: &'static str,
    title: String,
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

fn margin_table(id: &'static str, title: &str, what: &'static str, rows: &[MarginRow]) -> Table {
    Table {
        id,
        title: title.into(),
        header: vec![what, "name", "revenue_micros", "cost_micros", "margin_micros", "margin_bp", "tasks"],
        rows: csv::margin_rows(rows),
    }
}

fn tables(k: &Kpis) -> Vec<Table> {
    let tiles = Table {
        id: "tiles",
        title: "Every number".into(),
        header: vec!["kpi", "label", "value"],
        rows: TILES
            .iter()
            .map(|t| vec![t.key.into(), t.label.into(), (t.get)(k).map(|v| v.to_string()).unwrap_or_default()])
            .collect(),
    };
    let mrr_by_plan = Table {
        id: "mrr_by_plan",
        title: "MRR by plan".into(),
        header: vec!["plan", "customers", "mrr_cents"],
        rows: k
            .mrr
            .by_plan
            .iter()
            .map(|p| vec![p.plan.clone(), p.customers.to_string(), p.cents.to_string()])
            .collect(),
    };
    let completion = Table {
        id: "completion",
        title: "Completion time per team".into(),
        header: vec!["team", "tasks", "median_ms", "p90_ms"],
        rows: k
            .usage
            .completion
            .iter()
            .map(|t| vec![t.team.clone(), t.tasks.to_string(), t.median_ms.to_string(), t.p90_ms.to_string()])
            .collect(),
    };
    let activation = Table {
        id: "activation",
        title: "Activation by signup cohort".into(),
        header: vec!["cohort", "customers", "activated", "rate_bp"],
        rows: k
            .customers
            .activation
            .iter()
            .map(|c| {
                vec![
                    c.month.to_string(),
                    c.customers.to_string(),
                    c.activated.to_string(),
                    c.rate_bp.map(|b| b.to_string()).unwrap_or_default(),
                ]
            })
            .collect(),
    };
    let funnel = Table {
        id: "funnel",
        title: "Funnel".into(),
        header: vec!["stage", "entered", "conversion_bp", "median_hours_from_previous"],
        rows: k
            .customers
            .funnel
            .stages
            .iter()
            .map(|s| {
                vec![
                    s.stage.clone(),
                    s.entered.to_string(),
                    s.conversion_bp.map(|b| b.to_string()).unwrap_or_default(),
                    s.median_hours_from_previous.map(|h| h.to_string()).unwrap_or_default(),
                ]
            })
            .collect(),
    };
    vec![
        tiles,
        mrr_by_plan,
        margin_table("margin_by_plan", "Margin by plan", "plan", &k.usage.by_plan),
        margin_table("margin_by_team", "Margin by team", "team", &k.usage.by_team),
        margin_table("margin_by_model", "Margin by model", "model", &k.usage.by_model),
        margin_table(
            "margin_by_customer",
            &format!("Margin by customer, the loss-makers first ({} at most)", j1msky_insights::usage::CUSTOMER_ROWS),
            "customer",
            &k.usage.by_customer,
        ),
        completion,
        activation,
        funnel,
    ]
}

fn dollars_cents(v: i64) -> f64 {
    v as f64 / 100.0
}

fn dollars_micros(v: i64) -> f64 {
    v as f64 / 1_000_000.0
}

fn charts_of(series: &[Kpis], filter_note: &str) -> Vec<String> {
    use charts::{BLUE_, GREEN_, GREY_, ORANGE_, RED_, TEAL_};
    let labels: Vec<String> = series.iter().map(|k| k.month.to_string()).collect();
    let col = |f: fn(&Kpis) -> f64| series.iter().map(f).collect::<Vec<f64>>();
    let mrr = charts::lines(
        "mrr",
        &format!("MRR and its movements, USD{filter_note}"),
        &labels,
        &[
            Line { name: "MRR (end of month)", color: BLUE_, values: col(|k| dollars_cents(k.mrr.ending_cents)) },
            Line { name: "New", color: GREEN_, values: col(|k| dollars_cents(k.mrr.new_cents)) },
            Line { name: "Expansion", color: TEAL_, values: col(|k| dollars_cents(k.mrr.expansion_cents)) },
            Line { name: "Reactivation", color: GREY_, values: col(|k| dollars_cents(k.mrr.reactivation_cents)) },
            Line {
                name: "Contraction (−)", color: ORANGE_, values: col(|k| -dollars_cents(k.mrr.contraction_cents))
            },
            Line { name: "Churn (−)", color: RED_, values: col(|k| -dollars_cents(k.mrr.churn_cents)) },
        ],
    );
    let margin = charts::lines(
        "revenue",
        &format!("Revenue, model cost and gross margin, USD{filter_note}"),
        &labels,
        &[
            Line { name: "Revenue", color: BLUE_, values: col(|k| dollars_micros(k.usage.revenue_micros)) },
            Line { name: "Model cost", color: RED_, values: col(|k| dollars_micros(k.usage.model_cost_micros)) },
            Line { name: "Gross margin", color: GREEN_, values: col(|k| dollars_micros(k.usage.gross_margin_micros)) },
        ],
    );
    vec![mrr, margin]
}

/// `GET /admin`: the board (or one of its tables as CSV with `format=csv&table=…`).
async fn board(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<BoardQuery>) -> Response {
    match board_inner(&state, &s, &q).await {
        Ok(r) => r,
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

async fn board_inner(state: &AppState, s: &Session, q: &BoardQuery) -> Result<Response, InsightsError> {
    let chosen = choose(state, q)?;
    let table_id = match q.table.trim() {
        "" => "tiles",
        t => t,
    };
    let ctx = state.insights();
    let first = (0..11).fold(chosen.month, |m, _| m.prev());
    // Every number for the chosen month and the one before (tiles, tables); the ten
    // earlier months are only charted.
    let series = kpis::series_detailed(&ctx, first, chosen.month, &chosen.filter, chosen.month.prev()).await?;
    let (Some(now), Some(before)) = (series.last(), series.len().checked_sub(2).and_then(|i| series.get(i))) else {
        return Err(InsightsError::NotFound(format!("the numbers of {}", chosen.month)));
    };
    let all = tables(now);
    if chosen.csv {
        let ids: Vec<&str> = all.iter().map(|t| t.id).collect();
        let Some(t) = all.iter().find(|t| t.id == table_id) else {
            return Err(InsightsError::invalid(
                "table",
                format!("`{table_id}` is not a table of the board: one of {}", ids.join(", ")),
            ));
        };
        let name = format!("board-{}-{}.csv", chosen.month, t.id);
        return Ok(csv::response(&name, &t.header, &t.rows));
    }
    let base = chosen.query();
    let tiles: Vec<Value> = TILES
        .iter()
        .map(|t| {
            let (v, p) = ((t.get)(now), (t.get)(before));
            let delta = match (v, p) {
                (Some(v), Some(p)) if v != p => {
                    Some(format!("{}{}", if v > p { "+" } else { "−" }, show(t.unit, Some((v - p).abs()))))
                }
                (Some(_), Some(_)) => Some("no change".into()),
                _ => None,
            };
            context! {
                key => t.key, label => t.label, value => v, shown => show(t.unit, v),
                previous => show(t.unit, p), delta,
                drill => t.drill.then(|| format!("/admin/insights/behind?tile={}&{base}", t.key)),
            }
        })
        .collect();
    let note = match (&chosen.filter.plan, &chosen.filter.team) {
        (None, None) => String::new(),
        (p, t) => format!(
            " ({})",
            [p.as_ref().map(|p| format!("plan {p}")), t.as_ref().map(|t| format!("team {t}"))]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let chart_svgs = charts_of(&series, &note);
    let tables: Vec<Value> = all
        .iter()
        .filter(|t| t.id != "tiles")
        .map(|t| {
            // A row whose first cell names a drill-down (the funnel's stages) opens its customers.
            let links: Vec<Option<String>> = t
                .rows
                .iter()
                .map(|r| {
                    let key = format!("{}.{}", t.id, r.first()?);
                    FUNNEL_DRILLS.contains(&key.as_str()).then(|| format!("/admin/insights/behind?tile={key}&{base}"))
                })
                .collect();
            context! {
                id => t.id, title => t.title.clone(), header => t.header.clone(), rows => t.rows.clone(), links,
                csv => format!("/admin?{base}&table={}&format=csv", t.id),
            }
        })
        .collect();
    let choices = j1msky_insights::usage::filter_choices(&state.catalogue);
    let ctx = context! {
        month => chosen.month.to_string(), previous_month => before.month.to_string(),
        plan => chosen.filter.plan.clone(), team => chosen.filter.team.clone(),
        plans => choices.0, teams => choices.1,
        tiles, charts => chart_svgs, tables,
        tiles_csv => format!("/admin?{base}&table=tiles&format=csv"),
        currency => now.mrr.currency.clone(),
    };
    Ok(page(state, Some(s), "admin/board.html", "board", ctx))
}

/// `GET /admin/insights/behind?tile=…&month=…`: the customers behind one tile.
async fn behind(State(state): State<AppState>, OperatorUser(s): OperatorUser, Query(q): Query<BoardQuery>) -> Response {
    match behind_inner(&state, &s, &q).await {
        Ok(r) => r,
        Err(e) => error_page_for(&state, Some(&s), e),
    }
}

async fn behind_inner(state: &AppState, s: &Session, q: &BoardQuery) -> Result<Response, InsightsError> {
    let chosen = choose(state, q)?;
    let tile = q.tile.trim();
    let Some(drill) = drill_of(tile) else {
        let mut known: Vec<&str> = TILES.iter().filter(|t| t.drill).map(|t| t.key).collect();
        known.extend(FUNNEL_DRILLS);
        return Err(InsightsError::invalid("tile", format!("`{tile}` has no drill-down: one of {}", known.join(", "))));
    };
    let ctx = state.insights();
    let (rows, unit): (Vec<Behind>, &str) = match drill {
        Drill::Mrr(m) => (j1msky_insights::mrr::behind(&ctx, chosen.month, m, &chosen.filter).await?, "cents"),
        Drill::Margin => (j1msky_insights::usage::behind_margin(&ctx, chosen.month, &chosen.filter).await?, "micros"),
        Drill::People(t) => {
            let unit = if t == people::Tile::Nps { "score" } else { "hours" };
            (people::behind(&ctx, chosen.month, t, &chosen.filter).await?, unit)
        }
    };
    let label = TILES.iter().find(|t| t.key == tile).map_or(tile, |t| t.label);
    if chosen.csv {
        let value_col = match unit {
            "cents" => "value_cents",
            "micros" => "value_micros",
            "hours" => "value_hours",
            _ => "value",
        };
        let data: Vec<Vec<String>> = rows
            .iter()
            .map(|b| {
                vec![
                    b.customer_id.clone(),
                    b.name.clone(),
                    b.plan.clone().unwrap_or_default(),
                    b.value.to_string(),
                    b.detail.clone(),
                ]
            })
            .collect();
        let name = format!("behind-{}-{}.csv", chosen.month, tile.replace('.', "_"));
        return Ok(csv::response(&name, &["customer_id", "name", "plan", value_col, "detail"], &data));
    }
    let shown: Vec<Value> = rows
        .iter()
        .map(|b| {
            let v = match unit {
                "cents" => show(Unit::Cents, Some(b.value)),
                "micros" => show(Unit::Micros, Some(b.value)),
                "hours" if b.value < 0 => "—".to_string(),
                "hours" => format!("{} h", b.value),
                _ => b.value.to_string(),
            };
            context! { customer_id => b.customer_id.clone(), name => b.name.clone(), plan => b.plan.clone(), value => b.value, shown => v, detail => b.detail.clone() }
        })
        .collect();
    let base = chosen.query();
    let ctx = context! {
        tile, label, month => chosen.month.to_string(), rows => shown,
        plan => chosen.filter.plan.clone(), team => chosen.filter.team.clone(),
        board => format!("/admin?{base}"),
        csv => format!("/admin/insights/behind?tile={tile}&{base}&format=csv"),
    };
    Ok(page(state, Some(s), "admin/behind.html", "board", ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use j1msky_insights::kpis::{Cohort, Customers, Mrr, Nps, Usage};

    fn sample() -> Kpis {
        let month = Month::parse("2026-11").unwrap();
        Kpis {
            month,
            filter: Filter::default(),
            mrr: Mrr {
                ending_cents: 1_234_567,
                new_cents: 9_900,
                churn_cents: 4_900,
                paying_end: 42,
                ..Mrr::default()
            },
            customers: Customers {
                churn_rate_bp: Some(238),
                net_revenue_churn_bp: Some(-150),
                ltv_to_cac_x100: Some(250),
                activation: vec![Cohort { month, customers: 4, activated: 3, rate_bp: Some(7_500) }],
                nps: Some(Nps { responses: 3, promoters: 2, passives: 0, detractors: 1, score: 33 }),
                ..Customers::default()
            },
            usage: Usage {
                gross_margin_micros: -1_500_000,
                by_team: vec![MarginRow {
                    key: "code".into(),
                    label: "=cmd|' /C calc'!A0".into(),
                    tasks: 2,
                    ..MarginRow::default()
                }],
                // As the library lists them: the lowest margin first.
                by_customer: vec![
                    MarginRow {
                        key: "cus_loss".into(),
                        label: "Costly Ltd".into(),
                        revenue_micros: 1_000_000,
                        cost_micros: 3_000_000,
                        margin_micros: -2_000_000,
                        margin_bp: Some(-20_000),
                        tasks: 9,
                    },
                    MarginRow {
                        key: "cus_gain".into(),
                        label: "Thrifty AG".into(),
                        revenue_micros: 4_000_000,
                        cost_micros: 1_000_000,
                        margin_micros: 3_000_000,
                        margin_bp: Some(7_500),
                        tasks: 3,
                    },
                ],
                ..Usage::default()
            },
        }
    }

    #[test]
    fn tiles_read_their_field_and_show_it_in_its_unit() {
        let k = sample();
        let tile = |key: &str| TILES.iter().find(|t| t.key == key).unwrap();
        let shown = |key: &str| show(tile(key).unit, (tile(key).get)(&k));
        assert_eq!(
            ((tile("mrr.ending_cents").get)(&k), shown("mrr.ending_cents")),
            (Some(1_234_567), "$12345.67".into())
        );
        assert_eq!(shown("mrr.paying_end"), "42");
        assert_eq!(shown("customers.churn_rate_bp"), "2.38 %");
        assert_eq!(shown("customers.net_revenue_churn_bp"), "-1.50 %");
        assert_eq!(shown("customers.ltv_to_cac_x100"), "2.50:1");
        assert_eq!(shown("customers.activation_bp"), "75.00 %");
        assert_eq!(shown("customers.nps"), "33");
        assert_eq!(shown("usage.gross_margin_micros"), "-$1.50");
        assert_eq!(((tile("customers.ltv_cents").get)(&k), shown("customers.ltv_cents")), (None, "—".into()));
        // Every drill-down tile has a meaning behind it.
        for t in TILES.iter().filter(|t| t.drill) {
            assert!(drill_of(t.key).is_some(), "{}", t.key);
        }
    }

    #[test]
    fn tables_carry_the_raw_integers_and_the_csv_neutralises_text() {
        let all = tables(&sample());
        let tiles = all.iter().find(|t| t.id == "tiles").unwrap();
        assert!(tiles.rows.contains(&vec!["mrr.ending_cents".into(), "MRR".into(), "1234567".into()]));
        assert!(tiles.rows.contains(&vec!["customers.cac_cents".into(), "CAC".into(), String::new()]));
        let team = all.iter().find(|t| t.id == "margin_by_team").unwrap();
        let body = j1msky_insights::csv::body(&team.header, &team.rows);
        assert!(body.contains("code,'=cmd|' /C calc'!A0,0,0,0,,2\r\n"), "{body}");
        // Each customer's margin, the loss-makers first, in raw integers.
        let customers = all.iter().find(|t| t.id == "margin_by_customer").unwrap();
        assert_eq!(
            j1msky_insights::csv::body(&customers.header, &customers.rows),
            "customer,name,revenue_micros,cost_micros,margin_micros,margin_bp,tasks\r\n\
             cus_loss,Costly Ltd,1000000,3000000,-2000000,-20000,9\r\n\
             cus_gain,Thrifty AG,4000000,1000000,3000000,7500,3\r\n"
        );
        let ids: Vec<&str> = all.iter().map(|t| t.id).collect();
        assert_eq!(
            ids,
            [
                "tiles",
                "mrr_by_plan",
                "margin_by_plan",
                "margin_by_team",
                "margin_by_model",
                "margin_by_customer",
                "completion",
                "activation",
                "funnel"
            ]
        );
    }
}
