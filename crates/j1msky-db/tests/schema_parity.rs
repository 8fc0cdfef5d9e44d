//! Schema parity: the SQLite and PostgreSQL migrations must build the same schema —
//! tables, columns, types (mapped across the engines), nullability, primary keys and
//! indexes (columns, uniqueness, partial or not). Both engines are migrated for real
//! and read back from their catalogues; the comparison itself is also tested on
//! hand-written schemas so a parity bug cannot hide behind a comparison that sees nothing.
//!
//! It needs PostgreSQL: it runs whenever `J1MSKY_TEST_POSTGRES_URL` is set, and always
//! in the PostgreSQL half of `scripts/test` (`J1MSKY_TEST_BACKEND=postgres`, where a
//! missing server fails the run). Only the SQLite-only local half skips it, saying so.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use j1msky_db::testing::{fresh_url_on, requested_backend, TestDb, POSTGRES_URL_ENV};
use j1msky_db::{Backend, Db, Row};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    ty: String,
    nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Index {
    columns: Vec<String>,
    unique: bool,
    partial: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Table {
    columns: BTreeMap<String, Column>,
    primary_key: Vec<String>,
    /// Named indexes by name; indexes behind a UNIQUE constraint (named by each engine
    /// its own way) by `unique(columns)`.
    indexes: BTreeMap<String, Index>,
}

type Schema = BTreeMap<String, Table>;

/// One engine-neutral name per storage type: both sides must land on the same one.
/// PostgreSQL's 32-bit INTEGER deliberately differs from SQLite's 64-bit INTEGER.
fn canonical_type(backend: Backend, declared: &str) -> String {
    let d = declared.trim().to_ascii_lowercase();
    let t = match backend {
        Backend::Sqlite if d.contains("int") => "int64",
        Backend::Sqlite if d.contains("char") || d.contains("clob") || d.contains("text") => "text",
        Backend::Sqlite if d.contains("real") || d.contains("floa") || d.contains("doub") => "float64",
        Backend::Sqlite if d.contains("blob") || d.is_empty() => "bytes",
        Backend::Sqlite if d.contains("bool") => "bool",
        Backend::Postgres if d == "bigint" => "int64",
        Backend::Postgres if d == "integer" => "int32",
        Backend::Postgres if d == "smallint" => "int16",
        Backend::Postgres if d == "text" || d.starts_with("character") => "text",
        Backend::Postgres if d == "double precision" => "float64",
        Backend::Postgres if d == "real" => "float32",
        Backend::Postgres if d == "bytea" => "bytes",
        Backend::Postgres if d == "boolean" => "bool",
        _ => return d,
    };
    t.to_string()
}

/// Every difference between the two schemas, one line each, naming table and column.
fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = sqlite.keys().chain(postgres.keys()).collect();
    for name in names {
        let (s, p) = match (sqlite.get(name), postgres.get(name)) {
            (Some(s), Some(p)) => (s, p),
            (Some(_), None) => {
                out.push(format!("table {name}: only on SQLite"));
                continue;
            }
            (None, _) => {
                out.push(format!("table {name}: only on PostgreSQL"));
                continue;
            }
        };
        let columns: BTreeSet<&String> = s.columns.keys().chain(p.columns.keys()).collect();
        for col in columns {
            match (s.columns.get(col), p.columns.get(col)) {
                (Some(a), Some(b)) => {
                    if a.ty != b.ty {
                        out.push(format!("{name}.{col}: type {} on SQLite, {} on PostgreSQL", a.ty, b.ty));
                    }
                    if a.nullable != b.nullable {
                        out.push(format!(
                            "{name}.{col}: {} on SQLite, {} on PostgreSQL",
                            nullability(a.nullable),
                            nullability(b.nullable)
                        ));
                    }
                }
                (Some(_), None) => out.push(format!("{name}.{col}: column only on SQLite")),
                (None, _) => out.push(format!("{name}.{col}: column only on PostgreSQL")),
            }
        }
        if s.primary_key != p.primary_key {
            out.push(format!("{name}: primary key {:?} on SQLite, {:?} on PostgreSQL", s.primary_key, p.primary_key));
        }
        let indexes: BTreeSet<&String> = s.indexes.keys().chain(p.indexes.keys()).collect();
        for idx in indexes {
            match (s.indexes.get(idx), p.indexes.get(idx)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) => out.push(format!("{name} index {idx}: {a:?} on SQLite, {b:?} on PostgreSQL")),
                (Some(_), None) => out.push(format!("{name} index {idx}: only on SQLite")),
                (None, _) => out.push(format!("{name} index {idx}: only on PostgreSQL")),
            }
        }
    }
    out
}

fn nullability(nullable: bool) -> &'static str {
    if nullable {
        "NULL allowed"
    } else {
        "NOT NULL"
    }
}

fn is_bookkeeping(table: &str) -> bool {
    table.starts_with("sqlite_") || table == "_sqlx_migrations"
}

