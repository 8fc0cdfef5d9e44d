//! Templates: `config/templates/<name>.subject.j2`, `<name>.txt.j2`, `<name>.html.j2`,
//! rendered by minijinja with strict undefined (a missing variable is an error, never
//! an empty string) and the HTML part autoescaped. The files are read on every render,
//! so an operator's edit shows in the next message.

use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::LifecycleError;

/// The template that renders newsletters.
pub const NEWSLETTER: &str = "newsletter";

/// A rendered message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

const PARTS: [&str; 3] = ["subject", "txt", "html"];

/// Renders template `name` with `context`.
pub fn render(ctx: &crate::Ctx, name: &str, context: &serde_json::Value) -> Result<Rendered, LifecycleError> {
    render_from(&ctx.templates_dir, name, context)
}

/// Renders template `name` from the files under `dir`.
pub fn render_from(dir: &Path, name: &str, context: &serde_json::Value) -> Result<Rendered, LifecycleError> {
    let err = |message: String| LifecycleError::Template { template: name.to_string(), message };
    if !j1msky_core::catalogue::lifecycle::is_template_name(name) {
        return Err(err("a template name is letters, digits and `_` only".into()));
    }
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|file| if file.ends_with(".html.j2") { AutoEscape::Html } else { AutoEscape::None });
    for part in PARTS {
        let file = format!("{name}.{part}.j2");
        let path = dir.join(&file);
        let source = std::fs::read_to_string(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        env.add_template_owned(file.clone(), source).map_err(|e| err(format!("{file}: {}", describe(&e))))?;
    }
    let part = |p: &str| -> Result<String, LifecycleError> {
        let file = format!("{name}.{p}.j2");
        let t = env.get_template(&file).map_err(|e| err(format!("{file}: {}", describe(&e))))?;
        t.render(context).map_err(|e| err(format!("{file}: {}", describe(&e))))
    };
    let subject = part("subject")?;
    let subject = subject.trim().to_string();
    if subject.contains(['\r', '\n']) || subject.is_empty() {
        return Err(err("the subject must be one non-empty line".into()));
    }
    Ok(Rendered { subject, text: part("txt")?, html: part("html")? })
}

/// A minijinja error with its line and cause, on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
}

