//! `lifecycle.delivery`: who mail comes from and the rules applied at send time.

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, ConfigIssue};

/// How lifecycle mail is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Display name in `From:`.
    pub from_name: String,
    /// Address in `From:` and the envelope sender.
    pub from_address: String,
    /// `Reply-To:`, when replies go elsewhere.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Postal address printed at the foot of every message (both parts).
    pub physical_address: String,
    /// Mailbox of the `mailto:` unsubscribe link.
    pub unsubscribe_mailto: String,
    /// No non-transactional mail between these local times (`HH:MM`, the customer's zone);
    /// a window may wrap midnight (`21:00` → `08:00`). Equal times: no quiet hours.
    pub quiet_hours: QuietHours,
    /// Most non-transactional messages per customer per local day / local week (Monday
    /// first); 0: no cap.
    pub max_per_day: u32,
    pub max_per_week: u32,
    /// Where the optional links in mail point (`links.<name>` in templates).
    #[serde(default)]
    pub links: Links,
}

/// The links lifecycle mail may carry besides the dashboard, login and billing pages
/// (which the server always serves). Each is an absolute `https://` URL (the operator's
/// video, booking page, community) or a path the server serves ([`SERVED_PATHS`]);
/// unset, the sentence with it is left out of the mail (and a `send` step with
/// `needs_link` is skipped).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Links {
    #[serde(default)]
    pub setup_video: Option<String>,
    #[serde(default)]
    pub quick_start: Option<String>,
    #[serde(default)]
    pub book_call: Option<String>,
    #[serde(default)]
    pub community: Option<String>,
    #[serde(default)]
    pub referral: Option<String>,
}

/// The names of the settable links.
pub const LINK_NAMES: [&str; 5] = ["setup_video", "quick_start", "book_call", "community", "referral"];

/// The pages of the server a link may name by path (a `#fragment` or `?query` may
/// follow). `crates/j1msky-web/tests/lifecycle_messages.rs` checks each is served.
pub const SERVED_PATHS: &[&str] = &["/app", "/app/tasks", "/app/billing", "/app/upgrade-offer", "/login"];

impl Links {
    /// The link named `name`, as configured (`None`: unset or no such link).
    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            "setup_video" => self.setup_video.as_deref(),
            "quick_start" => self.quick_start.as_deref(),
            "book_call" => self.book_call.as_deref(),
            "community" => self.community.as_deref(),
            "referral" => self.referral.as_deref(),
            _ => None,
        }
    }

    /// The link as it goes into mail: a path is put under the public base URL.
    pub fn resolve(&self, name: &str, base_url: &str) -> Option<String> {
        self.get(name).map(|l| {
            if l.starts_with('/') {
                format!("{}{l}", base_url.trim_end_matches('/'))
            } else {
                l.to_string()
            }
        })
    }
}

/// Why `link` cannot be a mail link, if it cannot.
pub fn link_problem(link: &str) -> Option<String> {
    if link.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>' | '\\')) {
        return Some(format!("`{link}` contains spaces, quotes or angle brackets"));
    }
    if let Some(rest) = link.strip_prefix("https://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        return (host.is_empty() || !host.contains('.') || host.contains('@'))
            .then(|| format!("`{link}` has no host name"));
    }
    if link.starts_with('/') {
        let path = link.split(['?', '#']).next().unwrap_or_default();
        return (!SERVED_PATHS.contains(&path)).then(|| {
            format!(
                "`{path}` is not a page this server serves; use an https:// URL or one of {}",
                SERVED_PATHS.join(", ")
            )
        });
    }
    Some(format!("`{link}` must be an https:// URL or a path this server serves ({})", SERVED_PATHS.join(", ")))
}

/// A daily quiet window in local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            from_name: "j1msky".into(),
            from_address: "hello@example.com".into(),
            reply_to: None,
            physical_address: "j1msky, 1 Example Street, Example City".into(),
            unsubscribe_mailto: "unsubscribe@example.com".into(),
            quiet_hours: QuietHours { start: "21:00".into(), end: "08:00".into() },
            max_per_day: 2,
            max_per_week: 6,
            links: Links::default(),
        }
    }
}

/// Minutes after local midnight of an `HH:MM` text; `None` when it is not one.
pub fn parse_hh_mm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn looks_like_address(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(|c| c.is_whitespace() || matches!(c, '<' | '>' | ',' | '"' | '\r' | '\n'))
        }
        None => false,
    }
}

