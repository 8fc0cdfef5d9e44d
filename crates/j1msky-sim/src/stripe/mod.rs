//! A fake Stripe on loopback: the v1 endpoints j1msky uses, form-encoded in and JSON
//! out as Stripe speaks them, stateful, with `Idempotency-Key` replay, and webhooks
//! signed as Stripe signs them (`Stripe-Signature: t=…,v1=…`) posted to a configured
//! URL. Deliveries can be duplicated, held and released in reverse order, or refused
//! on demand; API calls can fail on demand. `/_sim/…` routes drive what in real life a
//! customer or time does: completing a checkout, renewing a period, refunding a charge.

mod flows;
pub mod form;
mod hooks;
mod invoices;
mod items;
mod objects;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub use hooks::sign;

/// How the fake starts.
#[derive(Debug, Clone)]
pub struct FakeStripeConfig {
    /// Where webhooks go (`http://127.0.0.1:PORT/webhooks/stripe`); none: kept, not sent.
    pub webhook_url: Option<String>,
    /// The endpoint secret webhooks are signed with (`whsec_…`).
    pub webhook_secret: String,
    /// Unix seconds the fake's clock starts at (tests with a manual clock); none: real time.
    pub now: Option<i64>,
}

impl Default for FakeStripeConfig {
    fn default() -> Self {
        FakeStripeConfig { webhook_url: None, webhook_secret: "whsec_j1msky_fake".into(), now: None }
    }
}

/// How long Stripe keeps an `Idempotency-Key` (24 hours): a POST replayed later is a
/// new request and makes a new object.
pub const IDEMPOTENCY_WINDOW: i64 = 86_400;

// Stripe's clock is the real one; tests move the fake's own offset (`now`), not ours.
#[allow(clippy::disallowed_methods)]
fn real_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A running fake; stops when dropped.
pub struct RunningStripe {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningStripe {
    /// The base URL a Stripe client is pointed at.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningStripe {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// An API error as Stripe writes it.
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<String>,
}

impl ApiError {
    pub(crate) fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "parameter_invalid",
            message: message.into(),
            param: Some(param.into()),
        }
    }
    /// Stripe's answer to a charge the card refuses (HTTP 402).
    pub(crate) fn card_declined() -> ApiError {
        ApiError {
            status: StatusCode::PAYMENT_REQUIRED,
            kind: "card_error",
            code: "card_declined",
            message: "Your card was declined.".into(),
            param: None,
        }
    }
    pub(crate) fn missing(what: &str, id: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "resource_missing",
            message: format!("No such {what}: '{id}'"),
            param: Some("id".into()),
        }
    }
}

impl ApiError {
    fn body(&self) -> Value {
        json!({"error": {"type": self.kind, "code": self.code, "message": self.message, "param": self.param}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        (self.status, Json(body)).into_response()
    }
}

pub(crate) type ApiResult = Result<Value, ApiError>;

/// Everything the fake holds.
pub(crate) struct Store {
    pub objects: HashMap<String, Value>,
    /// Oldest first.
    pub events: Vec<Value>,
    /// Idempotency-Key → (request fingerprint, status, answer, when stored): forgotten
    /// once [`IDEMPOTENCY_WINDOW`] has passed on the fake's clock, as Stripe forgets them.
    pub(crate) idempotency: HashMap<String, (String, u16, Value, i64)>,
    pub(crate) seq: u64,
    pub clock_offset: i64,
    pub(crate) fail_next: u32,
    /// Calls let through before the failures start.
    pub(crate) fail_skip: u32,
    pub(crate) fail_status: u16,
    /// Requests carried out whose answers are then lost (a 500 instead, as a timeout or a
    /// dropped connection looks to the caller).
    pub(crate) lose_next: u32,
    pub hooks: hooks::Settings,
    /// The Idempotency-Key of the API request being served, echoed in the events it
    /// causes (`request.idempotency_key`) as Stripe does; None for what a customer
    /// does in Stripe's own pages (portal) and for the clock.
    pub(crate) request_key: Option<String>,
}

impl Store {
    pub fn now(&self) -> i64 {
        real_now() + self.clock_offset
    }

    /// A fresh id with Stripe's prefix.
    pub fn id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        let salt: u32 = rand::random();
        format!("{prefix}_{:08}{:08x}", self.seq, salt)
    }

    /// Records an event; the caller's Shared delivers it.
    pub fn event(&mut self, kind: &str, object: &Value, previous: Option<Value>) -> Value {
        let id = self.id("evt");
        let mut data = json!({"object": public(&self.with_current_prices(object))});
        if let Some(p) = previous {
            data["previous_attributes"] = p;
        }
        let request = match self.request_key.clone() {
            Some(key) => json!({"id": self.id("req"), "idempotency_key": key}),
            None => json!({"id": null, "idempotency_key": null}),
        };
        let ev = json!({
            "id": id, "object": "event", "api_version": "2024-06-20", "created": self.now(), "data": data,
            "livemode": false, "pending_webhooks": 1, "request": request, "type": kind,
        });
        self.events.push(ev.clone());
        self.hooks.queue(ev.clone());
        ev
    }

    /// `v` with every embedded price as it is now: Stripe renders a subscription's or an
    /// invoice line's price when asked, so an archived price shows `active: false` and
    /// a lookup key since moved to another price shows none.
    pub fn with_current_prices(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) if m.get("object").and_then(Value::as_str) == Some("price") => m
                .get("id")
                .and_then(Value::as_str)
                .and_then(|id| self.objects.get(id))
                .cloned()
                .unwrap_or_else(|| v.clone()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), self.with_current_prices(v))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| self.with_current_prices(v)).collect()),
            other => other.clone(),
        }
    }

    pub fn get(&self, prefix: &str, what: &str, id: &str) -> Result<Value, ApiError> {
        self.objects.get(id).filter(|_| id.starts_with(prefix)).cloned().ok_or_else(|| ApiError::missing(what, id))
    }
}