/// The names of the templates under `dir` (stems with all three parts present), sorted.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|f| f.strip_suffix(".subject.j2")).map(String::from))
                .filter(|n| PARTS.iter().all(|p| dir.join(format!("{n}.{p}.j2")).is_file()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A context with every variable the shipped templates use, filled with sample values:
/// what `config check` and the preview render with when no customer is chosen.
pub fn sample_context(catalogue: &j1msky_core::catalogue::Catalogue, base_url: &str) -> serde_json::Value {
    let stats = serde_json::json!({
        "total": 12, "succeeded": 11, "failed": 1, "success_percent": 91,
        "charged": "$42.00", "top_teams": [{"team": "research", "tasks": 8}, {"team": "content", "tasks": 4}],
    });
    let b = base_url.trim_end_matches('/');
    let mut sample_links = links(catalogue, base_url);
    // What operator mail adds to the links (`ops::notify`, `ops::reports`).
    sample_links["alerts"] = format!("{b}/admin/alerts").into();
    sample_links["admin"] = format!("{b}/admin/review/morning").into();
    serde_json::json!({
        "business": {"name": catalogue.business.name, "support_email": catalogue.business.support_email},
        "customer": {"id": "cus_sample", "name": "Sample Co", "plan": "pro", "time_zone": "Europe/Berlin"},
        "links": sample_links,
        "all_time": stats,
        "week": stats,
        "month": stats,
        "recommendations": ["Batch similar research tasks into one brief to save on spend."],
        "survey": {"url": format!("{}/s/sample-token", base_url.trim_end_matches('/')), "valid_days": 30},
        "newsletter": {
            "subject": "News from us",
            "body_text": "# What is new\n\nA **new team** joined.",
            "body_html": "<h2>What is new</h2>\n<p>A <strong>new team</strong> joined.</p>\n",
        },
        "office_hours": {"when": "Thursday 5 March 2026, 16:00", "zone": "Europe/Berlin", "minutes": 60, "url": "https://meet.example.com/sample"},
        "case_studies": [{"customer": "Sample Co", "text": "Our weekly research brief now takes an hour, not a day."}],
        "lead": {"contact_name": "Sam Sample", "expected_monthly_tasks": 80},
        "trial": {"plan_name": "Starter", "tasks": 20, "ends": "15 March 2026"},
        "account": {
            "name": "Sam Sample", "email": "sam@sample.test", "invited_by": "Ann Owner",
            "url": format!("{}/set-password/sample-token", base_url.trim_end_matches('/')),
            "valid_days": 7, "valid_minutes": 60,
        },
        // Operator mail: an alert (or an hour's digest of one kind) and a daily review.
        "alert": {"kind": "budget_level", "count": 1, "messages": ["80 % of the day's budget is spent"]},
        "report": {
            "title": "Morning review", "text": "Errors: 2 failed tasks",
            "sections": [{"heading": "Errors", "lines": ["2 failed tasks"]}],
        },
    })
}

/// The links lifecycle mail points to: the pages the server serves under the public
/// base URL, and the catalogue's `lifecycle.delivery.links` (`null` when unset, so a
/// template leaves the sentence out with `{% if links.x %}`).
pub fn links(catalogue: &j1msky_core::catalogue::Catalogue, base_url: &str) -> serde_json::Value {
    let b = base_url.trim_end_matches('/');
    let mut out = serde_json::json!({
        "dashboard": format!("{b}/app"),
        "login": format!("{b}/login"),
        "upgrade": format!("{b}/app/billing"),
        "billing": format!("{b}/app/billing"),
    });
    let configured = &catalogue.lifecycle.delivery.links;
    for name in j1msky_core::catalogue::lifecycle::LINK_NAMES {
        out[name] = configured.resolve(name, b).map_or(serde_json::Value::Null, serde_json::Value::String);
    }
    out
}

/// Every template the catalogue's journeys name, rendered from `dir` with the sample
/// context: one (JSON path, problem) per template that is missing or does not render.
pub fn check(catalogue: &j1msky_core::catalogue::Catalogue, dir: &Path) -> Vec<(String, String)> {
    let sample = sample_context(catalogue, "https://app.example.com");
    let mut out = Vec::new();
    if let Err(e) = render_from(dir, NEWSLETTER, &sample) {
        out.push((format!("templates/{}", NEWSLETTER), e.to_string()));
    }
    for (name, j) in &catalogue.lifecycle.journeys {
        for (i, step) in j.steps.iter().enumerate() {
            if let j1msky_core::catalogue::lifecycle::Step::Send { template, .. } = step {
                if let Err(e) = render_from(dir, template, &sample) {
                    out.push((format!("lifecycle.journeys.{name}.steps[{i}].template"), e.to_string()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, subject: &str, txt: &str, html: &str) {
        std::fs::write(dir.join(format!("{name}.subject.j2")), subject).unwrap();
        std::fs::write(dir.join(format!("{name}.txt.j2")), txt).unwrap();
        std::fs::write(dir.join(format!("{name}.html.j2")), html).unwrap();
    }

    #[test]
    fn renders_escapes_html_only_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "hello", "Hi {{ name }}", "Dear {{ name }}", "<p>Dear {{ name }}</p>");
        let r = render_from(dir.path(), "hello", &serde_json::json!({"name": "<b>Ann</b>"})).unwrap();
        assert_eq!(r.subject, "Hi <b>Ann</b>");
        assert_eq!(r.text, "Dear <b>Ann</b>");
        assert_eq!(r.html, "<p>Dear &lt;b&gt;Ann&lt;&#x2f;b&gt;</p>");

        let e = render_from(dir.path(), "hello", &serde_json::json!({})).unwrap_err().to_string();
        assert!(e.contains("template hello") && e.contains("hello.subject.j2") && e.contains("undefined"), "{e}");
        let e = render_from(dir.path(), "nope", &serde_json::json!({})).unwrap_err().to_string();
        assert!(e.contains("nope.subject.j2"), "{e}");
        assert!(render_from(dir.path(), "../hello", &serde_json::json!({})).is_err());
        assert_eq!(list(dir.path()), vec!["hello".to_string()]);
    }

    #[test]
    fn the_shipped_templates_render_with_the_sample_context() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let catalogue = j1msky_core::catalogue::Catalogue::load(&root.join("business.json")).unwrap();
        let sample = sample_context(&catalogue, "https://app.example.com");
        let dir = root.join("templates");
        assert_eq!(check(&catalogue, &dir), Vec::<(String, String)>::new());
        for n in list(&dir) {
            render_from(&dir, &n, &sample).unwrap();
        }
    }

    /// Every link under the base URL in every shipped template, rendered with the
    /// shipped catalogue and with every optional link set, is a page the server serves.
    #[test]
    fn the_shipped_templates_link_only_to_pages_the_server_serves() {
        use j1msky_core::catalogue::lifecycle::SERVED_PATHS;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let shipped = j1msky_core::catalogue::Catalogue::load(&root.join("business.json")).unwrap();
        let mut all_set = shipped.clone();
        all_set.lifecycle.delivery.links = j1msky_core::catalogue::lifecycle::Links {
            setup_video: Some("https://videos.example.org/setup".into()),
            quick_start: Some("/app/tasks".into()),
            book_call: Some("https://cal.example.org/15".into()),
            community: Some("https://chat.example.org/invite".into()),
            referral: Some("/app".into()),
        };
        let dir = root.join("templates");
        let base = "https://app.example.com";
        for catalogue in [&shipped, &all_set] {
            let sample = sample_context(catalogue, base);
            for n in list(&dir) {
                let r = render_from(&dir, &n, &sample).unwrap();
                for part in [&r.text, &r.html.replace("&#x2f;", "/")] {
                    for (i, _) in part.match_indices(base) {
                        let path: String = part[i + base.len()..]
                            .chars()
                            .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '<' | ')' | '#' | '?'))
                            .collect();
                        let one_time = ["/u/", "/s/", "/set-password/", "/reset/"];
                        // Operator mail (alerts, reviews) links to the operator's pages.
                        let operator = ["/admin/alerts", "/admin/review/morning", "/admin/review/evening"];
                        let ok = SERVED_PATHS.contains(&path.as_str())
                            || one_time.iter().any(|p| path.starts_with(p))
                            || operator.contains(&path.as_str());
                        assert!(ok, "template {n} links to {base}{path}, which the server does not serve");
                    }
                    assert!(
                        !part.contains(">none<") && !part.contains(": none"),
                        "template {n} printed an unset link: {part}"
                    );
                }
            }
        }
    }
}
