//! Checks that the types alone cannot express: references between sections, cycles,
//! ranges, and secrets pasted where only variable names belong.

use std::collections::{BTreeMap, BTreeSet};

use super::{Catalogue, ConfigIssue, ModelOutsidePlan, TeamAllowance};

/// Prefixes of Stripe and provider secrets that must never be in the file.
const SECRET_PREFIXES: &[&str] = &["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_", "sk-ant-", "sk-proj-"];

/// Finds strings anywhere in the document that look like secret keys.
pub(super) fn literal_secrets(raw: &serde_json::Value) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    walk(raw, String::new(), &mut issues);
    issues
}

fn walk(value: &serde_json::Value, path: String, issues: &mut Vec<ConfigIssue>) {
    match value {
        serde_json::Value::String(s) => {
            if let Some(prefix) = SECRET_PREFIXES.iter().find(|p| s.trim().starts_with(*p)) {
                issues.push(ConfigIssue::new(
                    display_path(&path),
                    format!(
                        "this looks like a secret key (`{prefix}…`); secrets are never stored in the catalogue: \
                         put it in an environment variable and write the variable's name here"
                    ),
                ));
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{path}[{i}]"), issues);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                walk(v, child, issues);
            }
        }
        _ => {}
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        path.to_string()
    }
}

/// Cross-references and ranges of a structurally valid catalogue.
pub(super) fn semantics(c: &Catalogue) -> Vec<ConfigIssue> {
    let mut out = Vec::new();
    business(c, &mut out);
    plans(c, &mut out);
    teams(c, &mut out);
    models(c, &mut out);
    providers(c, &mut out);
    routing(c, &mut out);
    stripe(c, &mut out);
    super::lifecycle::validate(c, &mut out);
    super::alerts::validate(c, &mut out);
    out
}

fn push(out: &mut Vec<ConfigIssue>, path: impl Into<String>, message: impl Into<String>) {
    out.push(ConfigIssue::new(path, message));
}

fn known<T>(map: &BTreeMap<String, T>) -> String {
    map.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn is_slug(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '_' | '.'))
        && id.starts_with(|ch: char| ch.is_ascii_lowercase())
}

fn check_ids<T>(out: &mut Vec<ConfigIssue>, section: &str, map: &BTreeMap<String, T>) {
    if map.is_empty() {
        push(out, section, format!("at least one entry is required in `{section}`"));
    }
    for id in map.keys() {
        if !is_slug(id) {
            push(
                out,
                format!("{section}.{id}"),
                "ids are lowercase letters, digits, `-`, `_` or `.`, starting with a letter (at most 40)",
            );
        }
    }
}

fn non_blank(out: &mut Vec<ConfigIssue>, path: String, value: &str) {
    if value.trim().is_empty() {
        push(out, path, "must not be empty");
    }
}

fn business(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    non_blank(out, "business.name".into(), &c.business.name);
    if !looks_like_email(&c.business.support_email) {
        push(out, "business.support_email", format!("`{}` is not an email address", c.business.support_email));
    }
    if c.business.time_zone.parse::<chrono_tz::Tz>().is_err() {
        push(
            out,
            "business.time_zone",
            format!("`{}` is not an IANA time zone (e.g. UTC, Europe/Berlin)", c.business.time_zone),
        );
    }
    if !(1..=1_000_000).contains(&c.max_waiting_tasks_per_customer) {
        push(
            out,
            "max_waiting_tasks_per_customer",
            format!("{} must be between 1 and 1000000", c.max_waiting_tasks_per_customer),
        );
    }
    if c.trial_days > 365 {
        push(out, "trial_days", format!("{} days is longer than a year", c.trial_days));
    }
}

