//! The edges of the HTTP surface: bounded metric labels, security headers and a CSP
//! that fits the pages, CSRF on every cookie-authenticated request, cap scopes that
//! must exist, the `Bearer` scheme in any case, and models outside a customer's plan.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use std::collections::BTreeMap;

use common::{spawn_app, spawn_app_with_catalogue, spawn_app_with_gateway, TestApp, OPERATOR_EMAIL, PASSWORD};
use j1msky_core::catalogue::{Catalogue, SHIPPED};
use j1msky_sim::SimConfig;
use serde_json::{json, Value};

#[tokio::test]
async fn metric_labels_stay_bounded_whatever_the_method_or_path() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let method = reqwest::Method::from_bytes(format!("BOGUS{i}X").as_bytes()).unwrap();
        client.request(method.clone(), app.url("/healthz")).send().await.unwrap();
        client.request(method, app.url(&format!("/no-such-page-{i}"))).send().await.unwrap();
        client.get(app.url(&format!("/junk/{i}/path-label-{i}"))).send().await.unwrap();
    }
    let text = client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("http_requests_total{")).collect();
    for l in &lines {
        assert!(!l.contains("BOGUS"), "a caller-chosen method became a label: {l}");
        assert!(!l.contains("no-such-page") && !l.contains("path-label"), "a caller-chosen path became a label: {l}");
    }
    assert!(lines.iter().any(|l| l.contains("method=\"other\"")), "unknown methods share one label: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("route=\"unmatched\"")), "unmatched paths share one label: {lines:?}");
}

/// The directives of a CSP header.
fn csp(resp: &reqwest::Response) -> BTreeMap<String, Vec<String>> {
    let value = resp.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    value
        .split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_string).collect()))
        })
        .collect()
}

/// The sources a directive allows (falling back to `default-src`, as browsers do).
fn allowed<'a>(policy: &'a BTreeMap<String, Vec<String>>, directive: &str) -> Option<&'a Vec<String>> {
    policy.get(directive).or_else(|| policy.get("default-src"))
}

async fn check_headers(what: &str, resp: reqwest::Response) {
    let h = resp.headers().clone();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert!(!get("referrer-policy").is_empty(), "{what}: Referrer-Policy");
    let policy = csp(&resp);
    let no_frames = policy.get("frame-ancestors").is_some_and(|s| s == &["'none'".to_string()]);
    assert!(get("x-frame-options") == "deny" || no_frames, "{what}: framing allowed");
    let is_html = get("content-type").starts_with("text/html");
    let body = resp.text().await.unwrap();
    if !is_html {
        return;
    }
    assert!(no_frames, "{what}: the CSP forbids framing");
    // Scripts: none are allowed, and the pages use none.
    let scripts = allowed(&policy, "script-src").cloned().unwrap_or_default();
    assert!(scripts == ["'none'"], "{what}: the CSP must restrict scripts, got {scripts:?}");
    assert!(!body.contains("<script"), "{what}: a page script the CSP would block");
    // The inline styles the pages carry must still apply.
    if body.contains("<style") || body.contains("style=\"") {
        let styles = allowed(&policy, "style-src").cloned().unwrap_or_default();
        assert!(styles.iter().any(|s| s == "'unsafe-inline'"), "{what}: the CSP blocks the page's styles: {styles:?}");
    }
    for d in ["base-uri", "object-src"] {
        assert!(allowed(&policy, d).is_some_and(|s| s == &["'none'".to_string()]), "{what}: {d}");
    }
}

#[tokio::test]
async fn every_page_and_response_carries_the_security_headers() {
    let app = spawn_app().await;
    let cid = app.customer_with_owner("Hdr", "h@h.test").await;
    let anon = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/login", "/healthz", "/metrics", "/no-such-page", "/api/v1/me", "/admin"] {
        check_headers(path, anon.get(app.url(path)).send().await.unwrap()).await;
    }
    let op = app.browser();
    assert_eq!(app.login(&op, OPERATOR_EMAIL, PASSWORD).await.status(), 303);
    let customer_page = format!("/admin/customers/{cid}");
    for path in ["/admin", customer_page.as_str(), "/admin/gateway", "/admin/queue", "/app", "/nope"] {
        let resp = op.get(app.url(path)).send().await.unwrap();
        assert!(resp.status().as_u16() < 500, "{path}");
        check_headers(path, resp).await;
    }
    let owner = app.browser();
    assert_eq!(app.login(&owner, "h@h.test", PASSWORD).await.status(), 303);
    for path in ["/app", "/app/tasks", "/app/billing", "/admin"] {
        let resp = owner.get(app.url(path)).send().await.unwrap();
        assert!(resp.status().as_u16() < 500, "{path}");
        check_headers(path, resp).await;
    }
    // A refused form post renders an error page with the same headers.
    let resp = owner.post(app.url("/app/keys")).form(&[("name", "x")]).send().await.unwrap();
    check_headers("refused post", resp).await;
}

