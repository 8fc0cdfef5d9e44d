//! `j1msky kpi …`: the board's numbers on the command line, straight from the database
//! (the server may be down). `kpi` prints one month (`kpis::for_month`) as tables, as
//! JSON (`--json`: the `Kpis` struct unchanged) or as CSV (`--csv`); `kpi rebuild`
//! recomputes the rollups; `kpi spend` records the month's acquisition spend (CAC).

use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};
use j1msky_core::catalogue::Catalogue;
use j1msky_core::SystemClock;
use j1msky_insights::kpis::{self, Filter, Kpis, MarginRow};
use j1msky_insights::{people, rollups, Ctx, InsightsError, Month};
use serde_json::{json, Value};

use crate::context::{self, Globals};
use crate::{output, Failure, EXIT_INVALID};

/// `kpi [--month M] [--plan P] [--team T] [--csv]`, or one of its subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KpiArgs {
    #[command(subcommand)]
    command: Option<KpiCommand>,
    #[command(flatten)]
    show: ShowArgs,
}

/// Which numbers to print, and how.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The month, YYYY-MM in the business time zone (default: this month).
    #[arg(long)]
    month: Option<String>,
    /// Only customers on this plan (a plan id of the catalogue, or pay-per-task).
    #[arg(long)]
    plan: Option<String>,
    /// Only this team's tasks, cost and revenue (a team id of the catalogue, or api for
    /// direct API calls).
    #[arg(long)]
    team: Option<String>,
    /// Print CSV: one `section,field,value` row per number, then the margin tables.
    #[arg(long)]
    csv: bool,
}

#[derive(Debug, Subcommand)]
pub enum KpiCommand {
    /// Recompute every rollup from the source tables, and say how long it took
    /// (`RUST_LOG=j1msky_insights=debug`: how long each step took, on stderr).
    Rebuild,
    /// The acquisition spend per month (for CAC and LTV:CAC).
    #[command(subcommand)]
    Spend(SpendCommand),
}

#[derive(Debug, Subcommand)]
pub enum SpendCommand {
    /// Record (or replace) a month's acquisition spend.
    Set {
        /// YYYY-MM.
        #[arg(long)]
        month: String,
        /// The spend in the currency's minor units (cents), 0 or more.
        #[arg(long, allow_negative_numbers = true)]
        cents: i64,
    },
    /// Every month's recorded spend, newest first.
    List,
}

fn invalid(message: String) -> Failure {
    Failure { code: EXIT_INVALID, error: anyhow::anyhow!(message) }
}

/// An insights error for the command line: invalid input names its flag and exits 2.
fn failure(e: InsightsError) -> Failure {
    match e {
        InsightsError::Invalid { field, message } => invalid(format!("--{field}: {message}")),
        other => Failure::from(other),
    }
}

pub async fn kpi(g: &Globals, args: KpiArgs) -> Result<(), Failure> {
    // Input that needs no catalogue is checked before the database is opened.
    if let Some(KpiCommand::Spend(SpendCommand::Set { month, cents })) = &args.command {
        Month::parse(month).map_err(failure)?;
        if *cents < 0 {
            return Err(invalid(format!("--cents: the spend cannot be negative (got {cents})")));
        }
    }
    let db = context::open_db(g).await?;
    let result = async {
        // Plans and teams are those of the catalogue the running processes serve.
        let catalogue = context::catalogue_in_force(g, &db).await?;
        let show = match &args.command {
            None => Some(parse_show(g, &catalogue, &args.show)?),
            Some(_) => None,
        };
        let ctx = Ctx { db: db.clone(), catalogue: Arc::new(catalogue).into(), clock: Arc::new(SystemClock) };
        run(g, &ctx, args.command, show).await
    }
    .await;
    db.close().await;
    result
}

/// The month and filter asked for, checked against the catalogue.
struct Show {
    month: Option<Month>,
    filter: Filter,
    csv: bool,
}

fn parse_show(g: &Globals, catalogue: &Catalogue, a: &ShowArgs) -> Result<Show, Failure> {
    if g.json && a.csv {
        return Err(invalid("--json and --csv: choose one output format".into()));
    }
    let month = a.month.as_deref().map(Month::parse).transpose().map_err(failure)?;
    let filter = Filter { plan: a.plan.clone(), team: a.team.clone() };
    j1msky_insights::usage::validate_filter(catalogue, &filter).map_err(|e| invalid(format!("--{e}")))?;
    Ok(Show { month, filter, csv: a.csv })
}

