//! Human tables by default, JSON with `--json`.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use crate::context::Globals;

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot write JSON: {e}"),
    }
}

/// A table with a header row.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    t
}

/// Prints rows as a table, or the serialisable items as a JSON array.
pub fn list<T: Serialize>(g: &Globals, items: &[T], header: &[&str], row: impl Fn(&T) -> Vec<String>) {
    if g.json {
        json(items);
    } else if items.is_empty() {
        println!("(none)");
    } else {
        println!("{}", table(header, items.iter().map(row).collect()));
    }
}

/// Prints a confirmation line, or `value` as JSON.
pub fn done(g: &Globals, message: &str, value: serde_json::Value) {
    if g.json {
        json(&value);
    } else {
        println!("{message}");
    }
}

/// A UTC timestamp for humans (`2026-11-24 09:30:00 UTC`), or `-`.
pub fn when(micros: Option<i64>) -> String {
    match micros {
        Some(m) => j1msky_core::clock::format_utc(m).replace('T', " ").replace('Z', " UTC"),
        None => "-".into(),
    }
}

/// An optional value or `-`.
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}
