//! The model gateway end to end: customer API calls over HTTP through the real server,
//! routed, capped, budgeted and metered, against the simulated provider on loopback, on
//! the storage engine the test run selects.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::spawn_app_with_gateway;
use j1msky_audit::Actor;
use j1msky_core::windows;
use j1msky_core::Money;
use j1msky_gateway::ledger::{self, Attempt};
use j1msky_gateway::policy::{self, Mode};
use j1msky_gateway::{controls, limits};
use j1msky_sim::SimConfig;
use serde_json::{json, Value};

fn chat(content: &str) -> Value {
    json!({"model": "auto", "messages": [{"role": "user", "content": content}], "max_tokens": 100})
}

/// The simulator's token count for one user message (see `j1msky_sim`).
fn sim_input_tokens(content: &str) -> i64 {
    3 + 4 + (content.len() as u64).div_ceil(4) as i64
}

async fn post(app: &common::TestApp, path: &str, key: &str, category: Option<&str>, body: &Value) -> reqwest::Response {
    let mut r = reqwest::Client::new().post(app.url(path)).bearer_auth(key).json(body);
    if let Some(c) = category {
        r = r.header("x-j1msky-category", c);
    }
    r.send().await.expect("request")
}

async fn rows_of(app: &common::TestApp, resp: &reqwest::Response) -> Vec<Attempt> {
    let id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).expect("x-request-id").to_string();
    app.gateway().flush().await;
    ledger::for_request(&app.db, &id).await.expect("ledger")
}

async fn ledger_count(app: &common::TestApp) -> i64 {
    app.gateway().flush().await;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM llm_calls").fetch_one(app.db.pool()).await.expect("count");
    n
}

async fn reserved_now(app: &common::TestApp) -> i64 {
    app.gateway().reserved_now().await.expect("reserved").micros()
}

async fn set_mode(app: &common::TestApp, mode: Mode) {
    controls::set_mode(&app.db, &Actor::cli(), mode, "test", app.now()).await.expect("mode");
    app.gateway().controls_changed();
}

#[tokio::test]
async fn calls_are_routed_by_category_and_metered_at_the_dated_prices() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (customer, key) = app.customer_with_key("Acme", "pro").await;
    let text = "Design the module boundaries for our billing service";

    for (category, model, upstream) in [
        (None, "kimi-k2.5", "kimi-k2.5"),
        (Some("writing"), "claude-sonnet", "claude-sonnet-4-5"),
        (Some("architecture"), "claude-opus", "claude-opus-4-5"),
    ] {
        let resp = post(&app, "/v1/chat/completions", &key, category, &chat(text)).await;
        assert_eq!(resp.status(), 200, "{category:?}");
        assert_eq!(resp.headers()["x-j1msky-model"], model);
        let rows = rows_of(&app, &resp).await;
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["model"], model);
        assert_eq!(body["object"], "chat.completion");
        assert!(body["choices"][0]["message"]["content"].as_str().expect("text").starts_with("[simulated]"));
        assert_eq!(body["usage"]["prompt_tokens"], sim_input_tokens(text));
        assert_eq!(body["usage"]["completion_tokens"], 32);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.customer_id.as_deref(), Some(customer.as_str()));
        assert_eq!((row.model_used.as_str(), row.model_requested.as_str()), (model, model));
        assert_eq!((row.input_tokens, row.output_tokens), (sim_input_tokens(text), 32));
        assert_eq!(row.cost, policy::cost(&app.catalogue, model, sim_input_tokens(text) as u64, 32));
        assert!(row.cost.micros() > 0);
        assert_eq!(row.outcome, "ok");
        assert_eq!(row.attempt, 1);
        let stats = app.sim_stats().await;
        assert_eq!(stats.by_model.get(upstream), Some(&1), "{upstream} called once: {stats:?}");
    }
    // Opus is only for architecture and strategy: asking for it by name for writing falls
    // down to Sonnet, and the ledger says why.
    let mut asked = chat(text);
    asked["model"] = json!("claude-opus");
    let resp = post(&app, "/v1/chat/completions", &key, Some("writing"), &asked).await;
    assert_eq!(resp.status(), 200);
    let rows = rows_of(&app, &resp).await;
    assert_eq!(rows[0].model_requested, "claude-opus");
    assert_eq!(rows[0].model_used, "claude-sonnet");
    assert!(rows[0].fallback_reason.as_deref().unwrap_or("").contains("reserved for"), "{rows:?}");
    // Nothing stays reserved once calls are settled; the day's spend is the ledger's sum.
    assert_eq!(reserved_now(&app).await, 0);
    let (day, _) = windows::day(chrono_tz::UTC, app.now());
    app.gateway().flush().await;
    let (spent, _) = limits::budget_state(&app.db, "business:day", day).await.expect("budget");
    let (sum,): (i64,) = sqlx::query_as("SELECT CAST(SUM(cost_micros) AS BIGINT) FROM llm_calls")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(spent.micros(), sum);
}

