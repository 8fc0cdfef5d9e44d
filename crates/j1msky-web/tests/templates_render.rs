//! Every template on disk is compiled into the server and renders with sample data, so a
//! broken or unregistered template fails here rather than on a customer's screen.
// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use minijinja::{context, Value};

fn template_names(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("templates dir") {
        let path: PathBuf = entry.expect("entry").path();
        if path.is_dir() {
            template_names(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "html") {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// What the layout always gets, for an operator and a customer.
fn layouts() -> Vec<Value> {
    let nav = vec![context! { id => "customers", label => "Customers", href => "/admin/customers" }];
    vec![
        context! {
            user => context! { email => "op@agency.test", role => "operator", id => "usr_1" },
            csrf => "tok", section => "customers", nav,
            cost_mode => context! { mode => "economy", set_by => "op@agency.test" },
        },
        context! { user => context! { email => "c@acme.test", role => "customer", id => "usr_2" }, csrf => "tok", section => "account", nav => Vec::<Value>::new() },
        context! { section => "" },
    ]
}

#[test]
fn every_template_on_disk_is_registered_and_renders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let mut names = Vec::new();
    template_names(&root, &root, &mut names);
    assert!(names.len() >= 10, "found only {names:?}");
    let mut env = j1msky_web::templates::environment();
    // Page data differs per page; chainable undefined lets the shared layout and control
    // flow render, and the samples give the values filters and tests need.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    let samples: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(include_str!("template_samples.json")).expect("template_samples.json");
    let mut failures = Vec::new();
    for name in &names {
        let template = match env.get_template(name) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: not registered in templates::environment ({e})"));
                continue;
            }
        };
        let sample = Value::from_serialize(samples.get(name.as_str()).cloned().unwrap_or_default());
        for base in layouts() {
            if let Err(e) = template.render(context! { ..sample.clone(), ..base }) {
                failures.push(format!("{name}: {e:#}"));
            }
        }
    }
    assert!(failures.is_empty(), "templates that do not render:\n{}", failures.join("\n"));
}
