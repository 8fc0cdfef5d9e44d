// A test stops at the first surprise: unwrap and expect are its assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

//! Each table has one owning crate: only its `src/` writes the table, and the other
//! crates call its functions. Some tables are closed altogether: no other crate has
//! SQL on them at all, not even a read. This reads every crate's sources and every
//! table the migrations create, so a new table without an owner, or a write from
//! the wrong crate, fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Table -> the crate that owns it. A table named `lifecycle_…` (`insights_…`, `ops_…`)
/// belongs to `j1msky-lifecycle` (`j1msky-insights`, `j1msky-ops`) without being listed.
const OWNERS: &[(&str, &str)] = &[
    ("events", "j1msky-db"),
    ("consumer_cursors", "j1msky-db"),
    ("consumer_failures", "j1msky-db"),
    ("jobs", "j1msky-db"),
    ("audit_log", "j1msky-audit"),
    ("alerts", "j1msky-audit"),
    ("settings", "j1msky-audit"),
    ("settings_history", "j1msky-audit"),
    ("customers", "j1msky-accounts"),
    ("customer_stage_changes", "j1msky-accounts"),
    ("users", "j1msky-accounts"),
    ("sessions", "j1msky-accounts"),
    ("api_keys", "j1msky-accounts"),
    ("login_failures", "j1msky-accounts"),
    ("known_devices", "j1msky-accounts"),
    ("account_tokens", "j1msky-accounts"),
    ("account_trials", "j1msky-accounts"),
    ("usage_counters", "j1msky-gateway"),
    ("budget_windows", "j1msky-gateway"),
    ("budget_reservations", "j1msky-gateway"),
    ("limit_leases", "j1msky-gateway"),
    ("llm_calls", "j1msky-gateway"),
    ("tasks", "j1msky-tasks"),
    ("task_steps", "j1msky-tasks"),
    ("usage_charges", "j1msky-tasks"),
    ("api_included_days", "j1msky-tasks"),
    ("stripe_objects", "j1msky-billing"),
    ("stripe_events", "j1msky-billing"),
    ("subscriptions", "j1msky-billing"),
    ("subscription_history", "j1msky-billing"),
    ("revenue_entries", "j1msky-billing"),
    ("disputes", "j1msky-billing"),
    ("exit_surveys", "j1msky-billing"),
    ("offer_grants", "j1msky-billing"),
];

/// Tables no crate but the owner has any SQL on (reads included): the others call
/// the owner's functions (`j1msky_tasks::charges` for pay-per-task charges).
const CLOSED: &[&str] = &["usage_charges", "api_included_days"];

/// Tables only a migration uses on its way (a copy renamed over the original).
const TRANSIENT: &[&str] = &["usage_charges_new"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn owner_of(table: &str) -> Option<&'static str> {
    if table.starts_with("lifecycle_") {
        return Some("j1msky-lifecycle");
    }
    if table.starts_with("insights_") {
        return Some("j1msky-insights");
    }
    if table.starts_with("ops_") {
        return Some("j1msky-ops");
    }
    OWNERS.iter().find(|(t, _)| *t == table).map(|(_, c)| *c)
}

/// Lower-case text with every run of whitespace made one space.
fn normalised(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Whether `text` has `prefix` followed by `table` as a whole word.
fn mentions(text: &str, prefix: &str, table: &str) -> bool {
    let needle = format!("{prefix}{table}");
    text.match_indices(&needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !word(after) && (prefix.starts_with(' ') || !word(before))
    })
}

fn writes(text: &str, table: &str) -> bool {
    ["insert into ", "update ", "delete from "].iter().any(|p| mentions(text, p, table))
}

fn any_sql(text: &str, table: &str) -> bool {
    writes(text, table) || [" from ", " join "].iter().any(|p| mentions(text, p, table))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// crate name -> (file, normalised text) of every source file under `crates/*/src`.
fn sources() -> BTreeMap<String, Vec<(PathBuf, String)>> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let texts = files.into_iter().map(|f| (f.clone(), normalised(&std::fs::read_to_string(&f).unwrap()))).collect();
        all.insert(name, texts);
    }
    all
}

fn migration_tables() -> Vec<String> {
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(root().join("crates/j1msky-db/migrations/sqlite")).unwrap() {
        let text = normalised(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        for part in text.split("create table ").skip(1) {
            let name = part.trim_start_matches("if not exists ");
            let name: String = name.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !tables.contains(&name) {
                tables.push(name);
            }
        }
    }
    tables.sort();
    tables
}

#[test]
fn every_table_a_migration_creates_has_an_owning_crate() {
    let tables = migration_tables();
    assert!(tables.iter().any(|t| t == "usage_charges"), "read the migrations: {tables:?}");
    let orphans: Vec<_> = tables.iter().filter(|t| owner_of(t).is_none() && !TRANSIENT.contains(&t.as_str())).collect();
    assert!(orphans.is_empty(), "tables without an owner (add them to OWNERS in this test): {orphans:?}");
}

#[test]
fn only_the_owning_crate_writes_a_table() {
    let sources = sources();
    assert!(sources.contains_key("j1msky-tasks"), "read the crates: {:?}", sources.keys());
    let mut wrong = Vec::new();
    for table in migration_tables() {
        let Some(owner) = owner_of(&table) else { continue };
        for (krate, files) in &sources {
            if krate == owner {
                continue;
            }
            for (file, text) in files {
                if writes(text, &table) {
                    wrong.push(format!("{} writes `{table}`, owned by {owner}", file.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_closed_table_has_sql_in_its_owner_only() {
    let sources = sources();
    let mut wrong = Vec::new();
    for table in CLOSED {
        let owner = owner_of(table).unwrap();
        let in_owner = sources[owner].iter().any(|(_, text)| any_sql(text, table));
        assert!(in_owner, "the owner {owner} has the SQL on `{table}`");
        for (krate, files) in &sources {
            if krate == owner {
                continue;
            }
            for (file, text) in files {
                if any_sql(text, table) {
                    wrong.push(format!("{} has SQL on `{table}`: call {owner}'s functions instead", file.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_scan_recognises_reads_and_writes() {
    let sql = normalised("SELECT id FROM\n   usage_charges WHERE x");
    assert!(any_sql(&sql, "usage_charges"));
    assert!(!writes(&sql, "usage_charges"));
    assert!(writes(&normalised("UPDATE usage_charges SET a = 1"), "usage_charges"));
    assert!(writes(&normalised("INSERT INTO usage_charges (id)"), "usage_charges"));
    assert!(!any_sql(&normalised("SELECT 1 FROM usage_charges_new"), "usage_charges"), "whole words only");
    assert!(!writes(&normalised("UPDATE my_tasks SET"), "tasks"), "whole words only");
    assert!(any_sql(&normalised("a JOIN usage_charges u ON"), "usage_charges"));
}