#[tokio::test]
async fn modes_pause_opus_or_force_the_cheap_model_and_plans_limit_models() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (_, key) = app.customer_with_key("Acme", "pro").await;

    set_mode(&app, Mode::OpusPaused).await;
    let resp = post(&app, "/v1/chat/completions", &key, Some("strategy"), &chat("Plan the year")).await;
    assert_eq!(resp.status(), 200);
    let rows = rows_of(&app, &resp).await;
    assert_eq!((rows[0].model_requested.as_str(), rows[0].model_used.as_str()), ("claude-opus", "claude-sonnet"));
    assert!(rows[0].fallback_reason.as_deref().unwrap_or("").contains("opus_paused"), "{rows:?}");

    set_mode(&app, Mode::CheapOnly).await;
    for category in ["strategy", "writing", "code"] {
        let resp = post(&app, "/v1/chat/completions", &key, Some(category), &chat("Plan the year")).await;
        assert_eq!(resp.headers()["x-j1msky-model"], "kimi-k2.5", "{category} in cheap-only mode");
    }
    set_mode(&app, Mode::Normal).await;

    // The paused plan allows only the economy model.
    let (_, paused_key) = app.customer_with_key("Sleepy", "paused").await;
    // `/v1/models` lists what the plan allows: the paused plan, Kimi (and `auto`); Pro, all.
    let listed = |key: String| {
        let app = &app;
        async move {
            let resp = reqwest::Client::new().get(app.url("/v1/models")).bearer_auth(key).send().await.expect("models");
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.expect("json");
            let mut ids: Vec<String> = body["data"]
                .as_array()
                .expect("data")
                .iter()
                .filter_map(|m| m["id"].as_str().map(String::from))
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(listed(paused_key.clone()).await, vec!["auto", "kimi-k2.5"]);
    let all = listed(key.clone()).await;
    assert_eq!(all.len(), app.catalogue.models.len() + 1, "{all:?}");
    assert!(all.contains(&"claude-opus".to_string()));
    let resp = post(&app, "/v1/chat/completions", &paused_key, Some("writing"), &chat("Draft a post")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-j1msky-model"], "kimi-k2.5");
    let mut opus = chat("Plan");
    opus["model"] = json!("claude-opus");
    let resp = post(&app, "/v1/chat/completions", &paused_key, Some("strategy"), &opus).await;
    // Naming a model outside the plan is refused (the plan does not say to reroute).
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_not_in_plan", "{body}");
}

#[tokio::test]
async fn upstream_rate_limits_and_errors_fall_back_and_every_attempt_is_a_ledger_row() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (_, key) = app.customer_with_key("Acme", "pro").await;

    // 429 on Opus: switch to the cheaper fallback at once.
    app.script_faults(json!({"fault": "429:30", "model": "claude-opus-4-5"})).await;
    let resp = post(&app, "/v1/chat/completions", &key, Some("architecture"), &chat("Design it")).await;
    assert_eq!(resp.status(), 200);
    let rows = rows_of(&app, &resp).await;
    let summary: Vec<(&str, &str, Option<&str>)> =
        rows.iter().map(|r| (r.model_used.as_str(), r.outcome.as_str(), r.fallback_reason.as_deref())).collect();
    assert_eq!(summary, vec![("claude-opus", "rate_limited", None), ("claude-sonnet", "ok", Some("rate_limited"))]);
    assert_eq!(rows[0].cost, Money::ZERO, "a refused attempt costs nothing");
    assert_eq!(rows.iter().map(|r| r.attempt).collect::<Vec<_>>(), vec![1, 2]);

    // 500 then 529 on Sonnet: retried on the same model, then answered.
    app.script_faults(
        json!([{"fault": "500", "model": "claude-sonnet-4-5"}, {"fault": "529", "model": "claude-sonnet-4-5"}]),
    )
    .await;
    let resp = post(&app, "/v1/chat/completions", &key, Some("writing"), &chat("Write it")).await;
    assert_eq!(resp.status(), 200);
    let rows = rows_of(&app, &resp).await;
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["server_error", "overloaded", "ok"]);
    assert!(rows.iter().all(|r| r.model_used == "claude-sonnet"));

    // Sonnet keeps failing: three tries, then its fallback (Kimi) answers.
    app.script_faults(json!({"fault": "503", "model": "claude-sonnet-4-5", "times": 3})).await;
    let resp = post(&app, "/v1/chat/completions", &key, Some("writing"), &chat("Write it")).await;
    assert_eq!(resp.status(), 200);
    let rows = rows_of(&app, &resp).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3].model_used, "kimi-k2.5");
    assert_eq!(rows[3].fallback_reason.as_deref(), Some("overloaded"));

    // A success closes the books on those failures (the breaker counts failures in a row).
    let resp = post(&app, "/v1/chat/completions", &key, Some("writing"), &chat("Write it")).await;
    assert_eq!(resp.headers()["x-j1msky-model"], "claude-sonnet");
    // A timeout is not tried again on the same model (it would most likely run the clock
    // out again, and each try may be billed): the fallback answers at once, though Sonnet
    // would have answered a second try.
    app.script_faults(json!({"fault": "timeout", "model": "claude-sonnet-4-5", "times": 1})).await;
    let resp = post(&app, "/v1/chat/completions", &key, Some("writing"), &chat("Write it")).await;
    assert_eq!(resp.status(), 200);
    let rows = rows_of(&app, &resp).await;
    let summary: Vec<(&str, &str, Option<&str>)> =
        rows.iter().map(|r| (r.model_used.as_str(), r.outcome.as_str(), r.fallback_reason.as_deref())).collect();
    assert_eq!(summary, vec![("claude-sonnet", "timeout", None), ("kimi-k2.5", "ok", Some("timeout"))]);
    // The unanswered try is booked at the most it could have cost (it may be billed), not
    // at nothing: no more than Sonnet's price for the request's whole `max_tokens`.
    assert!(rows[0].cost > Money::ZERO, "{:?}", rows[0]);
    let most = j1msky_gateway::policy::max_cost(&app.catalogue, "claude-sonnet", 100, 100);
    assert!(rows[0].cost <= most, "{:?} against {most:?}", rows[0]);
    // With Kimi's answer the call still costs no more than it reserved (Sonnet's most):
    // the timeout leaves room for the fallback that answered.
    let total = rows.iter().fold(Money::ZERO, |t, r| t.checked_add(r.cost).unwrap());
    assert!(total <= most, "{total:?} against {most:?}");
    // Without a fallback the caller hears of the timeout after one try, as a 504.
    app.script_faults(json!({"fault": "timeout", "model": "kimi-k2.5", "times": 1})).await;
    let resp = post(&app, "/v1/chat/completions", &key, None, &chat("Code it")).await;
    assert_eq!(resp.status(), 504);
    let rows = rows_of(&app, &resp).await;
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["timeout"]);
    assert!(rows[0].cost > Money::ZERO, "booked though unanswered: {:?}", rows[0]);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "upstream_timeout");

    // Kimi has no fallback: when it keeps failing the caller gets an OpenAI-style error.
    app.script_faults(json!({"fault": "500", "model": "kimi-k2.5", "times": 3})).await;
    let resp = post(&app, "/v1/chat/completions", &key, None, &chat("Code it")).await;
    assert_eq!(resp.status(), 502);
    let rows = rows_of(&app, &resp).await;
    assert_eq!(rows.len(), 3);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "upstream_error");

    let ok = post(&app, "/v1/chat/completions", &key, None, &chat("Code it")).await;
    assert_eq!(ok.status(), 200, "Kimi is back");

    // Garbage from the provider is an error, not an answer.
    app.script_faults(json!({"fault": "garbage", "model": "kimi-k2.5", "times": 3})).await;
    let resp = post(&app, "/v1/chat/completions", &key, None, &chat("Code it")).await;
    assert_eq!(resp.status(), 502);
    assert!(rows_of(&app, &resp).await.iter().all(|r| r.outcome == "garbage" && r.cost == Money::ZERO));

    assert_eq!(post(&app, "/v1/chat/completions", &key, None, &chat("Code it")).await.status(), 200);

    // A 400 from the provider is not retried.
    app.script_faults(json!({"fault": "400", "model": "kimi-k2.5"})).await;
    let resp = post(&app, "/v1/chat/completions", &key, None, &chat("Code it")).await;
    assert_eq!(rows_of(&app, &resp).await.len(), 1);

    // Our key refused by the provider: not retried, and the operator gets an alert.
    app.script_faults(json!({"fault": "401", "model": "kimi-k2.5"})).await;
    let resp = post(&app, "/v1/chat/completions", &key, None, &chat("Code it")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(rows_of(&app, &resp).await.len(), 1);
    let (alerts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'provider_auth'")
        .fetch_one(app.db.pool())
        .await
        .expect("alerts");
    assert_eq!(alerts, 1);
    assert_eq!(reserved_now(&app).await, 0, "every reservation was settled");
}

#[tokio::test]
async fn a_dead_provider_trips_the_breaker_and_is_probed_back() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (_, key) = app.customer_with_key("Acme", "pro").await;
    // Sonnet's provider (anthropic) fails five times in a row: the circuit opens.
    app.script_faults(json!({"fault": "500", "model": "claude-sonnet-4-5", "times": 5})).await;
    for _ in 0..2 {
        let resp = post(&app, "/v1/chat/completions", &key, Some("writing"), &chat("Write")).await;
        assert_eq!(resp.headers()["x-j1msky-model"], "kimi-k2.5");
    }
    let before = app.sim_stats().await.by_model.get("claude-sonnet-4-5").copied();
    assert_eq!(before, Some(5));
    let resp = post(&app, "/v1/chat/completions", &key, Some("writing"), &chat("Write")).await;
    let rows = rows_of(&app, &resp).await;
    assert_eq!(rows.len(), 1, "the open circuit is skipped without a call: {rows:?}");
    assert_eq!(rows[0].fallback_reason.as_deref(), Some("anthropic circuit open"));
    assert_eq!(app.sim_stats().await.by_model.get("claude-sonnet-4-5").copied(), before);
    // After the open period one probe goes through; its success closes the circuit.
    app.clock.advance_secs(31);
    let resp = post(&app, "/v1/chat/completions", &key, Some("writing"), &chat("Write")).await;
    assert_eq!(resp.headers()["x-j1msky-model"], "claude-sonnet");
    let resp = post(&app, "/v1/chat/completions", &key, Some("writing"), &chat("Write")).await;
    assert_eq!(resp.headers()["x-j1msky-model"], "claude-sonnet");
}

