//! The OpenAPI document at `/api/v1/openapi.json`: an OpenAPI 3.1 document whose
//! operations are exactly the JSON routes the router declares (read from the source, so
//! a new route without its `#[utoipa::path]` fails here), each answered by the server,
//! and whose response shapes match what the server really answers.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use common::spawn_app_with_gateway;
use serde_json::{json, Value};

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// Every (METHOD, path) the router's source declares under the JSON surfaces.
fn json_routes_in_source() -> BTreeSet<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut sources = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut sources);
    let mut routes = BTreeSet::new();
    for source in &sources {
        for (i, _) in source.match_indices(".route(\"") {
            let rest = &source[i + ".route(\"".len()..];
            let path = &rest[..rest.find('"').unwrap()];
            if !(path.starts_with("/api/") || path.starts_with("/v1/") || path.starts_with("/webhooks/")) {
                continue;
            }
            // The method routers up to the end of this `.route(...)` call.
            let mut depth = 1;
            let call: String = rest
                .chars()
                .take_while(|c| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth > 0
                })
                .collect();
            for m in METHODS {
                let starts = [format!(" {m}("), format!(".{m}("), format!("({m}(")];
                if starts.iter().any(|s| call.contains(s.as_str())) {
                    routes.insert((m.to_uppercase(), path.to_string()));
                }
            }
        }
    }
    routes
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(*m).is_some() {
                ops.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Every `$ref` in the document names a component that exists.
fn dangling_refs(doc: &Value, at: &Value, out: &mut Vec<String>) {
    match at {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let pointer = r.strip_prefix('#').unwrap_or(r);
                if doc.pointer(pointer).is_none() {
                    out.push(r.clone());
                }
            }
            map.values().for_each(|v| dangling_refs(doc, v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| dangling_refs(doc, v, out)),
        _ => {}
    }
}

/// Where `value` breaks `schema` (the subset of JSON Schema utoipa writes: `$ref`,
/// `type` (one or several), `properties`, `required`, `additionalProperties: false`,
/// `items`, `enum`, `oneOf`, `allOf`).
fn violations(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(r) = schema["$ref"].as_str() {
        return violations(doc, doc.pointer(r.trim_start_matches('#')).unwrap(), value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        return all.iter().flat_map(|s| violations(doc, s, value, at)).collect();
    }
    if let Some(any) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let each: Vec<Vec<String>> = any.iter().map(|s| violations(doc, s, value, at)).collect();
        return if each.iter().any(Vec::is_empty) { vec![] } else { each.concat() };
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| *t == kind || (*t == "number" && kind == "integer")) {
        return vec![format!("{at}: a {kind}, the schema says {types:?}")];
    }
    if let Some(words) = schema["enum"].as_array() {
        if !words.contains(value) {
            return vec![format!("{at}: {value} is not one of {words:?}")];
        }
    }
    let mut out = Vec::new();
    if let (Value::Object(map), Some(props)) = (value, schema["properties"].as_object()) {
        for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                out.push(format!("{at}.{name}: required, missing"));
            }
        }
        for (k, v) in map {
            match props.get(k) {
                Some(s) => out.extend(violations(doc, s, v, &format!("{at}.{k}"))),
                None if schema["additionalProperties"] == json!(false) => {
                    out.push(format!("{at}.{k}: not in the schema"))
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            out.extend(violations(doc, s, v, &format!("{at}[{i}]")));
        }
    }
    out
}

/// The JSON schema the document gives for `method path`'s answer `status`.
fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    &doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]["schema"]
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_json_route() {
    let app = spawn_app_with_gateway(j1msky_sim::SimConfig::default()).await;
    let http = reqwest::Client::new();
    let resp = http.get(app.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "served without a login");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();

    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut dangling = Vec::new();
    dangling_refs(&doc, &doc, &mut dangling);
    assert!(dangling.is_empty(), "references to nothing: {dangling:?}");
    for scheme in ["bearer", "x_api_key", "session"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object(), "{scheme}");
    }

    let declared = json_routes_in_source();
    assert!(declared.len() >= 13, "the source scan found too few routes: {declared:?}");
    assert_eq!(operations(&doc), declared, "documented operations vs. the router's JSON routes");

    // Each documented operation exists on the server: never the 404 of an unknown route
    // nor a 405, even without credentials.
    for (method, path) in &declared {
        let url = app.url(&path.replace("{id}", "tsk_nonexistent"));
        let resp = http.request(method.parse().unwrap(), url).send().await.unwrap();
        assert!(![404, 405].contains(&resp.status().as_u16()), "{method} {path}: {}", resp.status());
        // Every operation has an id, a tag and a 2xx answer.
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(op["operationId"].is_string() && op["tags"][0].is_string(), "{method} {path}");
        assert!(op["responses"].as_object().unwrap().keys().any(|s| s.starts_with('2')), "{method} {path}");
    }
}