async fn run(g: &Globals, ctx: &Ctx, cmd: Option<KpiCommand>, show: Option<Show>) -> Result<(), Failure> {
    match cmd {
        None => {
            let Some(show) = show else { return Err(invalid("nothing to show".into())) };
            let month = show.month.unwrap_or_else(|| ctx.this_month());
            let k = kpis::for_month(ctx, month, &show.filter).await.map_err(failure)?;
            if g.json {
                output::json(&k);
            } else if show.csv {
                print!("{}", csv(&k)?);
            } else {
                print_tables(&k)?;
            }
            Ok(())
        }
        Some(KpiCommand::Rebuild) => {
            // Its steps' times at debug (`RUST_LOG=j1msky_insights=debug`), on stderr.
            context::init_logging(g);
            let started = Instant::now();
            let changes = rollups::rebuild(ctx).await.map_err(failure)?;
            let ms = started.elapsed().as_millis() as i64;
            let mut text = format!("rollups rebuilt from the source tables (MRR, usage, customers) in {ms} ms");
            if !changes.is_empty() {
                // Where the usage rollups were merged: how far they had drifted.
                let all: j1msky_insights::Changes = changes.iter().map(|(_, c)| *c).sum();
                text.push_str(&format!(
                    "; usage rollups: {} rows written ({} inserted, {} updated, {} deleted), {} already right",
                    all.written(),
                    all.inserted,
                    all.updated,
                    all.deleted,
                    all.kept
                ));
            }
            let by_table: serde_json::Map<String, Value> =
                changes.iter().map(|(t, c)| (t.to_string(), json!(c))).collect();
            output::done(g, &text, json!({"rebuilt": ["mrr", "usage", "people"], "millis": ms, "changes": by_table}));
            Ok(())
        }
        Some(KpiCommand::Spend(SpendCommand::Set { month, cents })) => {
            let m = Month::parse(&month).map_err(failure)?;
            people::set_spend(ctx, m, cents, &context::actor()).await.map_err(failure)?;
            let currency = ctx.catalogue.stripe.currency.to_uppercase();
            output::done(
                g,
                &format!("acquisition spend for {m} set to {}", money_cents(cents, &currency)),
                json!({"month": m.to_string(), "cents": cents}),
            );
            Ok(())
        }
        Some(KpiCommand::Spend(SpendCommand::List)) => {
            let rows: Vec<Value> = people::spend(ctx)
                .await
                .map_err(failure)?
                .into_iter()
                .map(|(m, cents)| json!({"month": m.to_string(), "cents": cents}))
                .collect();
            let currency = ctx.catalogue.stripe.currency.to_uppercase();
            output::list(g, &rows, &["month", "spend"], |r| {
                vec![r["month"].as_str().unwrap_or_default().to_string(), money_cents(int(r, "cents"), &currency)]
            });
            Ok(())
        }
    }
}

fn int(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_default()
}