#[tokio::test]
async fn caps_answer_429_with_retry_after_and_budgets_402_and_nothing_is_charged() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (customer, key) = app.customer_with_key("Acme", "starter").await;
    controls::set_cap(
        &app.db,
        &app.catalogue,
        &Actor::cli(),
        &format!("customer:{customer}"),
        Some(2),
        "test",
        app.now(),
    )
    .await
    .expect("cap");
    app.gateway().controls_changed();
    for _ in 0..2 {
        assert_eq!(post(&app, "/v1/chat/completions", &key, None, &chat("hi")).await.status(), 200);
    }
    let refused = post(&app, "/v1/chat/completions", &key, None, &chat("hi")).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains(&customer));
    assert_eq!(ledger_count(&app).await, 2, "a refused call leaves no ledger row");
    assert_eq!(app.sim_stats().await.requests, 2, "and never reaches a model");
    // The next hour the cap starts again.
    app.clock.advance_secs(3600);
    assert_eq!(post(&app, "/v1/chat/completions", &key, None, &chat("hi")).await.status(), 200);

    // A monthly budget that fits no call of this size: 402, nothing reserved or spent.
    let (poor, poor_key) = app.customer_with_key("Thrifty", "pro").await;
    controls::set_customer_budget(&app.db, &Actor::cli(), &poor, Some(Money::from_micros(100)), "test", app.now())
        .await
        .expect("budget");
    let resp = post(&app, "/v1/chat/completions", &poor_key, None, &chat("hi")).await;
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(reserved_now(&app).await, 0);
    let (month, _) = windows::month(chrono_tz::UTC, app.now());
    app.gateway().flush().await;
    let (spent, reserved) =
        limits::budget_state(&app.db, &format!("customer:{poor}:month"), month).await.expect("state");
    assert_eq!((spent, reserved), (Money::ZERO, Money::ZERO));
}

