//! The simulated provider's rate limit answers like a throttling provider: the burst it
//! allows, then 429 in the OpenAI error shape with a `Retry-After`.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use j1msky_sim::SimConfig;

#[tokio::test]
async fn beyond_its_rate_limit_the_provider_answers_429_with_retry_after() {
    // 120 a minute = 2 a second; the bucket holds one second's worth.
    let sim =
        j1msky_sim::spawn(SimConfig { rate_limit_per_minute: Some(120), ..SimConfig::default() }).await.expect("sim");
    let http = reqwest::Client::new();
    let body = serde_json::json!({"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]});
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let r = http
            .post(format!("{}/chat/completions", sim.openai_base()))
            .bearer_auth("k")
            .json(&body)
            .send()
            .await
            .expect("send");
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after =
                r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            let err: serde_json::Value = r.json().await.expect("json");
            assert!(err["error"]["message"].is_string(), "{err}");
        }
    }
    assert_eq!(&statuses[..2], &[200, 200], "the burst: {statuses:?}");
    assert_eq!(statuses[3], 429, "then throttled: {statuses:?}");
    assert!(retry_after.is_some_and(|s| (1..=2).contains(&s)), "{retry_after:?}");
}
