//! Every route against hostile input, as every kind of caller: nothing a client sends
//! may make the server answer 5xx.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::{spawn_app_with_everything, OPERATOR_EMAIL, PASSWORD};

/// Every route (method, path with `{id}`), as the router declares them.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/admin"),
    ("GET", "/admin/insights/behind"),
    ("GET", "/admin/review/morning"),
    ("GET", "/admin/review/evening"),
    ("POST", "/admin/review/evening"),
    ("GET", "/admin/customers"),
    ("POST", "/admin/customers"),
    ("GET", "/admin/customers/{id}"),
    ("POST", "/admin/customers/{id}/stage"),
    ("POST", "/admin/customers/{id}/disputes/{id}/release"),
    ("GET", "/admin/gateway"),
    ("POST", "/admin/gateway/mode"),
    ("POST", "/admin/gateway/caps"),
    ("POST", "/admin/gateway/budget"),
    ("POST", "/admin/gateway/customer-budget"),
    ("GET", "/admin/config"),
    ("GET", "/admin/config/diff"),
    ("POST", "/admin/config/rollback"),
    ("GET", "/app"),
    ("GET", "/app/tasks"),
    ("POST", "/app/tasks"),
    ("GET", "/app/tasks/{id}"),
    ("POST", "/app/tasks/{id}/cancel"),
    ("POST", "/app/teams"),
    ("GET", "/app/mail"),
    ("POST", "/app/mail"),
    ("GET", "/admin/queue"),
    ("POST", "/admin/queue/{id}/retry"),
    ("POST", "/admin/queue/{id}/cancel"),
    ("GET", "/admin/events"),
    ("POST", "/admin/events/{id}/{id}/retry"),
    ("GET", "/admin/spend"),
    ("POST", "/admin/spend"),
    ("GET", "/app/billing"),
    ("POST", "/app/billing/checkout"),
    ("POST", "/app/billing/change"),
    ("POST", "/app/billing/portal"),
    ("POST", "/app/billing/cancel"),
    ("POST", "/app/billing/cancel/{id}/accept"),
    ("POST", "/app/billing/cancel/{id}/confirm"),
    ("POST", "/app/keys"),
    ("POST", "/app/keys/{id}/revoke"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/keys"),
    ("POST", "/api/v1/keys"),
    ("DELETE", "/api/v1/keys/{id}"),
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks/{id}"),
    ("POST", "/api/v1/tasks/{id}/cancel"),
    ("GET", "/api/v1/templates"),
    ("POST", "/webhooks/stripe"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("POST", "/v1/messages"),
    ("GET", "/no/such/route"),
];

/// Every field name any form or JSON body of the server reads.
const FIELDS: &[&str] = &[
    "name",
    "email",
    "password",
    "next",
    "team",
    "title",
    "prompt",
    "template",
    "priority",
    "category",
    "mode",
    "reason",
    "scope",
    "cap",
    "amount",
    "stage",
    "contact_email",
    "use_case",
    "plan",
    "teams",
    "expected_monthly_tasks",
    "time_zone",
    "owner_email",
    "owner_password",
    "offer",
    "trial",
    "action",
    "resume_days",
    "comment",
    "model",
    "max_tokens",
    "customer",
    "limit",
    "state",
    "period",
    "month",
    "format",
];

const IDS: &[&str] = &["%00", "a%00b", "%FF%FE", "%E2%80%AE", "..%2F..%2Fetc", "'%20OR%201=1--", "-1", "\u{1F600}"];

const QUERIES: &[&str] = &[
    "?next=%00&stage=%00&state=%00&notice=%00",
    "?limit=-1",
    "?limit=9223372036854775807",
    "?limit=99999999999999999999999",
    "?state=%FF&stage=nope&limit=x",
    "?next=%0d%0aSet-Cookie:%20x=1",
];

/// Text a database cannot shrink (a long key of it overflows an index entry).
fn incompressible(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ALPHABET[(state >> 33) as usize % ALPHABET.len()] as char
        })
        .collect()
}

/// Text values a form field or a JSON string may carry.
fn hostile_values() -> Vec<String> {
    vec![
        String::new(),
        "a\0b".into(),
        "-9223372036854775808".into(),
        "99999999999999999999999".into(),
        "1e308".into(),
        "NaN".into(),
        "x".repeat(4000),
        incompressible(6000),
        "\u{202e}\u{FEFF}".into(),
        "'; DROP TABLE users; --".into(),
        "/\\evil.example".into(),
    ]
}