pub(crate) fn validate(c: &Catalogue, out: &mut Vec<ConfigIssue>) {
    let d = &c.lifecycle.delivery;
    let p = "lifecycle.delivery";
    if d.from_name.trim().is_empty() || d.from_name.contains(['\r', '\n', '<', '>', '"']) {
        out.push(ConfigIssue::new(
            format!("{p}.from_name"),
            "must be a non-empty name without quotes, <, > or line breaks",
        ));
    }
    for (field, value) in [
        ("from_address", Some(&d.from_address)),
        ("unsubscribe_mailto", Some(&d.unsubscribe_mailto)),
        ("reply_to", d.reply_to.as_ref()),
    ] {
        if let Some(v) = value {
            if !looks_like_address(v) {
                out.push(ConfigIssue::new(format!("{p}.{field}"), format!("`{v}` is not an email address")));
            }
        }
    }
    if d.physical_address.trim().len() < 10 {
        out.push(ConfigIssue::new(
            format!("{p}.physical_address"),
            "must be the business's postal address (commercial mail must carry one)",
        ));
    }
    for (field, value) in [("start", &d.quiet_hours.start), ("end", &d.quiet_hours.end)] {
        if parse_hh_mm(value).is_none() {
            out.push(ConfigIssue::new(
                format!("{p}.quiet_hours.{field}"),
                format!("`{value}` is not a time HH:MM (00:00-23:59)"),
            ));
        }
    }
    for name in LINK_NAMES {
        if let Some(problem) = d.links.get(name).and_then(link_problem) {
            out.push(ConfigIssue::new(format!("{p}.links.{name}"), problem));
        }
    }
    if d.max_per_day > 0 && d.max_per_week > 0 && d.max_per_week < d.max_per_day {
        out.push(ConfigIssue::new(format!("{p}.max_per_week"), "must not be below max_per_day (0 means no cap)"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hh_mm() {
        assert_eq!(parse_hh_mm("08:30"), Some(510));
        assert_eq!(parse_hh_mm("23:59"), Some(1439));
        assert_eq!(parse_hh_mm("24:00"), None);
        assert_eq!(parse_hh_mm("8:30"), None);
        assert_eq!(parse_hh_mm("08:60"), None);
        assert!(looks_like_address("a@b.co"));
        assert!(!looks_like_address("a@b"));
        assert!(!looks_like_address("a b@c.d"));
    }

    fn issues_with(links: serde_json::Value) -> Vec<String> {
        let mut v: serde_json::Value = serde_json::from_str(crate::catalogue::SHIPPED).unwrap();
        v["lifecycle"]["delivery"]["links"] = links;
        match Catalogue::from_json_str(&v.to_string()) {
            Ok(_) => Vec::new(),
            Err(crate::catalogue::CatalogueError::Invalid(issues)) => {
                issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn links_are_https_urls_or_pages_the_server_serves_and_config_check_names_the_bad_one() {
        let ok = serde_json::json!({
            "setup_video": "https://videos.example.org/setup", "quick_start": "/app/tasks#new",
            "book_call": "https://cal.example.org/j1msky/15min?x=1", "community": null,
        });
        assert_eq!(issues_with(ok), Vec::<String>::new());
        let bad = issues_with(serde_json::json!({
            "setup_video": "/help/setup-video", "book_call": "http://cal.example.org/x",
            "community": "javascript:alert(1)", "referral": "https://", "quick_start": "https://a.example.org/\"x",
        }));
        assert!(
            bad.iter().any(|i| i.starts_with(
                "lifecycle.delivery.links.setup_video: `/help/setup-video` is not a page this server serves"
            )),
            "{bad:?}"
        );
        for name in ["book_call", "community", "referral", "quick_start"] {
            assert!(
                bad.iter().any(|i| i.starts_with(&format!("lifecycle.delivery.links.{name}: "))),
                "{name}: {bad:?}"
            );
        }
        let unknown = issues_with(serde_json::json!({"refferal": "/app"}));
        assert!(unknown.is_empty() || unknown.iter().any(|i| i.contains("refferal")), "{unknown:?}");
        let links = Links { quick_start: Some("/app/tasks".into()), ..Links::default() };
        assert_eq!(
            links.resolve("quick_start", "https://app.example.com/"),
            Some("https://app.example.com/app/tasks".into())
        );
        assert_eq!(links.resolve("community", "https://app.example.com"), None);
    }
}