#[tokio::test]
async fn daily_spend_crossing_the_alert_levels_pauses_opus_then_forces_cheap_only() {
    // One customer drives the business's day past its levels: no share per customer here.
    let mut catalogue = j1msky_core::catalogue::Catalogue::from_json_str(j1msky_core::catalogue::SHIPPED).expect("cat");
    catalogue.routing.customer_daily_share_percent = None;
    let app = common::spawn_app_with_catalogue(SimConfig::default(), catalogue).await;
    let (_, key) = app.customer_with_key("Acme", "pro").await;
    // One Opus call with this prompt costs 32 × $25/M + input × $5/M ≈ $0.000915.
    let text = "Lay out the architecture";
    let one = policy::cost(&app.catalogue, "claude-opus", sim_input_tokens(text) as u64, 32);
    // A budget where one call lands between 80 % and 100 %, so Opus pauses.
    let budget = Money::from_micros(one.micros() * 100 / 85);
    controls::set_daily_budget(&app.db, &Actor::cli(), Some(budget), "test", app.now()).await.expect("budget");
    app.gateway().controls_changed();
    let mut small = chat(text);
    small["max_tokens"] = json!(32);
    let resp = post(&app, "/v1/chat/completions", &key, Some("architecture"), &small).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let c = controls::load(&app.db).await.expect("controls");
    assert_eq!(c.mode, Mode::OpusPaused);
    assert_eq!(c.mode_set_by.as_deref(), Some("system"));
    let levels: Vec<(String,)> = sqlx::query_as("SELECT id FROM alerts WHERE kind = 'budget_level' ORDER BY id")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    assert_eq!(levels.len(), 2, "50 % and 80 % crossed: {levels:?}");
    let (events,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events WHERE kind = 'gateway.mode_changed'")
        .fetch_one(app.db.pool())
        .await
        .expect("events");
    assert_eq!(events, 1);
    // The budget is nearly gone: the next Opus-sized call is refused rather than overspend.
    app.gateway().controls_changed();
    let resp = post(&app, "/v1/chat/completions", &key, Some("architecture"), &small).await;
    assert_eq!(resp.status(), 402);
    let (day, _) = windows::day(chrono_tz::UTC, app.now());
    app.gateway().flush().await;
    let (spent, _) = limits::budget_state(&app.db, "business:day", day).await.expect("state");
    assert!(spent <= budget);
}

#[tokio::test]
async fn streams_in_both_formats_are_metered_from_the_providers_usage() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (_, key) = app.customer_with_key("Acme", "pro").await;
    let text = "Stream me an answer";

    let mut body = chat(text);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = post(&app, "/v1/chat/completions", &key, None, &body).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap_or("").starts_with("text/event-stream"));
    let request_id = resp.headers()["x-request-id"].to_str().expect("id").to_string();
    let sse = resp.text().await.expect("body");
    let frames: Vec<&str> = sse.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(frames.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> =
        frames[..frames.len() - 1].iter().map(|f| serde_json::from_str(f).expect("chunk")).collect();
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(streamed.starts_with("[simulated]"));
    assert_eq!(streamed.split(' ').count(), 32);
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(usage["completion_tokens"], 32);
    // Settling happens as the stream ends; give the spawned settlement a moment.
    let rows = wait_for_rows(&app, &request_id).await;
    assert_eq!((rows[0].input_tokens, rows[0].output_tokens), (sim_input_tokens(text), 32));
    assert_eq!(rows[0].outcome, "ok");

    // Anthropic format.
    let resp = sonnet_stream(&app, &key, 64, text).await;
    let request_id = resp.headers()["x-request-id"].to_str().expect("id").to_string();
    let sse = resp.text().await.expect("body");
    let names: Vec<&str> = sse.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_delta"));
    let rows = wait_for_rows(&app, &request_id).await;
    assert_eq!(rows[0].model_used, "claude-sonnet");
    assert_eq!(rows[0].output_tokens, 32);

    // A stream the provider drops half-way is settled too, marked as broken.
    app.script_faults(json!({"fault": "drop", "model": "kimi-k2.5"})).await;
    let resp = post(&app, "/v1/chat/completions", &key, None, &body).await;
    let request_id = resp.headers()["x-request-id"].to_str().expect("id").to_string();
    let sse = resp.text().await.unwrap_or_default();
    assert!(sse.contains("\"error\""), "the client is told the stream broke: {sse}");
    let rows = wait_for_rows(&app, &request_id).await;
    assert_eq!(rows[0].outcome, "connection_error");
    assert!(rows[0].cost.micros() > 0, "what was delivered is charged at an estimate");
    wait_until_nothing_reserved(&app).await;
}

