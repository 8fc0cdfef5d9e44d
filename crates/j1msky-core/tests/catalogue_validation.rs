//! The catalogue: the shipped file carries the business plan's figures, and every kind
//! of mistake in an edited file is reported with its JSON path and the reason.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use j1msky_core::catalogue::{Catalogue, CatalogueError, TeamAllowance, SHIPPED};
use j1msky_core::Money;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_catalogues")
}

/// Each bad file, the JSON path its error must name, and a fragment of the reason.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("unknown_top_level_field", "colour", "unknown field `colour`"),
    ("unknown_plan_field", "plans.pro.seats", "unknown field `seats`"),
    ("wrong_type_calls_per_hour", "plans.starter.api_calls_per_hour", "invalid type: string"),
    ("price_as_float", "plans.pro.monthly_price", "as a string"),
    ("negative_price", "plans.starter.monthly_price", "negative"),
    ("too_precise_price", "models.kimi-k2.5.input_per_mtok", "more than 6 decimal places"),
    ("team_unknown_model", "teams.code.roles[0].model", "unknown model `gpt-9`"),
    ("fallback_cycle", "models.", "fallback cycle"),
    ("self_fallback", "models.claude-sonnet.fallback", "fallback cycle: claude-sonnet → claude-sonnet"),
    ("too_many_chosen_teams", "plans.starter.teams", "choose 7 teams but the catalogue defines only 4"),
    ("literal_stripe_secret", "stripe.secret_key_env", "looks like a secret key"),
    ("bad_env_name", "providers.moonshot.api_key_env", "not an environment variable name"),
    ("unknown_provider", "models.claude-opus.provider", "unknown provider `openrouter`"),
    ("impossible_date", "models.claude-opus.prices_checked", "2026-02-30"),
    ("alert_levels_not_ascending", "routing.alert_levels_percent[1]", "strictly ascending"),
    ("opus_outside_its_categories", "routing.categories.writing", "reserved for architecture, strategy"),
    ("opus_in_a_writing_team", "teams.content.roles[1].model", "reserved for architecture, strategy"),
    ("unknown_pause_plan", "pause_plan", "unknown plan `frozen`"),
    ("bad_time_zone", "business.time_zone", "not an IANA time zone"),
    ("missing_required_field", "routing", "missing field `daily_budget`"),
    ("unknown_provider_kind", "providers.anthropic.kind", "unknown variant `grpc`"),
    ("zero_daily_budget", "routing.daily_budget", "must be above zero"),
    ("zero_waiting_tasks", "max_waiting_tasks_per_customer", "must be between 1 and 1000000"),
    ("invalid_json", ".", "not valid JSON"),
    ("plan_unknown_model", "plans.starter.models[1]", "unknown model `gpt-9`"),
    ("bad_quiet_hours", "lifecycle.delivery.quiet_hours.end", "`25:00` is not a time HH:MM"),
];

