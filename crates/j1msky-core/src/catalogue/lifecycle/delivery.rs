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
}
