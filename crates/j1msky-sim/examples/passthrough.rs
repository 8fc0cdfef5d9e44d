//! The floor of the gateway-overhead benchmark: a proxy that does nothing but forward
//! `POST /v1/chat/completions` to an upstream over the same HTTP stack the gateway uses
//! (axum server, reqwest client with a pooled connection) and hand back its answer.
//! No auth, no policy, no ledger: what one extra loopback hop costs on this machine.
//!
//! `cargo run --release -p j1msky-sim --example passthrough -- LISTEN_ADDR UPSTREAM_BASE`

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
    url: reqwest::Url,
}

async fn forward(State(up): State<Upstream>, body: Bytes) -> Response {
    let sent = up.client.post(up.url.clone()).header("content-type", "application/json").body(body).send().await;
    match sent {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match resp.bytes().await {
                Ok(b) => (status, [("content-type", "application/json")], b).into_response(),
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(base)) = (args.next(), args.next()) else {
        return Err(
            "usage: passthrough LISTEN_ADDR UPSTREAM_BASE (e.g. 127.0.0.1:9300 http://127.0.0.1:9100/v1)".into()
        );
    };
    let url = reqwest::Url::parse(&format!("{}/chat/completions", base.trim_end_matches('/')))?;
    let state = Upstream { client: reqwest::Client::new(), url };
    let app = axum::Router::new().route("/v1/chat/completions", post(forward)).with_state(state);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
