//! Scripted answer openings: `POST /_sim/answers {"prefix", "model"?, "times"?}` makes the
//! next `times` answers (for that upstream model, or any) start with `prefix` instead of
//! `[simulated]`, so a test can have a reviewing role say `REVISE:` the way a real model
//! would. Usage (token counts) stays as for any other answer, so costs stay exact.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{lock, Sim};

/// A scripted answer opening, consumed by the next `times` matching answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedAnswer {
    /// What the answer starts with (in place of `[simulated]`).
    pub prefix: String,
    /// Only answers for this upstream model name (any model when absent).
    #[serde(default)]
    pub model: Option<String>,
    /// How many answers it applies to.
    #[serde(default = "crate::one")]
    pub times: u32,
}

impl Sim {
    /// The opening of the next answer for `model`, consuming one scripted use.
    pub(crate) fn take_prefix(&self, model: &str) -> Option<String> {
        let mut answers = lock(&self.answers);
        let pos = answers.iter().position(|a| a.model.as_deref().is_none_or(|m| m == model))?;
        let prefix = answers[pos].prefix.clone();
        answers[pos].times -= 1;
        if answers[pos].times == 0 {
            answers.remove(pos);
        }
        Some(prefix)
    }
}

pub(crate) async fn add_answers(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response();
    let a: ScriptedAnswer = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad(format!("expected {{\"prefix\", \"model\"?, \"times\"?}}: {e}")),
    };
    if a.times == 0 {
        return bad("`times` must be at least 1".into());
    }
    if a.prefix.trim().is_empty() {
        return bad("`prefix` must not be empty".into());
    }
    let mut answers = lock(&sim.answers);
    answers.push_back(a);
    Json(json!({"queued": answers.len()})).into_response()
}