#[test]
fn every_bad_file_is_rejected_naming_the_path_and_the_reason() {
    let mut wrong = Vec::new();
    for (file, path, fragment) in EXPECTED {
        let err = match Catalogue::load(&dir().join(format!("{file}.json"))) {
            Ok(_) => panic!("{file}: accepted"),
            Err(e) => e,
        };
        let issues = err.issues();
        if !issues.iter().any(|i| i.path.starts_with(path) && i.message.contains(fragment)) {
            wrong.push(format!("{file}: expected `{path}`: …{fragment}…, got {issues:?}"));
        }
        assert!(err.to_string().contains(fragment), "{file}: the message shows the reason");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_file_in_the_directory_has_an_expectation() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .expect("bad_catalogues dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let expected: BTreeSet<String> = EXPECTED.iter().map(|(f, _, _)| f.to_string()).collect();
    assert_eq!(on_disk, expected);
    assert!(expected.len() >= 12);
}

#[test]
fn several_mistakes_are_reported_together() {
    let text = SHIPPED
        .replace("\"monthly_price\": \"49.00\"", "\"monthly_price\": \"-49.00\"")
        .replace("\"pause_plan\": \"paused\"", "\"pause_plan\": \"nope\"")
        .replace("\"time_zone\": \"UTC\"", "\"time_zone\": \"Nowhere/Land\"");
    let err = Catalogue::from_json_str(&text).expect_err("three mistakes");
    let paths: BTreeSet<&str> = err.issues().iter().map(|i| i.path.as_str()).collect();
    assert!(
        paths.contains("plans.starter.monthly_price")
            && paths.contains("pause_plan")
            && paths.contains("business.time_zone"),
        "{paths:?}"
    );
}

#[test]
fn a_missing_file_is_an_io_error() {
    assert!(matches!(Catalogue::load(Path::new("/nonexistent/business.json")), Err(CatalogueError::Io { .. })));
}

#[test]
fn the_shipped_catalogue_carries_the_business_plan() {
    let from_file =
        Catalogue::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/business.json")).expect("valid file");
    let c = Catalogue::from_json_str(SHIPPED).expect("valid shipped catalogue");
    assert_eq!(c, from_file);
    let usd = |s: &str| s.parse::<Money>().expect("amount");

    let starter = &c.plans["starter"];
    assert_eq!(
        (starter.monthly_price, starter.teams, starter.tasks_per_month, starter.api_calls_per_hour),
        (usd("49"), TeamAllowance::Choose(2), Some(100), 50)
    );
    let pro = &c.plans["pro"];
    assert_eq!(
        (pro.monthly_price, pro.teams, pro.tasks_per_month, pro.api_calls_per_hour),
        (usd("99"), TeamAllowance::All, None, 200)
    );
    let ent = &c.plans["enterprise"];
    assert_eq!(
        (ent.monthly_price, ent.price_is_minimum, ent.teams, ent.custom_limits),
        (usd("299"), true, TeamAllowance::All, true)
    );
    assert!(ent.sla.as_ref().is_some_and(|s| s.priority > 0 && s.max_queue_wait_secs > 0));
    assert_eq!(c.plans["paused"].monthly_price, usd("5"));
    assert_eq!(c.pause_plan, "paused");
    assert!(c.trial_days > 0);
    let tiers: Vec<(&str, Money)> = c.pay_per_task.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(tiers, [("complex", usd("5.00")), ("medium", usd("2.00")), ("simple", usd("0.50"))]);

    let lead_models = |team: &str| c.teams[team].roles.iter().map(|r| r.model.as_str()).collect::<Vec<_>>();
    assert_eq!(lead_models("code"), ["kimi-k2.5", "claude-sonnet"]);
    // Opus for architecture and strategy only: the content team's editor is Sonnet (the
    // router would never run Opus for its writing anyway, and validation says so).
    assert_eq!(lead_models("content"), ["claude-sonnet", "claude-sonnet"]);
    assert_eq!(lead_models("research"), ["claude-sonnet", "kimi-k2.5"]);
    assert_eq!(lead_models("business"), ["claude-opus", "claude-sonnet"]);

    let price = |m: &str| (c.models[m].input_per_mtok, c.models[m].output_per_mtok);
    assert_eq!(price("kimi-k2.5"), (usd("0.60"), usd("3.00")));
    assert_eq!(price("claude-sonnet"), (usd("3"), usd("15")));
    assert_eq!(price("claude-opus"), (usd("5"), usd("25")));

    assert_eq!(c.routing.default_model, "kimi-k2.5");
    for (category, model) in [
        ("writing", "claude-sonnet"),
        ("analysis", "claude-sonnet"),
        ("architecture", "claude-opus"),
        ("strategy", "claude-opus"),
        ("code", "kimi-k2.5"),
        ("never-heard-of", "kimi-k2.5"),
    ] {
        assert_eq!(c.model_for_category(category), model, "{category}");
    }
    assert_eq!(c.routing.model_only_for["claude-opus"], ["architecture", "strategy"]);
    assert!(c.stripe.webhook_events.iter().any(|e| e == "customer.subscription.deleted"));
}

/// The shipped catalogue with `stripe.currency` set to `currency`.
fn with_currency(currency: &str) -> Result<Catalogue, CatalogueError> {
    let mut raw: serde_json::Value = serde_json::from_str(SHIPPED).expect("shipped JSON");
    raw["stripe"]["currency"] = serde_json::json!(currency);
    Catalogue::from_json_str(&raw.to_string())
}

#[test]
fn only_currencies_with_two_minor_digits_are_accepted_because_money_is_shown_with_two() {
    for ok in ["usd", "eur", "gbp", "chf"] {
        assert_eq!(with_currency(ok).expect(ok).stripe.currency, ok);
    }
    // Zero-decimal (an amount of 500 is ¥500, not ¥5.00) and three-decimal currencies
    // would be charged and shown 100 or 10 times off: refused, saying why.
    for (bad, why) in
        [("jpy", "zero-decimal"), ("krw", "zero-decimal"), ("kwd", "three-decimal"), ("bhd", "three-decimal")]
    {
        let err = with_currency(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
        let issue = err.issues().iter().find(|i| i.path == "stripe.currency").unwrap_or_else(|| panic!("{bad}: {err}"));
        assert!(issue.message.contains(bad) && issue.message.contains(why), "{bad}: {}", issue.message);
    }
}

#[test]
fn direct_api_calls_are_never_sold_below_their_model_cost() {
    let with_markup = |m: u32| {
        let mut raw: serde_json::Value = serde_json::from_str(SHIPPED).expect("shipped JSON");
        raw["api_calls_markup_percent"] = serde_json::json!(m);
        Catalogue::from_json_str(&raw.to_string())
    };
    assert_eq!(with_markup(100).expect("at cost").api_calls_markup_percent, 100);
    for bad in [0, 99, 10_001] {
        let err = with_markup(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(err.issues().iter().any(|i| i.path == "api_calls_markup_percent"), "{bad}: {err}");
    }
    // Left out, it is three times the cost.
    let mut raw: serde_json::Value = serde_json::from_str(SHIPPED).expect("shipped JSON");
    raw.as_object_mut().expect("object").remove("api_calls_markup_percent");
    assert_eq!(Catalogue::from_json_str(&raw.to_string()).expect("default").api_calls_markup_percent, 300);
}

#[test]
fn a_pay_per_task_customer_s_hourly_cap_is_at_least_one_and_fifty_when_left_out() {
    let mut raw: serde_json::Value = serde_json::from_str(SHIPPED).expect("shipped JSON");
    assert_eq!(Catalogue::from_json_str(SHIPPED).expect("shipped").pay_per_task_calls_per_hour, 50);
    raw["pay_per_task_calls_per_hour"] = serde_json::json!(0);
    let err = Catalogue::from_json_str(&raw.to_string()).expect_err("zero");
    assert!(err.issues().iter().any(|i| i.path == "pay_per_task_calls_per_hour"), "{err}");
    raw["pay_per_task_calls_per_hour"] = serde_json::json!("many");
    assert!(Catalogue::from_json_str(&raw.to_string()).is_err());
    raw.as_object_mut().expect("object").remove("pay_per_task_calls_per_hour");
    assert_eq!(Catalogue::from_json_str(&raw.to_string()).expect("default").pay_per_task_calls_per_hour, 50);
}

#[test]
fn a_plan_s_monthly_model_budget_is_more_than_nothing_and_optional() {
    let mut raw: serde_json::Value = serde_json::from_str(SHIPPED).expect("shipped JSON");
    let shipped = Catalogue::from_json_str(SHIPPED).expect("shipped");
    // The shipped plans spend on a customer's models at most what the customer pays.
    for (id, plan) in &shipped.plans {
        if !plan.custom_limits {
            assert_eq!(plan.monthly_model_budget, Some(plan.monthly_price), "{id}");
        }
    }
    raw["plans"]["pro"]["monthly_model_budget"] = serde_json::json!("0.00");
    let err = Catalogue::from_json_str(&raw.to_string()).expect_err("zero");
    assert!(err.issues().iter().any(|i| i.path == "plans.pro.monthly_model_budget"), "{err}");
    raw["plans"]["pro"]["monthly_model_budget"] = serde_json::json!("lots");
    assert!(Catalogue::from_json_str(&raw.to_string()).is_err());
    raw["plans"]["pro"].as_object_mut().expect("object").remove("monthly_model_budget");
    let without = Catalogue::from_json_str(&raw.to_string()).expect("left out");
    assert_eq!(without.plans["pro"].monthly_model_budget, None);
}

#[test]
fn a_customer_s_share_of_the_day_is_a_percentage_and_optional() {
    let mut raw: serde_json::Value = serde_json::from_str(SHIPPED).expect("shipped JSON");
    for bad in [0, 101] {
        raw["routing"]["customer_daily_share_percent"] = serde_json::json!(bad);
        let err = Catalogue::from_json_str(&raw.to_string()).expect_err("out of range");
        assert!(
            err.issues()
                .iter()
                .any(|i| i.path == "routing.customer_daily_share_percent" && i.message.contains("between 1 and 100")),
            "{err}"
        );
    }
    raw["routing"]["customer_daily_share_percent"] = serde_json::json!(100);
    assert_eq!(
        Catalogue::from_json_str(&raw.to_string()).expect("all of it").routing.customer_daily_share_percent,
        Some(100)
    );
    raw["routing"].as_object_mut().expect("object").remove("customer_daily_share_percent");
    let without = Catalogue::from_json_str(&raw.to_string()).expect("left out");
    assert_eq!(without.routing.customer_daily_share_percent, None);
}

#[test]
fn an_sla_s_priority_is_between_1_and_999() {
    let mut raw: serde_json::Value = serde_json::from_str(SHIPPED).expect("shipped JSON");
    for bad in [0, 1000] {
        raw["plans"]["enterprise"]["sla"]["priority"] = serde_json::json!(bad);
        let err = Catalogue::from_json_str(&raw.to_string()).expect_err("out of range");
        assert!(
            err.issues().iter().any(|i| i.path == "plans.enterprise.sla.priority" && i.message.contains("1 and 999")),
            "{err}"
        );
    }
    raw["plans"]["enterprise"]["sla"]["priority"] = serde_json::json!(999);
    assert!(Catalogue::from_json_str(&raw.to_string()).is_ok());
}
