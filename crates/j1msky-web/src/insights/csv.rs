//! CSV exports of the insights tables: RFC 4180 quoting, and text cells that a
//! spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) neutralised with
//! a leading `'`. Plain integers are left as they are (`-1250` is a number, not a formula).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One cell as it goes into the file.
pub fn cell(value: &str) -> String {
    let is_number = {
        let digits = value.strip_prefix('-').unwrap_or(value);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let risky = value.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_number;
    let text = if risky { format!("'{value}") } else { value.to_string() };
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The whole file: a header line, then one line per row, CRLF line ends.
pub fn body(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = String>| cells.collect::<Vec<_>>().join(",") + "\r\n";
    out.push_str(&line(&mut header.iter().map(|h| cell(h))));
    for r in rows {
        out.push_str(&line(&mut r.iter().map(|c| cell(c))));
    }
    out
}

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
        body(header, rows),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_neutralises() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("-1250"), "-1250");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1 555"), "'+1 555");
        assert_eq!(cell("-2+3"), "'-2+3");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(body(&["a", "b"], &[vec!["1".into(), "x\"y".into()]]), "a,b\r\n1,\"x\"\"y\"\r\n");
    }
}
