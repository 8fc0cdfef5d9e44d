//! Which model serves a request: the category routing of the catalogue, the runtime
//! mode (Opus paused, cheap only), the plan's allowlist, and the fallback chain.

use std::fmt;
use std::str::FromStr;

use j1msky_core::catalogue::{Catalogue, ModelOutsidePlan};
use j1msky_core::Money;

/// The gateway's cost mode, switchable at runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Normal,
    /// Reserved (premium) models are skipped: their requests go to the next model down.
    OpusPaused,
    /// Every request goes to the catalogue's economy model.
    CheapOnly,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Normal, Mode::OpusPaused, Mode::CheapOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::OpusPaused => "opus_paused",
            Mode::CheapOnly => "cheap_only",
        }
    }

    /// How strict the mode is (cheap-only is stricter than Opus-paused).
    pub fn severity(self) -> u8 {
        match self {
            Mode::Normal => 0,
            Mode::OpusPaused => 1,
            Mode::CheapOnly => 2,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "normal" => Ok(Mode::Normal),
            "opus_paused" => Ok(Mode::OpusPaused),
            "cheap_only" => Ok(Mode::CheapOnly),
            other => Err(format!("`{other}` is not a mode; modes are normal, opus_paused, cheap_only")),
        }
    }
}

/// Why a request cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unknown model `{0}`; GET /v1/models lists the models you can use")]
    UnknownModel(String),
    #[error("no model allowed by your plan can serve this request")]
    NotAllowed,
    /// The caller named a model its plan does not include, and the plan refuses those.
    #[error("model `{model}` is not in your plan; your plan's models are: {}", allowed.join(", "))]
    OutsidePlan { model: String, allowed: Vec<String> },
}

/// The decision: the model to try first, then its fallbacks in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Catalogue model id the caller asked for (or the category's model).
    pub requested: String,
    /// Models to try, in order; the first is the routed model.
    pub chain: Vec<String>,
    /// Why the routed model differs from the requested one, if it does.
    pub reason: Option<String>,
}

/// Finds a catalogue model by its id or by its upstream name.
pub fn find_model<'a>(c: &'a Catalogue, name: &str) -> Option<&'a str> {
    if let Some((id, _)) = c.models.get_key_value(name) {
        return Some(id.as_str());
    }
    c.models.iter().find(|(_, m)| m.upstream == name).map(|(id, _)| id.as_str())
}

/// Routes a request. `requested` is a model name from the caller (`None` or `auto`:
/// route by `category`). A named model outside `allowed` is refused when `outside` says
/// so; otherwise (and always for `auto`) the chain starts at the first model of its
/// fallbacks that is allowed.
pub fn route(
    c: &Catalogue,
    requested: Option<&str>,
    category: &str,
    mode: Mode,
    allowed: Option<&[String]>,
    outside: ModelOutsidePlan,
) -> Result<Route, RouteError> {
    let requested_id = match requested.map(str::trim) {
        None | Some("") | Some("auto") => c.model_for_category(category).to_string(),
        Some(name) => {
            let id = find_model(c, name).ok_or_else(|| RouteError::UnknownModel(name.to_string()))?;
            if let Some(list) = allowed.filter(|list| !list.iter().any(|m| m == id)) {
                if outside == ModelOutsidePlan::Refuse {
                    return Err(RouteError::OutsidePlan { model: name.to_string(), allowed: list.to_vec() });
                }
            }
            id.to_string()
        }
    };
    let reserved_ok = |model: &str| match c.routing.model_only_for.get(model) {
        Some(categories) => mode == Mode::Normal && categories.iter().any(|k| k == category),
        None => true,
    };
    let permitted = |model: &str| {
        let by_plan = allowed.is_none_or(|list| list.iter().any(|m| m == model));
        let by_mode = match mode {
            Mode::CheapOnly => model == c.routing.economy_model,
            _ => true,
        };
        by_plan && by_mode && reserved_ok(model)
    };
    let mut start = requested_id.clone();
    let mut reason = None;
    if mode == Mode::CheapOnly {
        start = c.routing.economy_model.clone();
        if start != requested_id {
            reason = Some("cheap_only mode".to_string());
        }
    }
    // Walk the fallback chain from the starting model; keep every permitted model.
    let mut chain = Vec::new();
    let mut current = Some(start.clone());
    let mut seen = 0;
    while let Some(model) = current {
        seen += 1;
        if seen > c.models.len() + 1 {
            break;
        }
        if permitted(&model) {
            chain.push(model.clone());
        } else if chain.is_empty() && reason.is_none() {
            reason = Some(skip_reason(c, &model, category, mode, allowed));
        }
        current = c.models.get(&model).and_then(|m| m.fallback.clone());
    }
    if chain.is_empty() {
        return Err(RouteError::NotAllowed);
    }
    Ok(Route { requested: requested_id, chain, reason })
}

fn skip_reason(c: &Catalogue, model: &str, category: &str, mode: Mode, allowed: Option<&[String]>) -> String {
    if allowed.is_some_and(|list| !list.iter().any(|m| m == model)) {
        return format!("{model} is not in the plan");
    }
    if let Some(categories) = c.routing.model_only_for.get(model) {
        if mode == Mode::OpusPaused {
            return format!("{model} paused (opus_paused mode)");
        }
        if !categories.iter().any(|k| k == category) {
            return format!("{model} is reserved for {}", categories.join(", "));
        }
    }
    format!("{model} not permitted")
}

/// The most a call can cost on `model`: every input token (no more than the model's
/// context window holds: the provider refuses a longer prompt) plus `max_tokens` output
/// tokens at list price, rounded up to the micro-dollar.
pub fn max_cost(c: &Catalogue, model: &str, input_tokens: u64, max_tokens: u32) -> Money {
    let window = c.models.get(model).map_or(u64::MAX, |m| u64::from(m.context_window));
    cost(c, model, input_tokens.min(window), u64::from(max_tokens))
}

/// What `input`/`output` tokens cost on `model` at the catalogue's dated prices, rounded
/// up to the micro-dollar (a fraction of a micro-dollar is never given away).
pub fn cost(c: &Catalogue, model: &str, input_tokens: u64, output_tokens: u64) -> Money {
    let Some(m) = c.models.get(model) else { return Money::ZERO };
    let micro_per_mtok_in = m.input_per_mtok.micros().max(0) as u128;
    let micro_per_mtok_out = m.output_per_mtok.micros().max(0) as u128;
    let numerator = u128::from(input_tokens) * micro_per_mtok_in + u128::from(output_tokens) * micro_per_mtok_out;
    let micros = numerator.div_ceil(1_000_000);
    Money::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}