fn plans(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    check_ids(out, "plans", &c.plans);
    let team_count = c.teams.len();
    for (id, plan) in &c.plans {
        let at = |field: &str| format!("plans.{id}.{field}");
        non_blank(out, at("name"), &plan.name);
        if plan.monthly_price.is_negative() {
            push(out, at("monthly_price"), format!("price {} is negative", plan.monthly_price));
        }
        if let Some(budget) = plan.monthly_model_budget {
            if budget.micros() <= 0 {
                push(
                    out,
                    at("monthly_model_budget"),
                    format!("budget {budget} would refuse every call; omit it for no limit per customer"),
                );
            }
        }
        if let TeamAllowance::Choose(n) = plan.teams {
            if n as usize > team_count {
                push(
                    out,
                    at("teams"),
                    format!("plan lets the customer choose {n} teams but the catalogue defines only {team_count}"),
                );
            }
        }
        if let Some(models) = &plan.models {
            if models.is_empty() {
                push(out, at("models"), "an empty model list would refuse every call; omit it to allow all models");
            }
            for (i, m) in models.iter().enumerate() {
                if !c.models.contains_key(m) {
                    push(
                        out,
                        format!("plans.{id}.models[{i}]"),
                        format!("unknown model `{m}`; models are: {}", known(&c.models)),
                    );
                } else if models[..i].contains(m) {
                    push(out, format!("plans.{id}.models[{i}]"), format!("`{m}` is listed twice"));
                }
            }
        }
        if plan.model_outside_plan == ModelOutsidePlan::Reroute && plan.models.is_none() {
            push(
                out,
                at("model_outside_plan"),
                "`reroute` needs a `models` list to reroute into; without one every model is in the plan",
            );
        }
        if let Some(sla) = &plan.sla {
            if sla.max_queue_wait_secs == 0 {
                push(out, at("sla.max_queue_wait_secs"), "must be at least 1 second");
            }
            // The SLA level is the major part of a queued task's rank (j1msky_tasks::Priority).
            if !(1..=999).contains(&sla.priority) {
                push(out, at("sla.priority"), format!("{} is not between 1 and 999", sla.priority));
            }
        }
    }
    if !c.plans.contains_key(&c.pause_plan) {
        push(out, "pause_plan", format!("unknown plan `{}`; plans are: {}", c.pause_plan, known(&c.plans)));
    }
    check_ids(out, "pay_per_task", &c.pay_per_task);
    if c.api_calls_markup_percent < 100 || c.api_calls_markup_percent > 10_000 {
        push(
            out,
            "api_calls_markup_percent",
            format!("{} is outside 100..=10000 (below 100 would sell calls under cost)", c.api_calls_markup_percent),
        );
    }
    if c.pay_per_task_calls_per_hour == 0 {
        push(out, "pay_per_task_calls_per_hour", "must be at least 1 (a pay-per-task customer could make no call)");
    }
    for (tier, price) in &c.pay_per_task {
        if price.micros() <= 0 {
            push(out, format!("pay_per_task.{tier}"), format!("price {price} must be above zero"));
        }
    }
}

fn stripe_terms(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    let s = &c.stripe;
    if s.api_version.len() < 10 || !s.api_version.starts_with("20") {
        push(out, "stripe.api_version", format!("`{}` is not a Stripe API version such as 2024-06-20", s.api_version));
    }
    if s.currency.len() != 3 || !s.currency.chars().all(|ch| ch.is_ascii_lowercase()) {
        push(out, "stripe.currency", format!("`{}` is not a lowercase three-letter currency such as usd", s.currency));
    } else if let Some(kind) = minor_digits_other_than_two(&s.currency) {
        push(
            out,
            "stripe.currency",
            format!(
                "`{}` is a {kind} currency at Stripe; prices are amounts with two decimals (Stripe minor units =                  cents), so it would be charged and shown wrongly: use a two-decimal currency such as usd or eur",
                s.currency
            ),
        );
    }
    if s.past_due_grace_days > 60 {
        push(out, "stripe.past_due_grace_days", format!("{} days is too long; at most 60", s.past_due_grace_days));
    }
    check_ids(out, "stripe.offers", &s.offers);
    for (id, offer) in &s.offers {
        non_blank(out, format!("stripe.offers.{id}.name"), &offer.name);
        if !(1..=100).contains(&offer.percent_off) {
            push(out, format!("stripe.offers.{id}.percent_off"), "must be between 1 and 100");
        }
        if !(1..=36).contains(&offer.months) {
            push(out, format!("stripe.offers.{id}.months"), "must be between 1 and 36");
        }
    }
}

/// Stripe's currencies whose minor unit is not a hundredth (its zero-decimal and
/// three-decimal lists; ISK has no minor unit either).
fn minor_digits_other_than_two(currency: &str) -> Option<&'static str> {
    const ZERO: &[&str] = &[
        "bif", "clp", "djf", "gnf", "isk", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof",
        "xpf",
    ];
    const THREE: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];
    if ZERO.contains(&currency) {
        Some("zero-decimal")
    } else if THREE.contains(&currency) {
        Some("three-decimal")
    } else {
        None
    }
}