#[tokio::test]
async fn the_servers_answers_match_the_documented_shapes() {
    let app = spawn_app_with_gateway(j1msky_sim::SimConfig::default()).await;
    let (_, key) = app.customer_with_key("Shapes Inc", "pro").await;
    let http = reqwest::Client::new();
    let doc: Value = http.get(app.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut req = http.request(method.parse().unwrap(), app.url(path)).bearer_auth(&key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    let check = |method: &str, template: &str, status: u16, body: &Value| {
        let schema = response_schema(&doc, method, template, status);
        assert!(schema.is_object(), "{method} {template} documents no JSON answer {status}");
        let wrong = violations(&doc, schema, body, "$");
        assert!(wrong.is_empty(), "{method} {template} {status}: {wrong:?}\n{body:#}");
    };

    let team = app.catalogue.teams.keys().next().unwrap().clone();
    let submit = json!({"team": team, "prompt": "Write a haiku about queues."});
    let resp = call("POST", "/api/v1/tasks", Some(submit)).await.unwrap();
    assert_eq!(resp.status(), 201);
    let submitted: Value = resp.json().await.unwrap();
    check("post", "/api/v1/tasks", 201, &submitted);
    let id = submitted["task"]["id"].as_str().unwrap().to_string();

    for (path, template) in [
        ("/api/v1/me".to_string(), "/api/v1/me"),
        ("/api/v1/keys".to_string(), "/api/v1/keys"),
        ("/api/v1/tasks".to_string(), "/api/v1/tasks"),
        (format!("/api/v1/tasks/{id}"), "/api/v1/tasks/{id}"),
        ("/api/v1/templates".to_string(), "/api/v1/templates"),
        ("/v1/models".to_string(), "/v1/models"),
    ] {
        let resp = call("GET", &path, None).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        check("get", template, 200, &resp.json().await.unwrap());
    }
    let resp = call("POST", &format!("/api/v1/tasks/{id}/cancel"), None).await.unwrap();
    assert_eq!(resp.status(), 200);
    check("post", "/api/v1/tasks/{id}/cancel", 200, &resp.json().await.unwrap());

    let chat = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16});
    let resp = call("POST", "/v1/chat/completions", Some(chat)).await.unwrap();
    assert_eq!(resp.status(), 200);
    check("post", "/v1/chat/completions", 200, &resp.json().await.unwrap());
    let msg = json!({"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let resp = call("POST", "/v1/messages", Some(msg)).await.unwrap();
    assert_eq!(resp.status(), 200);
    check("post", "/v1/messages", 200, &resp.json().await.unwrap());

    // Errors in each surface's documented shape.
    let resp = http.get(app.url("/api/v1/tasks?limit=many")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), 400, "a query of the wrong type is the caller's error");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_query");
    check("get", "/api/v1/tasks", 400, &body);
    let resp = http.get(app.url("/api/v1/tasks/tsk_none")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    check("get", "/api/v1/tasks/{id}", 404, &resp.json().await.unwrap());
    let resp = http.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    check("post", "/v1/chat/completions", 400, &resp.json().await.unwrap());
    // A field of the wrong type is refused, not silently read as absent.
    for (path, body, field) in [
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}), "stream"),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            "temperature",
        ),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}], "stop": [1]}), "stop"),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "max_completion_tokens": 1.5}),
            "max_completion_tokens",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0, "max_completion_tokens": 8}),
            "max_tokens",
        ),
        (
            "/v1/messages",
            json!({"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "stream": {}}),
            "stream",
        ),
        (
            "/v1/messages",
            json!({"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "stop_sequences": "x"}),
            "stop_sequences",
        ),
    ] {
        let resp = call("POST", path, Some(body)).await.unwrap();
        assert_eq!(resp.status(), 400, "{path} {field}");
        let answer: Value = resp.json().await.unwrap();
        check("post", path, 400, &answer);
        assert!(answer.to_string().contains(field), "{path}: {answer}");
    }
    let resp = http.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    check("get", "/v1/models", 401, &resp.json().await.unwrap());
    let resp = http.post(app.url("/webhooks/stripe")).body("{}").send().await.unwrap();
    let status = resp.status().as_u16();
    assert!([400, 503].contains(&status), "{status}");
    check("post", "/webhooks/stripe", status, &resp.json().await.unwrap());
}