async fn sqlite_schema(db: &Db) -> Schema {
    let pool = db.pool();
    let tables: Vec<String> = sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .fetch_all(pool)
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .filter(|t| !is_bookkeeping(t))
        .collect();
    let mut schema = Schema::new();
    for name in tables {
        let mut table = Table::default();
        let mut pk: Vec<(i64, String)> = Vec::new();
        let cols = sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1)")
            .bind(&name)
            .fetch_all(pool)
            .await
            .expect("columns");
        for r in cols {
            let (col, ty, notnull, pk_pos): (String, String, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
            if pk_pos > 0 {
                pk.push((pk_pos, col.clone()));
            }
            let nullable = notnull == 0 && pk_pos == 0;
            table.columns.insert(col, Column { ty: canonical_type(Backend::Sqlite, &ty), nullable });
        }
        pk.sort();
        table.primary_key = pk.into_iter().map(|(_, c)| c).collect();
        let indexes = sqlx::query("SELECT name, \"unique\", origin, partial FROM pragma_index_list($1)")
            .bind(&name)
            .fetch_all(pool)
            .await
            .expect("indexes");
        for r in indexes {
            let (idx, unique, origin, partial): (String, i64, String, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
            if origin == "pk" {
                continue;
            }
            let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                .bind(&idx)
                .fetch_all(pool)
                .await
                .expect("index columns")
                .iter()
                .map(|r| r.get::<Option<String>, _>(0).unwrap_or_else(|| "<expression>".into()))
                .collect();
            let key = if origin == "u" { format!("unique({})", columns.join(",")) } else { idx };
            table.indexes.insert(key, Index { columns, unique: unique != 0, partial: partial != 0 });
        }
        schema.insert(name, table);
    }
    schema
}

async fn postgres_schema(db: &Db) -> Schema {
    let pool = db.pool();
    let mut schema = Schema::new();
    let cols = sqlx::query(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text \
         FROM information_schema.columns c \
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .expect("columns");
    for r in cols {
        let (table, col, ty, nullable): (String, String, String, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        if is_bookkeeping(&table) {
            continue;
        }
        let column = Column { ty: canonical_type(Backend::Postgres, &ty), nullable: nullable == "YES" };
        schema.entry(table).or_default().columns.insert(col, column);
    }
    let indexes = sqlx::query(
        "SELECT t.relname::text, i.relname::text, ix.indisunique, ix.indisprimary, ix.indpred IS NOT NULL, \
                EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = ix.indexrelid), \
                array_to_string(ARRAY(SELECT COALESCE(a.attname::text, '<expression>') \
                    FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                    LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
                    ORDER BY k.ord), ',') \
         FROM pg_index ix \
         JOIN pg_class i ON i.oid = ix.indexrelid \
         JOIN pg_class t ON t.oid = ix.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema()",
    )
    .fetch_all(pool)
    .await
    .expect("indexes");
    for r in indexes {
        let (table, idx, unique, primary, partial, from_constraint, cols): (
            String,
            String,
            bool,
            bool,
            bool,
            bool,
            String,
        ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6));
        let Some(entry) = schema.get_mut(&table) else { continue };
        let columns: Vec<String> = cols.split(',').map(str::to_string).collect();
        if primary {
            entry.primary_key = columns;
            continue;
        }
        let key = if from_constraint && unique { format!("unique({})", columns.join(",")) } else { idx };
        entry.indexes.insert(key, Index { columns, unique, partial });
    }
    schema
}

/// May this run reach PostgreSQL? Only the SQLite-only local half may answer no.
fn postgres_wanted(test: &str) -> bool {
    if requested_backend() == Backend::Postgres || std::env::var_os(POSTGRES_URL_ENV).is_some() {
        return true;
    }
    eprintln!(
        "NOTICE: {test} SKIPPED: it compares SQLite with PostgreSQL and {POSTGRES_URL_ENV} is not set; \
         the PostgreSQL half of scripts/test runs it"
    );
    false
}

/// Fresh, unmigrated databases on both engines with `sqlite_ddl` and `postgres_ddl` applied.
async fn hand_written(sqlite_ddl: &str, postgres_ddl: &str) -> (Schema, Schema) {
    let (s_url, _dir) = fresh_url_on(Backend::Sqlite).await;
    let (p_url, _pg) = fresh_url_on(Backend::Postgres).await;
    let (s, p) = (Db::connect(&s_url).await.expect("sqlite"), Db::connect(&p_url).await.expect("postgres"));
    sqlx::raw_sql(sqlite_ddl).execute(s.pool()).await.expect("sqlite ddl");
    sqlx::raw_sql(postgres_ddl).execute(p.pool()).await.expect("postgres ddl");
    let schemas = (sqlite_schema(&s).await, postgres_schema(&p).await);
    s.close().await;
    p.close().await;
    schemas
}

fn migration_names(engine: &str) -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(engine);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_migration_exists_for_both_engines() {
    let (sqlite, postgres) = (migration_names("sqlite"), migration_names("postgres"));
    let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "migrations for one engine only: SQLite {only_sqlite:?}, PostgreSQL {only_postgres:?}"
    );
}

