//! CSV downloads of the insights tables, encoded by `j1msky_insights::csv` (the same
//! cells as `j1msky kpi --csv`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A `text/csv` download named `filename` (letters, digits, `-`, `_` and `.` only).
pub fn response(filename: &str, header: &[&str], rows: &[Vec<String>]) -> Response {
    let safe: String =
        filename.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        j1msky_insights::csv::body(header, rows),
    )
        .into_response()
}

/// The cells of margin rows, in the order of their tables' header: key, name, revenue,
/// cost, margin (micro-USD), margin in basis points (empty when unknown), tasks.
pub fn margin_rows(rows: &[j1msky_insights::kpis::MarginRow]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            vec![
                r.key.clone(),
                r.label.clone(),
                r.revenue_micros.to_string(),
                r.cost_micros.to_string(),
                r.margin_micros.to_string(),
                r.margin_bp.map(|b| b.to_string()).unwrap_or_default(),
                r.tasks.to_string(),
            ]
        })
        .collect()
}
