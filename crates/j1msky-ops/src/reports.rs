//! The morning and evening reviews (`insights::morning`, `insights::evening`) as text
//! for `j1msky report morning|evening`, and as a daily mail to operators at the
//! catalogue's local times (`alerts.morning_report_at`, `evening_report_at`, in the
//! business time zone). Each day's mail is one timer (key `<which>:<local date>`) that
//! queues it for every recipient and schedules the next day's in the same transaction,
//! and one queue row per recipient and day, so it goes once a day whatever restarts.

use chrono::{Duration, NaiveDate};
use j1msky_core::catalogue::lifecycle::parse_hh_mm;
use j1msky_core::Money;
use j1msky_db::timers::{self, Fired, Handlers, NewTimer};
use j1msky_insights::morning::Severity;
use j1msky_lifecycle::delivery::{self, OperatorMessage};
use serde::Serialize;

use crate::notify::{Notifier, NotifyError};

/// The report timer.
pub const REPORT_TIMER: &str = "ops.report";
/// The template of a report mail.
pub const REPORT_TEMPLATE: &str = "operator_review";

/// Which review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    Morning,
    Evening,
}

impl Which {
    /// `morning` or `evening`.
    pub fn as_str(self) -> &'static str {
        match self {
            Which::Morning => "morning",
            Which::Evening => "evening",
        }
    }

    /// Reads `morning` or `evening`.
    pub fn parse(s: &str) -> Option<Which> {
        match s {
            "morning" => Some(Which::Morning),
            "evening" => Some(Which::Evening),
            _ => None,
        }
    }

    fn local_time(self, c: &j1msky_core::catalogue::Catalogue) -> u32 {
        let at = match self {
            Which::Morning => &c.alerts.morning_report_at,
            Which::Evening => &c.alerts.evening_report_at,
        };
        parse_hh_mm(at).unwrap_or(match self {
            Which::Morning => 8 * 60,
            Which::Evening => 18 * 60,
        })
    }
}

/// A review ready to print or mail: a title and sections of lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub title: String,
    pub sections: Vec<Section>,
}

/// One part of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    pub heading: String,
    pub lines: Vec<String>,
}