#[test]
fn the_comparison_reports_each_kind_of_difference() {
    let col = |ty: &str, nullable| Column { ty: ty.into(), nullable };
    let mut a = Table { primary_key: vec!["id".into()], ..Table::default() };
    a.columns.insert("id".into(), col("text", false));
    a.columns.insert("n".into(), col("int64", false));
    a.columns.insert("note".into(), col("text", true));
    a.indexes.insert("t_n".into(), Index { columns: vec!["n".into()], unique: false, partial: false });
    let sqlite: Schema = [("t".to_string(), a.clone())].into();
    assert!(differences(&sqlite, &sqlite).is_empty(), "a schema equals itself");

    let mut b = a.clone();
    b.columns.insert("n".into(), col("int32", true));
    b.columns.remove("note");
    b.columns.insert("extra".into(), col("text", true));
    b.primary_key = vec!["id".into(), "n".into()];
    b.indexes.insert("t_n".into(), Index { columns: vec!["n".into()], unique: true, partial: false });
    b.indexes.insert("t_extra".into(), Index { columns: vec!["extra".into()], unique: false, partial: false });
    let postgres: Schema = [("t".to_string(), b), ("pg_only".to_string(), Table::default())].into();
    let found = differences(&sqlite, &postgres);
    for expected in [
        "table pg_only: only on PostgreSQL",
        "t.n: type int64 on SQLite, int32 on PostgreSQL",
        "t.n: NOT NULL on SQLite, NULL allowed on PostgreSQL",
        "t.note: column only on SQLite",
        "t.extra: column only on PostgreSQL",
        "t: primary key",
        "t index t_n:",
        "t index t_extra: only on PostgreSQL",
    ] {
        assert!(found.iter().any(|d| d.starts_with(expected)), "missing {expected:?} in {found:#?}");
    }
    assert_eq!(found.len(), 8, "{found:#?}");
}

#[tokio::test]
async fn the_catalogues_are_read_the_same_way_on_both_engines() {
    if !postgres_wanted("the_catalogues_are_read_the_same_way_on_both_engines") {
        return;
    }
    let ddl = "CREATE TABLE a (id TEXT PRIMARY KEY, n BIGINT NOT NULL, tag TEXT UNIQUE, at BIGINT);\n\
               CREATE INDEX a_n_at ON a(n, at);\n\
               CREATE UNIQUE INDEX a_open ON a(n) WHERE at IS NULL;\n\
               CREATE TABLE b (a_id TEXT NOT NULL REFERENCES a(id), k TEXT NOT NULL, PRIMARY KEY (a_id, k));";
    let (s, p) = hand_written(ddl, ddl).await;
    assert_eq!(s.keys().collect::<Vec<_>>(), ["a", "b"], "{s:#?}");
    assert_eq!(s["b"].primary_key, ["a_id", "k"]);
    assert_eq!(s["a"].indexes.len(), 3, "{s:#?}");
    assert_eq!(differences(&s, &p), Vec::<String>::new(), "same DDL, same schema:\n{s:#?}\n{p:#?}");

    // One engine's migration drifted: each drift is reported.
    let drifted = "CREATE TABLE a (id TEXT PRIMARY KEY, n INTEGER, tag TEXT, at BIGINT, extra TEXT);\n\
                   CREATE INDEX a_n_at ON a(n);\n\
                   CREATE TABLE b (a_id TEXT NOT NULL REFERENCES a(id), k TEXT NOT NULL, PRIMARY KEY (a_id, k));\n\
                   CREATE TABLE c (id TEXT PRIMARY KEY);";
    let (s, p) = hand_written(ddl, drifted).await;
    let found = differences(&s, &p);
    for expected in [
        "a.n: type int64 on SQLite, int32 on PostgreSQL",
        "a.n: NOT NULL on SQLite, NULL allowed on PostgreSQL",
        "a.extra: column only on PostgreSQL",
        "a index a_n_at:",
        "a index a_open: only on SQLite",
        "a index unique(tag): only on SQLite",
        "table c: only on PostgreSQL",
    ] {
        assert!(found.iter().any(|d| d.starts_with(expected)), "missing {expected:?} in {found:#?}");
    }
    assert_eq!(found.len(), 7, "{found:#?}");
}

#[tokio::test]
async fn both_engines_migrate_to_the_same_schema() {
    if !postgres_wanted("both_engines_migrate_to_the_same_schema") {
        return;
    }
    let (s, p) = (TestDb::on(Backend::Sqlite).await, TestDb::on(Backend::Postgres).await);
    let (sqlite, postgres) = (sqlite_schema(&s.db).await, postgres_schema(&p.db).await);
    assert!(sqlite.contains_key("customers") && sqlite.len() > 10, "introspection saw the tables: {sqlite:#?}");
    let found = differences(&sqlite, &postgres);
    assert!(found.is_empty(), "the migrations differ between the engines:\n{}", found.join("\n"));
}