#[tokio::test]
async fn kimi_s_reasoning_is_billed_from_the_usage_in_its_last_choice_and_estimated_when_the_client_hangs_up() {
    // 400 words an answer, a millisecond between chunks: a caller can hang up mid-answer.
    let sim =
        SimConfig { chunk_delay: std::time::Duration::from_millis(1), answer_tokens: 400, ..SimConfig::default() };
    let app = spawn_app_with_gateway(sim).await;
    let (_, key) = app.customer_with_key("Thinker", "pro").await;
    let answers = app.sim_url("/_sim/answers");
    let think = || async {
        let r = reqwest::Client::new()
            .post(&answers)
            .json(&json!({"prefix": "Answer:", "model": "kimi-k2.5", "reasoning_tokens": 300}))
            .send()
            .await
            .expect("script");
        assert_eq!(r.status(), 200);
    };
    let mut body = chat("Think before you answer");
    body["max_tokens"] = json!(1000);
    let input = sim_input_tokens("Think before you answer");

    // Not streamed: the usage is the chunk-level one, reasoning included.
    think().await;
    let resp = post(&app, "/v1/chat/completions", &key, None, &body).await;
    assert_eq!(resp.status(), 200);
    let rows = rows_of(&app, &resp).await;
    assert_eq!((rows[0].model_used.as_str(), rows[0].input_tokens, rows[0].output_tokens), ("kimi-k2.5", input, 700));

    // Streamed: Moonshot puts the usage in the last chunk's choice; the reasoning is
    // billed and never reaches the caller.
    think().await;
    body["stream"] = json!(true);
    let resp = post(&app, "/v1/chat/completions", &key, None, &body).await;
    let request_id = resp.headers()["x-request-id"].to_str().expect("id").to_string();
    let sse = resp.text().await.expect("body");
    assert!(!sse.contains("[thinking]") && !sse.contains("reasoning"), "the reasoning leaked: {sse}");
    assert!(sse.contains("Answer:"), "{sse}");
    let rows = wait_for_rows(&app, &request_id).await;
    assert_eq!((rows[0].input_tokens, rows[0].output_tokens, rows[0].outcome.as_str()), (input, 700, "ok"));

    // The caller hangs up as the answer starts: the 300 tokens of reasoning before it are
    // in the estimate the call is settled on.
    think().await;
    let mut resp = post(&app, "/v1/chat/completions", &key, None, &body).await;
    let request_id = resp.headers()["x-request-id"].to_str().expect("id").to_string();
    let mut seen = String::new();
    while !seen.contains("Answer:") {
        let piece = resp.chunk().await.expect("read").expect("the answer starts before the stream ends");
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    drop(resp);
    let rows = wait_for_rows(&app, &request_id).await;
    assert_eq!(rows[0].outcome, "client_disconnected");
    assert!(rows[0].output_tokens >= 300, "the reasoning was not estimated: {} output tokens", rows[0].output_tokens);
    wait_until_nothing_reserved(&app).await;
}

/// An Anthropic-format streamed call to Sonnet (category writing), answered 200.
async fn sonnet_stream(app: &common::TestApp, key: &str, max_tokens: u32, text: &str) -> reqwest::Response {
    let resp = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("x-j1msky-category", "writing")
        .json(&json!({"model": "claude-sonnet", "max_tokens": max_tokens, "stream": true,
                      "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .expect("messages");
    assert_eq!(resp.status(), 200);
    resp
}

async fn wait_for_rows(app: &common::TestApp, request_id: &str) -> Vec<Attempt> {
    for _ in 0..200 {
        app.gateway().flush().await;
        let rows = ledger::for_request(&app.db, request_id).await.expect("ledger");
        if !rows.is_empty() {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no ledger row for {request_id}");
}

async fn wait_until_nothing_reserved(app: &common::TestApp) {
    for _ in 0..200 {
        if reserved_now(app).await == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("a reservation was never settled");
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_is_never_charged() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (customer, key) = app.customer_with_key("Acme", "pro").await;
    let http = reqwest::Client::new();
    let raw = |body: &'static str| {
        http.post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (raw("{\"model\": \"auto\", \"messages\": ["), 400, "invalid_request_error", "not valid JSON"),
        (raw("{\"model\": \"auto\"}"), 400, "invalid_request_error", "messages is required"),
        (raw("{\"model\": \"gpt-9\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}"), 404, "model_not_found", "gpt-9"),
        (
            raw("{\"model\": \"auto\", \"max_tokens\": 99999999, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}"),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            raw("{\"model\": \"auto\", \"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}"),
            400,
            "invalid_request_error",
            "wizard",
        ),
        (
            http.post(app.url("/v1/chat/completions")).bearer_auth("jk_not_a_real_key").json(&chat("x")),
            401,
            "invalid_api_key",
            "wrong or revoked",
        ),
        (http.post(app.url("/v1/chat/completions")).json(&chat("x")), 401, "invalid_api_key", "no API key"),
    ];
    for (i, (req, status, code, fragment)) in cases.into_iter().enumerate() {
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let body: Value = resp.json().await.expect("json error");
        assert_eq!(body["error"]["code"], code, "case {i}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains(fragment), "case {i}: {body}");
    }
    // A revoked key stops working at once.
    let (made, secret) =
        j1msky_accounts::api_keys::create(&app.db, &Actor::cli(), &customer, "temp", app.now()).await.expect("key");
    assert_eq!(post(&app, "/v1/chat/completions", &secret, None, &chat("x")).await.status(), 200);
    // Revoked through the API (this process): the key cache forgets it at once.
    let resp =
        http.delete(app.url(&format!("/api/v1/keys/{}", made.id))).bearer_auth(&secret).send().await.expect("revoke");
    assert_eq!(resp.status(), 200, "revoke: {:?}", resp.text().await);
    assert_eq!(post(&app, "/v1/chat/completions", &secret, None, &chat("x")).await.status(), 401);
    // Anthropic format errors use Anthropic's error body.
    let resp = http
        .post(app.url("/v1/messages"))
        .header("x-api-key", &key)
        .json(&json!({"model": "claude-sonnet", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("max_tokens"), "{body}");
    // Only the one good call reached a model or the ledger; nothing is left reserved.
    assert_eq!(app.sim_stats().await.requests, 1);
    assert_eq!(ledger_count(&app).await, 1);
    assert_eq!(reserved_now(&app).await, 0);
    let (orphans,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM llm_calls WHERE request_id IS NULL OR request_id = ''")
            .fetch_one(app.db.pool())
            .await
            .expect("orphans");
    assert_eq!(orphans, 0);
}

#[tokio::test]
async fn the_operator_runs_the_rate_limit_panel_and_every_admin_page_shows_the_mode() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (customer, key) = app.customer_with_key("Acme", "starter").await;
    assert_eq!(post(&app, "/v1/chat/completions", &key, None, &chat("hi")).await.status(), 200);
    let browser = app.browser();
    app.login(&browser, common::OPERATOR_EMAIL, common::PASSWORD).await;

    let home = browser.get(app.url("/admin")).send().await.expect("admin").text().await.expect("html");
    assert!(home.contains("Cost mode: <strong>normal</strong>"), "banner on the customers page");
    let page = browser.get(app.url("/admin/gateway")).send().await.expect("gateway");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains(&format!("<code>customer:{customer}</code>")), "the customer's cap row");
    assert!(html.contains("1 / 50"), "the starter customer used 1 of its 50 calls this hour");
    assert!(html.contains("<code>global</code>") && html.contains("1 / 600"));

    let token = app.page_token(&browser, "/admin/gateway").await;
    let form = |pairs: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> = vec![("csrf_token".into(), token.clone())];
        v.extend(pairs.iter().map(|(k, val)| (k.to_string(), val.to_string())));
        v
    };
    // Edit a cap in place; the change is persisted, audited and in force at once.
    let scope = format!("customer:{customer}");
    let r = browser
        .post(app.url("/admin/gateway/caps"))
        .form(&form(&[("scope", &scope), ("cap", "1"), ("reason", "test")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(controls::load(&app.db).await.expect("controls").caps.get(&scope), Some(&1));
    assert_eq!(post(&app, "/v1/chat/completions", &key, None, &chat("hi")).await.status(), 429);
    let html = browser.get(app.url("/admin/gateway")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("1 / 1") && html.contains("override; catalogue: 50"));
    // Bad input is refused with the reason and changes nothing.
    for (scope, cap, fragment) in
        [(scope.as_str(), "lots", "not a whole number"), ("planet:mars", "5", "not a cap scope")]
    {
        let r = browser
            .post(app.url("/admin/gateway/caps"))
            .form(&form(&[("scope", scope), ("cap", cap), ("reason", "test")]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        assert!(r.text().await.unwrap().contains(fragment));
    }
    assert_eq!(controls::load(&app.db).await.expect("controls").caps.len(), 1);
    // Empty goes back to the catalogue's cap.
    browser
        .post(app.url("/admin/gateway/caps"))
        .form(&form(&[("scope", &scope), ("cap", ""), ("reason", "test")]))
        .send()
        .await
        .unwrap();
    assert!(controls::load(&app.db).await.expect("controls").caps.is_empty());

    // Switch the mode: every admin page says so.
    let r = browser
        .post(app.url("/admin/gateway/mode"))
        .form(&form(&[("mode", "cheap_only"), ("reason", "provider bill spike")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    for path in ["/admin", "/admin/gateway", &format!("/admin/customers/{customer}")] {
        let html = browser.get(app.url(path)).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("Cost mode: <strong>cheap only</strong>"), "{path} shows the mode");
    }
    let r = browser.post(app.url("/admin/gateway/mode")).form(&form(&[("mode", "turbo")])).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(controls::load(&app.db).await.expect("controls").mode, Mode::CheapOnly);
    let (audited,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'gateway.mode_changed'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(audited, 1);

    // The daily budget, in dollars.
    let r = browser
        .post(app.url("/admin/gateway/budget"))
        .form(&form(&[("amount", "12.50"), ("reason", "test")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let c = controls::load(&app.db).await.expect("controls");
    assert_eq!(c.caps.get(controls::DAILY_BUDGET_SCOPE), Some(&12_500_000));
    let r = browser
        .post(app.url("/admin/gateway/budget"))
        .form(&form(&[("amount", "-3"), ("reason", "test")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        controls::load(&app.db).await.expect("controls").caps.get(controls::DAILY_BUDGET_SCOPE),
        Some(&12_500_000)
    );

    // Customers do not see any of it.
    let owner = app.customer_with_owner("Other", "owner@other.test").await;
    let _ = owner;
    let theirs = app.browser();
    app.login(&theirs, "owner@other.test", common::PASSWORD).await;
    let r = theirs.get(app.url("/admin/gateway")).send().await.unwrap();
    assert!(r.status() == 403 || r.status() == 404 || r.status() == 303, "got {}", r.status());
    assert!(!r.text().await.unwrap_or_default().contains("Hourly caps"));
}

#[tokio::test]
async fn a_throttling_provider_never_opens_its_circuit() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (_, key) = app.customer_with_key("Acme", "pro").await;
    // Kimi (no fallback) answers 429 six times in a row — more than the breaker's threshold.
    app.script_faults(json!({"fault": "429:0", "model": "kimi-k2.5", "times": 6})).await;
    for _ in 0..2 {
        let resp = post(&app, "/v1/chat/completions", &key, Some("code"), &chat("Code")).await;
        assert_eq!(resp.status(), 429, "three attempts each, all throttled");
    }
    assert_eq!(app.sim_stats().await.by_model.get("kimi-k2.5").copied(), Some(6));
    // The provider is alive: the next call goes through instead of meeting an open circuit.
    let resp = post(&app, "/v1/chat/completions", &key, Some("code"), &chat("Code")).await;
    assert_eq!(resp.status(), 200);
    assert!(!app.gateway().breakers_open("moonshot", app.now()));
}

/// Anthropic tells a stream's prompt tokens in its first event: a caller who hangs up
/// before the end is billed on that count, not on the request's estimate, which a prompt
/// dense in tokens (here a tokenizer spending one token per byte, three times the
/// estimate) would undercut on every call.
#[tokio::test]
async fn a_stream_cut_short_is_billed_on_the_prompt_tokens_the_provider_told_at_its_start() {
    let sim = SimConfig {
        chunk_delay: std::time::Duration::from_millis(1),
        answer_tokens: 400,
        input_token_percent: 400,
        ..SimConfig::default()
    };
    let app = spawn_app_with_gateway(sim).await;
    let (_, key) = app.customer_with_key("Dense", "pro").await;
    let text = "7f3a9c0e,".repeat(60);
    let mut resp = sonnet_stream(&app, &key, 500, &text).await;
    let request_id = resp.headers()["x-request-id"].to_str().expect("id").to_string();
    let mut seen = String::new();
    while !seen.contains("content_block_delta") {
        let piece = resp.chunk().await.expect("read").expect("the answer starts before the stream ends");
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    drop(resp);
    let rows = wait_for_rows(&app, &request_id).await;
    assert_eq!(rows[0].outcome, "client_disconnected");
    // The simulator's count: 3 for the request, 4 for the message and a token per byte.
    let provider_count = 3 + 4 + text.len() as i64;
    assert_eq!(
        rows[0].input_tokens, provider_count,
        "billed on the request's estimate instead of the provider's count"
    );
    wait_until_nothing_reserved(&app).await;
}
