//! The JSON API (`/api/v1`) and the model API (`/v1`) read the caller's key the same
//! way: the same odd `Authorization` / `x-api-key` headers pass or fail on both.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use common::spawn_app_with_gateway;
use j1msky_sim::SimConfig;

#[tokio::test]
async fn odd_credential_headers_behave_the_same_on_both_apis() {
    let app = spawn_app_with_gateway(SimConfig::default()).await;
    let (_, key) = app.customer_with_key("Acme", "pro").await;
    let cases: Vec<(&str, String, u16)> = vec![
        ("authorization", format!("Bearer {key}"), 200),
        ("authorization", format!("bearer {key}"), 200),
        ("authorization", format!("BEARER\t{key}"), 200),
        ("authorization", format!("  Bearer    {key}   "), 200),
        ("authorization", "Bearer ".to_string(), 401),
        ("authorization", "Bearer".to_string(), 401),
        ("authorization", format!("Basic {key}"), 401),
        ("authorization", format!("Bearer {key}x"), 401),
        ("x-api-key", key.clone(), 200),
        ("x-api-key", format!("  {key} "), 200),
        ("x-api-key", "   ".to_string(), 401),
    ];
    let http = reqwest::Client::new();
    for (name, value, want) in cases {
        for path in ["/api/v1/me", "/v1/models"] {
            let resp = http.get(app.url(path)).header(name, &value).send().await.expect("send");
            assert_eq!(resp.status().as_u16(), want, "{path} with {name}: {value:?}");
        }
    }
}
