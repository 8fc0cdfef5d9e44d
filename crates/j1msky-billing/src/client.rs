//! A thin Stripe client for the few endpoints j1msky uses: form-encoded POSTs with an
//! `Idempotency-Key` derived from our own ids, a pinned `Stripe-Version`, and JSON
//! answers of which callers read only the fields they need.

use std::time::Duration;

use serde_json::Value;

use crate::form;
use crate::BillingError;

/// Where Stripe is and how to talk to it.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    /// `https://api.stripe.com` in production; the fake's loopback address in tests.
    pub base_url: String,
    pub secret_key: String,
    pub api_version: String,
    /// A live key is refused unless this is set (`--live` or `stripe.live` in the config).
    pub allow_live: bool,
}

/// The key's mode, read from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    Test,
    Live,
}

/// Checks a secret key's shape and mode against what the deployment allows.
pub fn key_mode(key: &str, allow_live: bool) -> Result<KeyMode, BillingError> {
    let mode = if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
        KeyMode::Test
    } else if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
        KeyMode::Live
    } else {
        return Err(BillingError::Config(
            "the Stripe secret key must start with sk_test_ (or sk_live_ for a live deployment)".into(),
        ));
    };
    if mode == KeyMode::Live && !allow_live {
        return Err(BillingError::Config(
            "a live Stripe key (sk_live_…) needs an explicit --live flag or `stripe.live: true` in the config; \
             use an sk_test_ key for a sandbox"
                .into(),
        ));
    }
    Ok(mode)
}

/// The client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stripe {
    http: reqwest::Client,
    config: StripeConfig,
    pub mode: KeyMode,
}

impl Stripe {
    pub fn new(config: StripeConfig) -> Result<Stripe, BillingError> {
        let mode = key_mode(&config.secret_key, config.allow_live)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| BillingError::Config(format!("HTTP client: {e}")))?;
        let config = StripeConfig { base_url: config.base_url.trim_end_matches('/').to_string(), ..config };
        Ok(Stripe { http, config, mode })
    }

    /// `POST /v1/{path}` with `params` form-encoded. `idempotency_key` is derived by the
    /// caller from our own ids, so a retried call is a no-op at Stripe.
    pub async fn post(&self, path: &str, params: &Value, idempotency_key: &str) -> Result<Value, BillingError> {
        let req = self
            .http
            .post(format!("{}/v1/{path}", self.config.base_url))
            .bearer_auth(&self.config.secret_key)
            .header("Stripe-Version", &self.config.api_version)
            .header("Idempotency-Key", idempotency_key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form::encode(params));
        self.send(req, path).await
    }

    /// `GET /v1/{path}` with `query` form-encoded.
    pub async fn get(&self, path: &str, query: &Value) -> Result<Value, BillingError> {
        let q = form::encode(query);
        let url = if q.is_empty() {
            format!("{}/v1/{path}", self.config.base_url)
        } else {
            format!("{}/v1/{path}?{q}", self.config.base_url)
        };
        let req =
            self.http.get(url).bearer_auth(&self.config.secret_key).header("Stripe-Version", &self.config.api_version);
        self.send(req, path).await
    }

    /// Like `get`, but a 404 (`resource_missing`) is `None`.
    pub async fn find(&self, path: &str) -> Result<Option<Value>, BillingError> {
        match self.get(path, &Value::Null).await {
            Ok(v) => Ok(Some(v)),
            Err(BillingError::Stripe { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, path: &str) -> Result<Value, BillingError> {
        let resp = req.send().await.map_err(|e| BillingError::Unreachable(format!("{path}: {e}")))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| BillingError::Unreachable(format!("{path}: unreadable answer (status {status}): {e}")))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let err = &body["error"];
        Err(BillingError::Stripe {
            status,
            code: err["code"].as_str().or(err["type"].as_str()).unwrap_or("unknown").to_string(),
            message: format!("{path}: {}", err["message"].as_str().unwrap_or("no message")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_keys_pass_live_keys_need_the_flag_and_anything_else_is_refused() {
        assert_eq!(key_mode("sk_test_abc", false).ok(), Some(KeyMode::Test));
        assert_eq!(key_mode("sk_live_abc", true).ok(), Some(KeyMode::Live));
        let err = key_mode("sk_live_abc", false).expect_err("live without the flag");
        assert!(err.to_string().contains("--live"), "{err}");
        assert!(key_mode("pk_test_abc", true).is_err(), "a publishable key is not a secret key");
    }
}
