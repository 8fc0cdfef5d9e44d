//! A panic inside the model call's own task (spawned so a hang-up cannot cancel it) is
//! our fault: a 500 with code `internal`, never a 4xx that blames the caller.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::spawn_app_with_gateway_clock;
use j1msky_core::{Clock, ManualClock};
use j1msky_sim::SimConfig;
use serde_json::{json, Value};

/// A clock that panics once armed; only the gateway holds it, so the panic happens
/// inside the gateway's call and nowhere else.
struct TrapClock {
    inner: ManualClock,
    armed: Arc<AtomicBool>,
}

impl Clock for TrapClock {
    fn now_micros(&self) -> i64 {
        if self.armed.load(Ordering::SeqCst) {
            panic!("trap clock: the gateway read the time while armed");
        }
        self.inner.now_micros()
    }
}

#[tokio::test]
async fn a_panic_inside_the_detached_call_is_a_500_internal_in_both_formats() {
    let armed = Arc::new(AtomicBool::new(false));
    let clock = TrapClock { inner: ManualClock::new(1_795_000_000_000_000), armed: armed.clone() };
    let app = spawn_app_with_gateway_clock(SimConfig::default(), Arc::new(clock)).await;
    let (_, key) = app.customer_with_key("Panicky", "pro").await;
    armed.store(true, Ordering::SeqCst);
    let http = reqwest::Client::new();
    let calls = [
        ("/v1/chat/completions", json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})),
        (
            "/v1/chat/completions",
            json!({"model": "auto", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/v1/messages", json!({"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})),
    ];
    for (path, body) in calls {
        let resp = http.post(app.url(path)).bearer_auth(&key).json(&body).send().await.expect("send");
        assert_eq!(resp.status(), 500, "{path} {body}");
        let got: Value = resp.json().await.expect("json error body");
        // OpenAI's format carries our code; Anthropic's has only its own error types.
        if path == "/v1/messages" {
            assert_eq!(got["error"]["type"], "api_error", "{path}: {got}");
        } else {
            assert_eq!(got["error"]["code"], "internal", "{path}: {got}");
        }
        assert!(!got.to_string().contains("trap clock"), "the panic message leaks to the caller: {got}");
    }
}