fn teams(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    check_ids(out, "teams", &c.teams);
    for (id, team) in &c.teams {
        non_blank(out, format!("teams.{id}.name"), &team.name);
        if team.roles.is_empty() {
            push(out, format!("teams.{id}.roles"), "a team needs at least one role");
        }
        let mut seen = BTreeSet::new();
        for (i, role) in team.roles.iter().enumerate() {
            let at = |field: &str| format!("teams.{id}.roles[{i}].{field}");
            non_blank(out, at("role"), &role.role);
            non_blank(out, at("purpose"), &role.purpose);
            if !seen.insert(role.role.as_str()) {
                push(out, at("role"), format!("role `{}` appears twice in this team", role.role));
            }
            if !c.models.contains_key(&role.model) {
                push(out, at("model"), format!("unknown model `{}`; models are: {}", role.model, known(&c.models)));
            }
            // The router never runs a reserved model outside its categories: a role that
            // names one in another team would silently run on something else.
            let category = team.category.as_deref().unwrap_or(id);
            if let Some(allowed) = c.routing.model_only_for.get(&role.model) {
                if !allowed.iter().any(|k| k == category) {
                    push(
                        out,
                        at("model"),
                        format!(
                            "model `{}` is reserved for {} (routing.model_only_for); this team's tasks are `{category}`",
                            role.model,
                            allowed.join(", ")
                        ),
                    );
                }
            }
            if role.max_tokens == 0 || role.max_tokens > 200_000 {
                push(out, at("max_tokens"), "must be between 1 and 200000");
            }
            if role.reviews && i == 0 {
                push(out, at("reviews"), "the first role has no earlier step to send work back to");
            }
        }
        for (tid, t) in &team.templates {
            let at = |field: &str| format!("teams.{id}.templates.{tid}.{field}");
            non_blank(out, at("title"), &t.title);
            non_blank(out, at("prompt"), &t.prompt);
            let mut names = BTreeSet::new();
            for f in &t.fields {
                if f.is_empty() || !f.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                    push(out, at("fields"), format!("field `{f}` must be letters, digits and `_`"));
                }
                if !names.insert(f.as_str()) {
                    push(out, at("fields"), format!("field `{f}` appears twice"));
                }
            }
        }
    }
}

fn models(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    check_ids(out, "models", &c.models);
    for (id, m) in &c.models {
        let at = |field: &str| format!("models.{id}.{field}");
        non_blank(out, at("name"), &m.name);
        non_blank(out, at("upstream"), &m.upstream);
        if !c.providers.contains_key(&m.provider) {
            push(
                out,
                at("provider"),
                format!("unknown provider `{}`; providers are: {}", m.provider, known(&c.providers)),
            );
        }
        for (field, price) in [("input_per_mtok", m.input_per_mtok), ("output_per_mtok", m.output_per_mtok)] {
            if price.is_negative() {
                push(out, at(field), format!("price {price} is negative"));
            }
        }
        if m.context_window == 0 {
            push(out, at("context_window"), "must be at least 1 token");
        }
        if let Err(why) = check_date(&m.prices_checked) {
            push(out, at("prices_checked"), why);
        }
        if let Some(fb) = &m.fallback {
            if !c.models.contains_key(fb) {
                push(out, at("fallback"), format!("unknown model `{fb}`; models are: {}", known(&c.models)));
            }
        }
    }
    fallback_cycles(c, out);
}

/// Each model's fallback chain must end; a cycle would retry forever.
fn fallback_cycles(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    let mut reported = BTreeSet::new();
    for start in c.models.keys() {
        let mut chain = vec![start.as_str()];
        let mut current = start.as_str();
        while let Some(next) = c.models.get(current).and_then(|m| m.fallback.as_deref()) {
            if let Some(pos) = chain.iter().position(|m| *m == next) {
                let mut cycle: Vec<&str> = chain[pos..].to_vec();
                let key: BTreeSet<&str> = cycle.iter().copied().collect();
                if reported.insert(key.into_iter().map(str::to_string).collect::<Vec<_>>()) {
                    cycle.push(next);
                    push(
                        out,
                        format!("models.{}.fallback", chain[chain.len() - 1]),
                        format!("fallback cycle: {}", cycle.join(" → ")),
                    );
                }
                break;
            }
            if !c.models.contains_key(next) {
                break;
            }
            chain.push(next);
            current = next;
        }
    }
}