/// The margin tables of the usage section, by name (their fields in `Usage`).
fn margin_tables(k: &Kpis) -> [(&'static str, &Vec<MarginRow>); 4] {
    [
        ("by_customer", &k.usage.by_customer),
        ("by_plan", &k.usage.by_plan),
        ("by_team", &k.usage.by_team),
        ("by_model", &k.usage.by_model),
    ]
}

/// Every number of the month as (section, field, value): nested objects by dotted path,
/// lists by their rows' key (`by_plan.pro.cents`); the margin tables are left to
/// [`margin_tables`]. A `None` rate is `null`.
fn numbers(k: &Kpis) -> Result<Vec<(String, String, Value)>, Failure> {
    let all = serde_json::to_value(k).map_err(anyhow::Error::from)?;
    let mut out = Vec::new();
    for section in ["mrr", "customers", "usage"] {
        let mut part = all[section].clone();
        if let (Some(map), "usage") = (part.as_object_mut(), section) {
            for name in MARGIN_LISTS {
                map.remove(name);
            }
        }
        let mut rows = Vec::new();
        flatten(&part, "", &mut rows);
        // The movements in the order they add up (JSON objects come back sorted by name).
        rows.sort_by_key(|(f, _)| MRR_ORDER.iter().position(|m| m == f).unwrap_or(MRR_ORDER.len()));
        out.extend(rows.into_iter().map(|(f, v)| (section.to_string(), f, v)));
    }
    Ok(out)
}

const MRR_ORDER: [&str; 7] = [
    "starting_cents",
    "new_cents",
    "expansion_cents",
    "reactivation_cents",
    "contraction_cents",
    "churn_cents",
    "ending_cents",
];

const MARGIN_LISTS: [&str; 4] = ["by_customer", "by_plan", "by_team", "by_model"];

fn flatten(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    let join = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    match v {
        Value::Object(map) => {
            for (name, child) in map {
                flatten(child, &join(name), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let key = ["key", "plan", "team", "stage", "month"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(Value::as_str))
                    .map_or_else(|| i.to_string(), str::to_string);
                let mut rows = Vec::new();
                flatten(item, "", &mut rows);
                for (f, value) in rows {
                    // The row's key is in the path already.
                    if value.as_str() != Some(key.as_str()) {
                        out.push((format!("{path}.{key}.{f}"), value));
                    }
                }
            }
        }
        Value::String(_) | Value::Bool(_) => {}
        other => out.push((path.to_string(), other.clone())),
    }
}

/// One cell, as the board's downloads write it (quoted, formulas neutralised).
fn csv_field(s: &str) -> String {
    j1msky_insights::csv::cell(s)
}

fn raw(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `section,field,value` rows, a blank line, then the margin tables in one table
/// (`table,key,label,revenue_micros,cost_micros,margin_micros,margin_bp,tasks`).
fn csv(k: &Kpis) -> Result<String, Failure> {
    let mut out = String::from("section,field,value\n");
    for (section, field, value) in numbers(k)? {
        out.push_str(&format!("{},{},{}\n", csv_field(&section), csv_field(&field), raw(&value)));
    }
    out.push('\n');
    out.push_str("table,key,label,revenue_micros,cost_micros,margin_micros,margin_bp,tasks\n");
    for (table, rows) in margin_tables(k) {
        for r in rows {
            out.push_str(&format!(
                "{table},{},{},{},{},{},{},{}\n",
                csv_field(&r.key),
                csv_field(&r.label),
                r.revenue_micros,
                r.cost_micros,
                r.margin_micros,
                r.margin_bp.map(|b| b.to_string()).unwrap_or_default(),
                r.tasks
            ));
        }
    }
    Ok(out)
}

/// Minor units as `1,234.56 USD`.
fn money_cents(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", thousands(abs / 100), abs % 100)
}

/// Micro-USD as `$1,234.56` (to the cent; sub-cent amounts keep four decimals).
fn money_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    if abs != 0 && abs < 10_000 {
        return format!("{sign}${}.{:06}", abs / 1_000_000, abs % 1_000_000);
    }
    let cents = (abs + 5_000) / 10_000;
    format!("{sign}${}.{:02}", thousands(cents / 100), cents % 100)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A number for people, by its field's unit suffix.
fn human(field: &str, v: &Value, currency: &str) -> String {
    let Some(n) = v.as_i64() else { return "-".into() };
    if field.ends_with("_cents") || field.ends_with(".cents") {
        money_cents(n, currency)
    } else if field.ends_with("_micros") {
        money_micros(n)
    } else if field.ends_with("_bp") {
        let sign = if n < 0 { "-" } else { "" };
        format!("{sign}{}.{:02} %", n.unsigned_abs() / 100, n.unsigned_abs() % 100)
    } else if field.ends_with("_x100") {
        format!("{}.{:02}:1", n / 100, (n % 100).abs())
    } else if field.ends_with("_ms") {
        format!("{n} ms")
    } else {
        n.to_string()
    }
}

fn print_tables(k: &Kpis) -> Result<(), Failure> {
    let currency = if k.mrr.currency.is_empty() { "USD".to_string() } else { k.mrr.currency.to_uppercase() };
    let scope = |v: &Option<String>| v.clone().unwrap_or_else(|| "all".into());
    println!("KPIs for {} (plan: {}, team: {})", k.month, scope(&k.filter.plan), scope(&k.filter.team));
    let rows: Vec<Vec<String>> = numbers(k)?
        .into_iter()
        .map(|(section, field, value)| {
            let shown = human(&field, &value, &currency);
            vec![section, field, shown, raw(&value)]
        })
        .collect();
    println!("{}", output::table(&["section", "number", "value", "raw"], rows));
    for (name, rows) in margin_tables(k) {
        if rows.is_empty() {
            continue;
        }
        println!("\nMargin {}", name.replace('_', " "));
        let lines = rows
            .iter()
            .map(|r| {
                vec![
                    r.label.clone(),
                    money_micros(r.revenue_micros),
                    money_micros(r.cost_micros),
                    money_micros(r.margin_micros),
                    human("margin_bp", &json!(r.margin_bp), &currency),
                    r.tasks.to_string(),
                ]
            })
            .collect();
        println!("{}", output::table(&["", "revenue", "cost", "margin", "margin %", "tasks"], lines));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_rates_read_as_people_write_them() {
        assert_eq!(money_cents(123_456_789, "USD"), "1,234,567.89 USD");
        assert_eq!(money_cents(-9_900, "EUR"), "-99.00 EUR");
        assert_eq!(money_micros(1_234_560_000), "$1,234.56");
        assert_eq!(money_micros(1_234), "$0.001234");
        assert_eq!(money_micros(0), "$0.00");
        assert_eq!(human("churn_rate_bp", &json!(-250), "USD"), "-2.50 %");
        assert_eq!(human("ltv_to_cac_x100", &json!(250), "USD"), "2.50:1");
        assert_eq!(human("arpa_cents", &Value::Null, "USD"), "-");
    }

    fn sample() -> Kpis {
        use j1msky_insights::kpis::{Cohort, Customers, Mrr, Nps, PlanMrr, Usage};
        let row = |key: &str, label: &str, revenue: i64, cost: i64| MarginRow {
            key: key.into(),
            label: label.into(),
            revenue_micros: revenue,
            cost_micros: cost,
            margin_micros: revenue - cost,
            margin_bp: Some((revenue - cost) * 10_000 / revenue),
            tasks: 3,
        };
        Kpis {
            month: Month { year: 2026, month: 10 },
            filter: Filter::default(),
            mrr: Mrr {
                currency: "usd".into(),
                starting_cents: 2_900,
                new_cents: 9_900,
                expansion_cents: 7_000,
                ending_cents: 19_800,
                by_plan: vec![PlanMrr { plan: "pro".into(), customers: 2, cents: 19_800 }],
                ..Mrr::default()
            },
            customers: Customers {
                churn_rate_bp: None,
                activation: vec![Cohort {
                    month: Month { year: 2026, month: 9 },
                    customers: 4,
                    activated: 3,
                    rate_bp: Some(7_500),
                }],
                nps: Some(Nps { responses: 2, promoters: 1, passives: 1, detractors: 0, score: 50 }),
                ..Customers::default()
            },
            usage: Usage {
                tasks_completed: 7,
                by_customer: vec![row("cus_1", "Acme, Inc.", 99_000_000, 12_500_000)],
                by_model: vec![row("claude-opus", "claude-opus", 10_000_000, 4_000_000)],
                ..Usage::default()
            },
        }
    }

    #[test]
    fn csv_has_a_row_per_number_lists_by_key_and_the_margin_tables() {
        let out = csv(&sample()).unwrap();
        let (numbers, margins) = out.split_once("\n\n").unwrap();
        let rows: Vec<&str> = numbers.lines().collect();
        assert_eq!(rows[0], "section,field,value");
        // The movements in the order they add up.
        assert_eq!(
            &rows[1..8],
            &[
                "mrr,starting_cents,2900",
                "mrr,new_cents,9900",
                "mrr,expansion_cents,7000",
                "mrr,reactivation_cents,0",
                "mrr,contraction_cents,0",
                "mrr,churn_cents,0",
                "mrr,ending_cents,19800",
            ]
        );
        for want in [
            "mrr,by_plan.pro.customers,2",
            "mrr,by_plan.pro.cents,19800",
            "customers,churn_rate_bp,",
            "customers,activation.2026-09.activated,3",
            "customers,activation.2026-09.rate_bp,7500",
            "customers,nps.score,50",
            "usage,tasks_completed,7",
        ] {
            assert!(rows.contains(&want), "{want} missing:\n{numbers}");
        }
        assert!(!numbers.contains("by_customer") && !numbers.contains("Acme"), "margin rows stay in their table");
        assert!(!numbers.contains("currency"), "text is not a number");
        let margins: Vec<&str> = margins.lines().collect();
        assert_eq!(
            margins,
            [
                "table,key,label,revenue_micros,cost_micros,margin_micros,margin_bp,tasks",
                "by_customer,cus_1,\"Acme, Inc.\",99000000,12500000,86500000,8737,3",
                "by_model,claude-opus,claude-opus,10000000,4000000,6000000,6000,3",
            ]
        );
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_neutralises_formulas() {
        assert_eq!(csv_field("Acme, Inc. \"the best\""), "\"Acme, Inc. \"\"the best\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
        // A customer named like a formula is text in a spreadsheet, not a formula.
        assert_eq!(csv_field("=HYPERLINK(\"http://x.test\")"), "\"'=HYPERLINK(\"\"http://x.test\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
    }
}
