//! Scripted answer openings: `POST /_sim/answers {"prefix", "model"?, "times"?}` makes the
//! next `times` answers (for that upstream model, or any) start with `prefix` instead of
//! `[simulated]`, so a test can have a reviewing role say `REVISE:` the way a real model
//! would. Usage (token counts) stays as for any other answer, so costs stay exact.
//! `reasoning_tokens` makes the answer think first, the way Kimi K2.5 does: that many
//! words of `reasoning_content` before the answer (OpenAI format only), counted in
//! `completion_tokens` as Moonshot counts them.

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
    /// Hidden reasoning before the answer, in tokens (OpenAI format; 0: none).
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Sim {
    /// The opening of the next answer for `model` and the tokens it reasons first,
    /// consuming one scripted use.
    pub(crate) fn take_prefix(&self, model: &str) -> Option<(String, u64)> {
        let mut answers = lock(&self.answers);
        let pos = answers.iter().position(|a| a.model.as_deref().is_none_or(|m| m == model))?;
        let taken = (answers[pos].prefix.clone(), answers[pos].reasoning_tokens);
        answers[pos].times -= 1;
        if answers[pos].times == 0 {
            answers.remove(pos);
        }
        Some(taken)
    }
}

pub(crate) async fn add_answers(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response();
    let a: ScriptedAnswer = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad(format!("expected {{\"prefix\", \"model\"?, \"times\"?, \"reasoning_tokens\"?}}: {e}")),
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