fn providers(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    check_ids(out, "providers", &c.providers);
    for (id, p) in &c.providers {
        let at = |field: &str| format!("providers.{id}.{field}");
        if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) || p.base_url.len() < 10 {
            push(out, at("base_url"), format!("`{}` is not an http(s) URL", p.base_url));
        }
        check_env_name(out, at("api_key_env"), &p.api_key_env);
        if p.requests_per_hour == 0 {
            push(out, at("requests_per_hour"), "must be at least 1");
        }
    }
}

fn routing(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    let r = &c.routing;
    let model_ref = |out: &mut Vec<ConfigIssue>, path: String, model: &str| {
        if !c.models.contains_key(model) {
            push(out, path, format!("unknown model `{model}`; models are: {}", known(&c.models)));
        }
    };
    model_ref(out, "routing.default_model".into(), &r.default_model);
    model_ref(out, "routing.economy_model".into(), &r.economy_model);
    for (category, model) in &r.categories {
        model_ref(out, format!("routing.categories.{category}"), model);
        if let Some(allowed) = r.model_only_for.get(model) {
            if !allowed.contains(category) {
                push(
                    out,
                    format!("routing.categories.{category}"),
                    format!("model `{model}` is reserved for {} (routing.model_only_for)", allowed.join(", ")),
                );
            }
        }
    }
    for model in r.model_only_for.keys() {
        model_ref(out, format!("routing.model_only_for.{model}"), model);
    }
    if r.model_only_for.contains_key(&r.default_model) {
        push(
            out,
            "routing.default_model",
            format!("`{}` is reserved for some categories and cannot be the default", r.default_model),
        );
    }
    if r.hourly_request_cap == 0 {
        push(out, "routing.hourly_request_cap", "must be at least 1");
    }
    if r.daily_budget.micros() <= 0 {
        push(out, "routing.daily_budget", format!("budget {} must be above zero", r.daily_budget));
    }
    if let Some(share) = r.customer_daily_share_percent {
        if !(1..=100).contains(&share) {
            push(out, "routing.customer_daily_share_percent", format!("{share}% is not between 1 and 100"));
        }
    }
    if r.alert_levels_percent.is_empty() {
        push(out, "routing.alert_levels_percent", "give at least one alert level");
    }
    for (i, pair) in r.alert_levels_percent.windows(2).enumerate() {
        if pair[1] <= pair[0] {
            push(out, format!("routing.alert_levels_percent[{}]", i + 1), "alert levels must be strictly ascending");
        }
    }
    for (i, level) in r.alert_levels_percent.iter().enumerate() {
        if *level == 0 || *level > 1000 {
            push(out, format!("routing.alert_levels_percent[{i}]"), format!("{level}% is not between 1 and 1000"));
        }
    }
}

fn stripe(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    let s = &c.stripe;
    stripe_terms(c, out);
    check_env_name(out, "stripe.secret_key_env".into(), &s.secret_key_env);
    check_env_name(out, "stripe.webhook_secret_env".into(), &s.webhook_secret_env);
    if let Some(name) = &s.publishable_key_env {
        check_env_name(out, "stripe.publishable_key_env".into(), name);
    }
    for (i, event) in s.webhook_events.iter().enumerate() {
        let ok = event.contains('.') && event.chars().all(|ch| ch.is_ascii_lowercase() || ch == '.' || ch == '_');
        if !ok {
            push(
                out,
                format!("stripe.webhook_events[{i}]"),
                format!("`{event}` is not a Stripe event type (e.g. customer.subscription.updated)"),
            );
        }
    }
}

fn check_env_name(out: &mut Vec<ConfigIssue>, path: String, name: &str) {
    let ok = !name.is_empty()
        && name.starts_with(|ch: char| ch.is_ascii_uppercase() || ch == '_')
        && name.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_');
    if !ok {
        push(out, path, format!("`{name}` is not an environment variable name (uppercase letters, digits and `_`)"));
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.contains('@') && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// A calendar date `YYYY-MM-DD`.
fn check_date(s: &str) -> Result<(), String> {
    let bad = || format!("`{s}` is not a date in the form YYYY-MM-DD");
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return Err(bad());
    }
    let year: i64 = parts[0].parse().map_err(|_| bad())?;
    let month: u32 = parts[1].parse().map_err(|_| bad())?;
    let day: u32 = parts[2].parse().map_err(|_| bad())?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(2000..=2200).contains(&year) || day == 0 || day > days_in_month {
        return Err(bad());
    }
    Ok(())
}