/// An object as Stripe shows it: our private bookkeeping (keys starting `_`) removed.
pub(crate) fn public(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(k, _)| !k.starts_with('_')).map(|(k, v)| (k.clone(), public(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(public).collect()),
        other => other.clone(),
    }
}

pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub deliver: hooks::Deliverer,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the fake on a free loopback port.
pub async fn spawn_stripe(config: FakeStripeConfig) -> std::io::Result<RunningStripe> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    serve_stripe(listener, config).await
}

/// Starts the fake on a given listener.
pub async fn serve_stripe(
    listener: tokio::net::TcpListener,
    config: FakeStripeConfig,
) -> std::io::Result<RunningStripe> {
    let addr = listener.local_addr()?;
    let deliver = hooks::Deliverer::start(config.webhook_secret.clone());
    let shared = Arc::new(Shared {
        store: Mutex::new(Store {
            objects: HashMap::new(),
            events: Vec::new(),
            idempotency: HashMap::new(),
            seq: 0,
            clock_offset: config.now.map_or(0, |t| t - real_now()),
            fail_next: 0,
            fail_skip: 0,
            fail_status: 500,
            lose_next: 0,
            hooks: hooks::Settings::new(config.webhook_url.clone()),
            request_key: None,
        }),
        deliver,
    });
    let app = axum::Router::new().fallback(handle).with_state(shared);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Tracked by the returned `RunningStripe`: dropping it stops the server.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        let stopped = async {
            let _ = rx.await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
            tracing::error!(error = %e, "fake Stripe stopped");
        }
    });
    Ok(RunningStripe { addr, stop: Some(tx) })
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let params = if method == Method::GET || method == Method::DELETE {
        form::decode(uri.query().unwrap_or(""))
    } else if headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("json")) {
        serde_json::from_str(&body_text).unwrap_or(Value::Null)
    } else {
        form::decode(&body_text)
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segments.first() == Some(&"_sim") {
        let out = flows::control(&shared, &method, &segments[1..], &params);
        shared.deliver.flush(&shared);
        return match out {
            Ok(v) => Json(public(&v)).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let authorised = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k.starts_with("sk_test_") || k.starts_with("rk_test_"));
    if !authorised {
        let e = ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: "api_key_invalid",
            message: "Invalid API Key provided".into(),
            param: None,
        };
        return e.into_response();
    }
    let idem = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(String::from);
    let fingerprint = format!("{method} {path} {body_text}");
    {
        let mut s = shared.lock();
        if s.fail_next > 0 && s.fail_skip > 0 {
            s.fail_skip -= 1;
        } else if s.fail_next > 0 {
            s.fail_next -= 1;
            let status = StatusCode::from_u16(s.fail_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let e = ApiError {
                status,
                kind: "api_error",
                code: "simulated_failure",
                message: "simulated failure".into(),
                param: None,
            };
            return e.into_response();
        }
        if method == Method::POST {
            if let Some(key) = &idem {
                let now = s.now();
                if s.idempotency.get(key).is_some_and(|(_, _, _, at)| now - *at >= IDEMPOTENCY_WINDOW) {
                    s.idempotency.remove(key);
                }
                if let Some((fp, status, v, _)) = s.idempotency.get(key) {
                    if fp != &fingerprint {
                        let e = ApiError {
                            status: StatusCode::BAD_REQUEST,
                            kind: "idempotency_error",
                            code: "idempotency_key_in_use",
                            message: format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."),
                            param: None,
                        };
                        return e.into_response();
                    }
                    let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
                    let mut resp = (status, Json(v.clone())).into_response();
                    resp.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
                    return resp;
                }
            }
        }
    }
    shared.lock().request_key = idem.clone().filter(|_| method == Method::POST || method == Method::DELETE);
    let out = objects::api(&shared, &method, &segments, &params);
    shared.lock().request_key = None;
    shared.deliver.flush(&shared);
    {
        let mut s = shared.lock();
        if s.lose_next > 0 {
            s.lose_next -= 1;
            let e = ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "api_error",
                code: "simulated_lost_reply",
                message: "the request was carried out but its answer was lost".into(),
                param: None,
            };
            return e.into_response();
        }
    }
    let (status, v) = match out {
        Ok(v) => (StatusCode::OK, public(&v)),
        // A declined card is a request Stripe carried out: its answer is kept under the
        // key like a success, so a retry with the same key gets the same 402.
        Err(e) if e.kind == "card_error" => (e.status, e.body()),
        Err(e) => {
            return e.into_response();
        }
    };
    if let (true, Some(key)) = (method == Method::POST, idem) {
        let mut s = shared.lock();
        let at = s.now();
        s.idempotency.insert(key, (fingerprint, status.as_u16(), v.clone(), at));
    }
    (status, Json(v)).into_response()
}

/// Integer from a form value (always a string on the wire) or a JSON number.
pub(crate) fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Boolean from a form value.
pub(crate) fn boolean(v: &Value) -> Option<bool> {
    v.as_bool().or_else(|| match v.as_str() {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    })
}

/// Stripe's metadata update: keys merge, an empty value removes a key.
pub(crate) fn merge_metadata(old: &Value, new: &Value) -> Value {
    let mut m = old.as_object().cloned().unwrap_or_default();
    if let Some(n) = new.as_object() {
        for (k, v) in n {
            if v.as_str() == Some("") {
                m.remove(k);
            } else {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(m)
}