/// JSON bodies beyond "every field is this string".
fn hostile_json() -> Vec<serde_json::Value> {
    let mut bodies: Vec<serde_json::Value> = vec![
        serde_json::json!([]),
        serde_json::json!(null),
        serde_json::json!("text"),
        serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
        serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": i64::MAX}),
        serde_json::json!({"model": "auto", "messages": [], "max_tokens": 10}),
        serde_json::json!({"model": "auto", "messages": [{"role": "nobody", "content": [{"type": "x"}]}]}),
        serde_json::json!({"team": "code", "prompt": "x", "fields": {"a": 1}}),
        serde_json::json!({"team": "code", "template": "bug_fix", "fields": {"repository": "\u{0}"}}),
    ];
    for value in hostile_values() {
        bodies.push(serde_json::Value::Object(
            FIELDS.iter().map(|f| (f.to_string(), serde_json::Value::String(value.clone()))).collect(),
        ));
    }
    bodies
}

/// Who calls: nobody, an API key, a signed-in owner, a signed-in operator.
struct Caller {
    label: &'static str,
    client: reqwest::Client,
    bearer: Option<String>,
    csrf: Option<String>,
}

async fn callers(app: &common::TestApp) -> Vec<Caller> {
    let (_, key) = app.customer_with_key("Acme", "pro").await;
    app.customer_with_owner("Owned", "owner@x.test").await;
    let owner = app.browser();
    assert_eq!(app.login(&owner, "owner@x.test", PASSWORD).await.status(), 303);
    let owner_csrf = app.page_token(&owner, "/app").await;
    let operator = app.browser();
    assert_eq!(app.login(&operator, OPERATOR_EMAIL, PASSWORD).await.status(), 303);
    let operator_csrf = app.page_token(&operator, "/admin").await;
    vec![
        Caller { label: "anonymous", client: app.browser(), bearer: None, csrf: None },
        Caller { label: "api key", client: app.browser(), bearer: Some(key), csrf: None },
        Caller { label: "owner", client: owner, bearer: None, csrf: Some(owner_csrf) },
        Caller { label: "operator", client: operator, bearer: None, csrf: Some(operator_csrf) },
    ]
}

fn request(app: &common::TestApp, caller: &Caller, method: &str, path: &str) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let req = caller.client.request(method, app.url(path));
    match &caller.bearer {
        Some(key) => req.bearer_auth(key),
        None => req,
    }
}

#[tokio::test]
async fn no_input_on_any_route_makes_the_server_fail() {
    let app = spawn_app_with_everything().await;
    let callers = callers(&app).await;
    let mut failures = Vec::new();
    let mut record = |what: String, resp: Result<reqwest::Response, reqwest::Error>| match resp {
        Ok(r) if r.status().is_server_error() => failures.push(format!("{what} -> {}", r.status())),
        Ok(_) => {}
        Err(e) => failures.push(format!("{what} -> no answer: {e}")),
    };
    for caller in &callers {
        for (method, route) in ROUTES {
            let paths: Vec<String> = if route.contains("{id}") {
                IDS.iter().map(|id| route.replace("{id}", id)).collect()
            } else {
                QUERIES.iter().map(|q| format!("{route}{q}")).collect()
            };
            for path in &paths {
                let what = format!("{} {method} {path}", caller.label);
                record(what, request(&app, caller, method, path).send().await);
            }
            if *method == "GET" {
                continue;
            }
            let path = route.replace("{id}", "x");
            for value in hostile_values() {
                let mut form: Vec<(&str, &str)> = FIELDS.iter().map(|f| (*f, value.as_str())).collect();
                if let Some(token) = &caller.csrf {
                    form.push(("csrf_token", token));
                }
                let shown: String = value.chars().take(20).collect();
                let what = format!("{} {method} {path} form {shown:?}", caller.label);
                record(what, request(&app, caller, method, &path).form(&form).send().await);
            }
            for body in hostile_json() {
                let what = format!("{} {method} {path} json {:.60}", caller.label, body.to_string());
                record(what, request(&app, caller, method, &path).json(&body).send().await);
            }
            let what = format!("{} {method} {path} raw bytes", caller.label);
            let raw = request(&app, caller, method, &path)
                .header("content-type", "application/json")
                .body(vec![b'{', 0xff, 0x00, b'"', b'}'])
                .send()
                .await;
            record(what, raw);
        }
    }
    assert!(failures.is_empty(), "{} server errors:\n{}", failures.len(), failures.join("\n"));
}