impl Report {
    /// The report as plain text (what the CLI prints and the mail's text part holds).
    pub fn text(&self) -> String {
        let mut out = format!("{}\n{}\n", self.title, "=".repeat(self.title.chars().count()));
        for s in &self.sections {
            out.push_str(&format!("\n{}\n", s.heading));
            if s.lines.is_empty() {
                out.push_str("  (nothing)\n");
            }
            for l in &s.lines {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out
    }
}

fn tz(ops: &crate::Ctx) -> chrono_tz::Tz {
    ops.catalogue.business.time_zone.parse().unwrap_or(chrono_tz::UTC)
}

fn local_date(ops: &crate::Ctx, t: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_micros(t).unwrap_or_default().with_timezone(&tz(ops)).date_naive()
}

fn insights(ops: &crate::Ctx) -> j1msky_insights::Ctx {
    j1msky_insights::Ctx { db: ops.db.clone(), catalogue: ops.catalogue.clone(), clock: ops.clock.clone() }
}

/// The review as of `now` (the morning review reads the clock's last 24 hours).
pub async fn build(ops: &crate::Ctx, which: Which, now: i64) -> Result<Report, NotifyError> {
    let date = local_date(ops, now);
    match which {
        Which::Morning => {
            let items = j1msky_insights::morning::review(&insights(ops)).await?;
            let mut sections: Vec<Section> = Vec::new();
            for (sev, heading) in
                [(Severity::Critical, "Critical"), (Severity::Warning, "Warnings"), (Severity::Info, "For information")]
            {
                let lines = items
                    .iter()
                    .filter(|i| i.severity == sev)
                    .map(|i| format!("{} — {} ({})", i.title, i.detail, i.link))
                    .collect();
                sections.push(Section { heading: heading.into(), lines });
            }
            Ok(Report { title: format!("Morning review, {date}"), sections })
        }
        Which::Evening => {
            let e = j1msky_insights::evening::review(&insights(ops), now).await?;
            let spend = |rows: &[j1msky_insights::figures::MarginRow]| -> Vec<String> {
                rows.iter()
                    .map(|r| format!("{}: {} in {} call(s)", r.label, Money::from_micros(r.cost_micros), r.tasks))
                    .collect()
            };
            let margins = e
                .by_customer
                .iter()
                .take(10)
                .map(|r| {
                    format!(
                        "{}: revenue {}, cost {}, margin {}",
                        r.label,
                        Money::from_micros(r.revenue_micros),
                        Money::from_micros(r.cost_micros),
                        Money::from_micros(r.margin_micros)
                    )
                })
                .collect();
            Ok(Report {
                title: format!("Evening review, {date}: model spend {}", Money::from_micros(e.spend_micros)),
                sections: vec![
                    Section { heading: "Spend by model".into(), lines: spend(&e.by_model) },
                    Section { heading: "Spend by team".into(), lines: spend(&e.by_team) },
                    Section { heading: "Lowest margins this month".into(), lines: margins },
                ],
            })
        }
    }
}

/// The next report time strictly after `after`: its key and instant.
pub fn next_occurrence(ops: &crate::Ctx, which: Which, after: i64) -> (String, i64) {
    let minutes = which.local_time(&ops.catalogue);
    let mut date = local_date(ops, after);
    loop {
        let at = delivery::local_instant(tz(ops), date, minutes);
        if at > after {
            return (format!("{}:{date}", which.as_str()), at);
        }
        date += Duration::days(1);
    }
}

async fn schedule_after(
    conn: &mut sqlx::AnyConnection,
    ops: &crate::Ctx,
    which: Which,
    after: i64,
    now: i64,
) -> Result<(), NotifyError> {
    let (key, run_at) = next_occurrence(ops, which, after);
    let payload = serde_json::json!({"which": which.as_str()});
    timers::schedule(
        conn,
        &NewTimer { kind: REPORT_TIMER, key: &key, payload: &payload, run_at, max_attempts: 5 },
        now,
    )
    .await?;
    Ok(())
}

/// Schedules the next morning and evening report (a no-op when already scheduled): what
/// starts the daily chain after a deployment.
pub async fn schedule(ops: &crate::Ctx, now: i64) -> Result<(), NotifyError> {
    let mut conn = ops.db.pool().acquire().await?;
    for which in [Which::Morning, Which::Evening] {
        schedule_after(&mut conn, ops, which, now, now).await?;
    }
    Ok(())
}

/// Queues `which` for every recipient for the day of `key` and schedules the next one.
async fn send(n: &Notifier, fired: &Fired) -> Result<(), NotifyError> {
    let which = fired.payload["which"].as_str().and_then(Which::parse).unwrap_or(Which::Morning);
    let ops = &n.ops;
    let report = build(ops, which, fired.now).await?;
    let context = serde_json::json!({
        "business": {"name": ops.catalogue.business.name},
        "report": {"title": report.title, "sections": report.sections, "text": report.text()},
        "links": {"admin": format!("{}/admin/review/{}", n.base_url, which.as_str())},
    });
    let rendered = j1msky_lifecycle::templates::render_from(&n.templates_dir, REPORT_TEMPLATE, &context)?;
    let recipients = crate::notify::recipients(ops).await?;
    let source = format!("report:{}", fired.key);
    let mut tx = ops.db.begin().await?;
    for to in &recipients {
        let msg = OperatorMessage {
            to,
            source: &source,
            step: to,
            occurrence: 0,
            template: REPORT_TEMPLATE,
            rendered: &rendered,
        };
        delivery::enqueue_for_operator(&mut tx, &msg, fired.now).await?;
    }
    schedule_after(&mut tx, ops, which, fired.run_at.max(fired.now), fired.now).await?;
    if fired.complete(&mut tx).await? {
        tx.commit().await?;
    }
    Ok(())
}

/// The report timer's handler.
pub fn timer_handlers(n: &Notifier, h: Handlers) -> Handlers {
    let n = n.clone();
    h.on(REPORT_TIMER, move |fired| {
        let n = n.clone();
        async move { send(&n, &fired).await.map_err(|e| e.to_string()) }
    })
}
