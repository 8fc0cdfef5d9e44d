//! `j1msky config apply|history|diff|rollback`: the configuration history on the
//! command line, through the functions `/admin/config` calls.

use std::path::Path;

use j1msky_core::catalogue::LiveCatalogue;
use j1msky_ops::config_history::{self as ch, ConfigError, Entry, RolledBack, Target};
use serde_json::json;

use crate::context::{self, Globals};
use crate::{output, Failure, EXIT_INVALID};

/// Refusals exit 2 with the reason (each JSON path for a bad catalogue); storage errors 1.
fn failure(g: &Globals, what: &str, e: ConfigError) -> Failure {
    let code = match &e {
        ConfigError::Db(_) => 1,
        ConfigError::Control(j1msky_gateway::controls::ControlError::Failed(_)) => 1,
        _ => EXIT_INVALID,
    };
    if let ConfigError::Invalid(issues) = &e {
        if g.json {
            output::json(&json!({ "valid": false, "path": what, "issues": issues }));
        } else {
            for issue in issues {
                println!("{what}: {issue}");
            }
        }
        let n = issues.len();
        return Failure {
            code,
            error: anyhow::anyhow!("{what} is not a valid catalogue ({n} problem(s)); nothing stored"),
        };
    }
    Failure { code, error: anyhow::anyhow!("{what}: {e}") }
}

/// `config apply FILE --reason R`.
pub async fn apply(g: &Globals, file: std::path::PathBuf, reason: &str) -> Result<(), Failure> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Failure { code: EXIT_INVALID, error: anyhow::anyhow!("cannot read {shown}: {e}") })?;
    let templates = file.parent().map_or_else(|| Path::new("templates").to_path_buf(), |d| d.join("templates"));
    let db = context::open_db(g).await?;
    let result = ch::apply(&db, &context::actor(), &text, &shown, reason, Some(&templates), context::now()).await;
    db.close().await;
    let applied = result.map_err(|e| failure(g, &shown, e))?;
    let message = if applied.unchanged {
        format!("{shown} is already version {} in force; nothing stored", applied.version)
    } else {
        format!("{shown} is now catalogue version {}; every process serves it within a second", applied.version)
    };
    output::done(g, &message, json!(applied));
    Ok(())
}

/// `config history [--key K]`.
pub async fn history(g: &Globals, key: Option<&str>, limit: i64) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let result = ch::history(&db, key, limit).await;
    db.close().await;
    let entries = result.map_err(|e| failure(g, "history", e))?;
    output::list(g, &entries, &["when", "who", "what", "change", "reason", "id"], |e| match e {
        Entry::Catalogue(v) => vec![
            output::when(Some(v.created_at)),
            v.created_by.clone(),
            "catalogue".into(),
            format!("v{} from {} (sha256 {})", v.version, v.source, &v.sha256[..12.min(v.sha256.len())]),
            v.reason.clone(),
            v.version.to_string(),
        ],
        Entry::Setting(c) => vec![
            output::when(Some(c.changed_at)),
            c.changed_by.clone(),
            c.key.clone(),
            format!("{} → {}", unset(&c.previous), unset(&c.value)),
            output::opt(c.reason.as_deref()),
            c.id.clone(),
        ],
    });
    Ok(())
}

fn unset(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(unset)".into())
}

/// `config diff A [B]`.
pub async fn diff(g: &Globals, a: &str, b: Option<&str>) -> Result<(), Failure> {
    let target: Target = a.parse().map_err(|e| failure(g, a, e))?;
    let db = context::open_db(g).await?;
    let result = match target {
        Target::Version(va) => {
            let vb = match b {
                Some(b) => match b.parse() {
                    Ok(Target::Version(vb)) => Ok(vb),
                    _ => Err(ConfigError::Rule { field: "b", message: format!("`{b}` is not a catalogue version") }),
                },
                None => Ok(va + 1),
            };
            match vb {
                Ok(vb) => ch::diff_versions(&db, va, vb).await.map(|d| (format!("v{va} → v{vb}"), d)),
                Err(e) => Err(e),
            }
        }
        Target::SettingChange(id) => match j1msky_audit::settings::change_by_id(&db, &id).await {
            Ok(Some(c)) => Ok((
                format!("{} ({id})", c.key),
                vec![ch::PathChange {
                    path: c.key.clone(),
                    old: c.previous.map(serde_json::Value::from),
                    new: c.value.map(serde_json::Value::from),
                }],
            )),
            Ok(None) => Err(ConfigError::NotFound(format!("there is no settings change `{id}`"))),
            Err(e) => Err(e.into()),
        },
    };
    db.close().await;
    let (title, changes) = result.map_err(|e| failure(g, a, e))?;
    if g.json {
        output::json(&changes);
        return Ok(());
    }
    println!("{title}: {} difference(s)", changes.len());
    let show = |v: &Option<serde_json::Value>| v.as_ref().map_or_else(|| "(absent)".into(), |v| v.to_string());
    let rows = changes.iter().map(|c| vec![c.path.clone(), show(&c.old), show(&c.new)]).collect();
    println!("{}", output::table(&["path", "old", "new"], rows));
    Ok(())
}

/// `config rollback VERSION|SETTING-CHANGE-ID --reason R --yes`.
pub async fn rollback(g: &Globals, target: &str, reason: &str, yes: bool) -> Result<(), Failure> {
    let parsed: Target = target.parse().map_err(|e| failure(g, target, e))?;
    if !yes {
        return Err(Failure {
            code: EXIT_INVALID,
            error: anyhow::anyhow!("add --yes: every process switches to the rolled-back value within a second"),
        });
    }
    let db = context::open_db(g).await?;
    // The scopes a rolled-back cap names are checked against the catalogue in force.
    let result = match ch::active(&db).await {
        Ok(Some(stored)) => match ch::validate(&stored.body, None) {
            Ok(c) => {
                let live = LiveCatalogue::new(c, Some(stored.meta.version));
                ch::rollback(&db, &live, &context::actor(), &parsed, reason, context::now()).await
            }
            Err(e) => Err(e),
        },
        Ok(None) => match context::load_catalogue(g) {
            Ok(c) => {
                let live = LiveCatalogue::new(c, None);
                ch::rollback(&db, &live, &context::actor(), &parsed, reason, context::now()).await
            }
            Err(f) => {
                db.close().await;
                return Err(f);
            }
        },
        Err(e) => Err(e),
    };
    db.close().await;
    let done = result.map_err(|e| failure(g, target, e))?;
    let message = match &done {
        RolledBack::Catalogue(a) if a.unchanged => format!("{target} is already the version in force; nothing stored"),
        RolledBack::Catalogue(a) => format!("catalogue version {} (a copy of {target}) is now in force", a.version),
        RolledBack::Setting { key, value } => format!("{key} is {} again", unset(value)),
    };
    output::done(g, &message, json!(done));
    Ok(())
}