async fn active_keys(app: &TestApp, customer: &str) -> usize {
    j1msky_accounts::api_keys::list(&app.db, customer).await.unwrap().iter().filter(|k| k.revoked_at.is_none()).count()
}

#[tokio::test]
async fn cookie_requests_need_the_csrf_token_whatever_headers_come_with_them() {
    let app = spawn_app().await;
    let cid = app.customer_with_owner("Csrf", "c@c.test").await;
    let owner = app.browser();
    assert_eq!(app.login(&owner, "c@c.test", PASSWORD).await.status(), 303);
    let token = app.page_token(&owner, "/app").await;
    let r = owner.post(app.url("/app/keys")).form(&[("csrf_token", token.as_str()), ("name", "ci")]).send().await;
    assert!(r.unwrap().status().is_success());
    let key_id = j1msky_accounts::api_keys::list(&app.db, &cid).await.unwrap()[0].id.clone();
    assert_eq!(active_keys(&app, &cid).await, 1);

    let extra: [(&str, &str); 4] = [
        ("authorization", "Bearer not-a-key"),
        ("authorization", "Basic Zm9vOmJhcg=="),
        ("x-requested-with", "XMLHttpRequest"),
        ("x-csrf-token", "forged"),
    ];
    let revoke = format!("/app/keys/{key_id}/revoke");
    for (name, value) in extra {
        for ct in ["text/plain", "application/json"] {
            for path in [revoke.as_str(), "/logout", "/api/v1/keys"] {
                let resp = owner
                    .post(app.url(path))
                    .header(name, value)
                    .header("content-type", ct)
                    .body("{\"name\":\"sneaky\"}")
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or_default();
                assert_eq!(status, 403, "{path} with {name}: {value} as {ct}: {body}");
                assert_eq!(body["error"]["code"], "csrf", "{path}");
            }
        }
        let resp = owner.delete(app.url(&format!("/api/v1/keys/{key_id}"))).header(name, value).send().await.unwrap();
        assert_eq!(resp.status(), 403, "DELETE with {name}: {value}");
    }
    // Nothing happened: the key lives, no key was added, the session is still signed in.
    assert_eq!(active_keys(&app, &cid).await, 1);
    assert_eq!(j1msky_accounts::api_keys::list(&app.db, &cid).await.unwrap().len(), 1);
    assert_eq!(owner.get(app.url("/app")).send().await.unwrap().status(), 200);

    // The session's token in the X-CSRF-Token header lets a script do the same; the
    // script can read it from /api/v1/me.
    let me: Value = owner.get(app.url("/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["csrf_token"], token.as_str());
    let resp = owner
        .post(app.url("/api/v1/keys"))
        .header("x-csrf-token", &token)
        .json(&json!({"name": "script"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let resp =
        owner.delete(app.url(&format!("/api/v1/keys/{key_id}"))).header("x-csrf-token", &token).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(active_keys(&app, &cid).await, 1);
}

#[tokio::test]
async fn caps_for_scopes_that_do_not_exist_are_refused_in_the_panel() {
    let app = spawn_app().await;
    let cid = app.active_customer("Capped", "pro").await.id;
    let op = app.browser();
    app.login(&op, OPERATOR_EMAIL, PASSWORD).await;
    let token = app.page_token(&op, "/admin/gateway").await;
    for scope in ["model:gpt-nine", "provider:openrouter", "customer:cus_nobody", "model:", "galaxy"] {
        let resp = op
            .post(app.url("/admin/gateway/caps"))
            .form(&[("csrf_token", token.as_str()), ("scope", scope), ("cap", "5"), ("reason", "test")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{scope}");
        let page = resp.text().await.unwrap();
        let shown = scope.split(':').next_back().unwrap_or(scope);
        assert!(page.contains(shown), "{scope}: the error names the scope");
    }
    assert!(j1msky_gateway::controls::load(&app.db).await.unwrap().caps.is_empty(), "nothing stored");
    let customer_scope = format!("customer:{cid}");
    for scope in ["model:claude-opus", "provider:anthropic", customer_scope.as_str(), "global"] {
        let resp = op
            .post(app.url("/admin/gateway/caps"))
            .form(&[("csrf_token", token.as_str()), ("scope", scope), ("cap", "5"), ("reason", "test")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303, "{scope}");
    }
    assert_eq!(j1msky_gateway::controls::load(&app.db).await.unwrap().caps.len(), 4);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (_, key) = app.customer_with_key("Case", "pro").await;
    let client = reqwest::Client::new();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        for (path, tab) in [("/v1/models", " "), ("/api/v1/me", "  ")] {
            let resp = client.get(app.url(path)).header("authorization", format!("{scheme}{tab}{key}")).send().await;
            let resp = resp.unwrap();
            assert_eq!(resp.status(), 200, "{scheme} on {path}: {}", resp.text().await.unwrap());
        }
    }
    // Another scheme, or a wrong key in the right scheme, is still refused.
    for value in [format!("Basic {key}"), "BEARER jk_wrong".to_string(), format!("Bearer{key}")] {
        let resp = client.get(app.url("/api/v1/me")).header("authorization", value.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{value}");
    }
}

/// The shipped catalogue with Starter limited to Kimi (refusing others) and Pro limited
/// to Kimi but rerouting.
fn plan_limited_catalogue() -> Catalogue {
    let mut v: Value = serde_json::from_str(SHIPPED).unwrap();
    v["plans"]["starter"]["models"] = json!(["kimi-k2.5"]);
    v["plans"]["pro"]["models"] = json!(["kimi-k2.5"]);
    v["plans"]["pro"]["model_outside_plan"] = json!("reroute");
    Catalogue::from_json_str(&v.to_string()).unwrap()
}

async fn ledger_rows(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM llm_calls").fetch_one(app.db.pool()).await.unwrap();
    n
}

#[tokio::test]
async fn a_model_outside_the_plan_is_refused_unless_the_plan_reroutes() {
    let app = spawn_app_with_catalogue(SimConfig::default(), plan_limited_catalogue()).await;
    let (_, starter) = app.customer_with_key("Small", "starter").await;
    let (_, pro) = app.customer_with_key("Bigger", "pro").await;
    let client = reqwest::Client::new();
    let chat = |key: &str, model: &str| {
        client.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&json!({
            "model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]
        }))
    };
    for model in ["claude-sonnet", "claude-sonnet-4-5", "claude-opus"] {
        let resp = chat(&starter, model).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "model_not_in_plan", "{body}");
        assert_eq!(body["error"]["param"], "model");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(model) && msg.contains("kimi-k2.5"), "{msg}");
    }
    let resp = client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &starter)
        .json(&json!({"model": "claude-sonnet", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["type"], "permission_error");
    assert_eq!(app.sim_stats().await.requests, 0, "nothing reached a provider");
    assert_eq!(ledger_rows(&app).await, 0);

    // The plan's own model, and `auto`, still work.
    for model in ["kimi-k2.5", "auto"] {
        let resp = chat(&starter, model).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        assert!(resp.headers().get("x-j1msky-rerouted-from").is_none(), "{model}");
    }

    // A plan that reroutes says so in a header, on both formats and when streaming.
    let resp = chat(&pro, "claude-sonnet").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-j1msky-model"], "kimi-k2.5");
    assert_eq!(resp.headers()["x-j1msky-rerouted-from"], "claude-sonnet");
    assert_eq!(resp.json::<Value>().await.unwrap()["model"], "kimi-k2.5");
    let resp = client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&pro)
        .json(&json!({"model": "claude-sonnet", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-j1msky-rerouted-from"], "claude-sonnet");
    resp.text().await.unwrap();
    let resp = client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &pro)
        .json(&json!({"model": "claude-opus", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-j1msky-rerouted-from"], "claude-opus");
    let stats = app.sim_stats().await;
    assert!(stats.by_model.keys().all(|m| m == "kimi-k2.5"), "{:?}", stats.by_model);
}

#[test]
fn the_reroute_setting_is_validated() {
    let mut v: Value = serde_json::from_str(SHIPPED).unwrap();
    v["plans"]["pro"]["model_outside_plan"] = json!("sometimes");
    let err = Catalogue::from_json_str(&v.to_string()).unwrap_err();
    assert!(err.issues().iter().any(|i| i.path.starts_with("plans.pro.model_outside_plan")), "{err}");
    // Rerouting needs a list of the plan's models to reroute into.
    v["plans"]["pro"]["model_outside_plan"] = json!("reroute");
    let err = Catalogue::from_json_str(&v.to_string()).unwrap_err();
    assert!(
        err.issues().iter().any(|i| i.path == "plans.pro.model_outside_plan" && i.message.contains("reroute")),
        "{err}"
    );
}
