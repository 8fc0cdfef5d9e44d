//! Alerts that reach people: mail to operators and a Slack-compatible webhook,
//! de-duplicated and rate-limited; acknowledge and resolve; the cost-spike check.
