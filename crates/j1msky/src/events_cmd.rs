//! `j1msky events …`: the outbox and its consumers from the command line: tail (and
//! follow) events, list consumers with their lag and failing events, retry a parked
//! event, replay a consumer from a sequence number.

use std::time::Duration;

use clap::Subcommand;
use j1msky_db::consumers;
use j1msky_db::outbox::{self, Event};
use serde_json::json;

use crate::context::{self, Globals};
use crate::{output, Failure, EXIT_INVALID};

/// How often `tail --follow` looks for new events.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// The latest events, oldest first; with --follow, then each new one as it is written.
    Tail {
        /// Only events of this kind (e.g. customer.stage_changed).
        #[arg(long)]
        kind: Option<String>,
        /// How many of the latest to show first.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Keep printing new events until interrupted (one JSON object per line with --json).
        #[arg(long)]
        follow: bool,
    },
    /// Every consumer: its cursor, lag and lease, and the events consumers fail on.
    Consumers,
    /// Give a parked event fresh attempts.
    Retry {
        #[arg(long)]
        consumer: String,
        #[arg(long)]
        seq: i64,
    },
    /// Make a consumer handle events again from a sequence number on.
    Replay {
        #[arg(long)]
        consumer: String,
        #[arg(long)]
        from: i64,
    },
}

fn invalid(message: String) -> Failure {
    Failure { code: EXIT_INVALID, error: anyhow::anyhow!(message) }
}

pub async fn events(g: &Globals, cmd: EventsCommand) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    let result = run(g, &db, cmd).await;
    db.close().await;
    result
}

async fn run(g: &Globals, db: &j1msky_db::Db, cmd: EventsCommand) -> Result<(), Failure> {
    match cmd {
        EventsCommand::Tail { kind, limit, follow } => {
            if limit < 1 {
                return Err(invalid(format!("--limit must be at least 1 (got {limit})")));
            }
            if !follow {
                let latest = outbox::latest(db, kind.as_deref(), limit).await?;
                output::list(g, &latest, &["seq", "at", "kind", "customer", "payload"], row);
                return Ok(());
            }
            // Where following starts is read before the latest events: an event written
            // between the two reads is then printed by the loop below (it is past `last`)
            // instead of falling between them; one the latest already shows is left to it.
            let mut last = outbox::horizon(db).await?;
            let latest = outbox::latest(db, kind.as_deref(), limit).await?;
            latest.iter().filter(|e| e.seq <= last).for_each(|e| print_line(g, e));
            let stop = crate::shutdown::shutdown_signal();
            tokio::pin!(stop);
            loop {
                for e in outbox::after(db, last, 500).await? {
                    last = e.seq;
                    if kind.as_deref().is_none_or(|k| k == e.kind) {
                        print_line(g, &e);
                    }
                }
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                }
            }
        }
        EventsCommand::Consumers => {
            let status = consumers::status(db).await?;
            let failures = consumers::failures(db, false, 200).await?;
            if g.json {
                output::json(&json!({"consumers": status, "failures": failures}));
                return Ok(());
            }
            output::list(g, &status, &["consumer", "cursor", "lag", "lease", "failing", "parked"], |c| {
                let lease = match (&c.lease_owner, c.lease_until) {
                    (Some(o), until) => format!("{o} until {}", output::when(until)),
                    (None, _) => "-".into(),
                };
                let n = |v: i64| v.to_string();
                vec![c.consumer.clone(), n(c.cursor), n(c.lag), lease, n(c.failing), n(c.parked)]
            });
            if !failures.is_empty() {
                output::list(g, &failures, &["consumer", "seq", "kind", "attempts", "next try", "error"], |f| {
                    let next = if f.parked { "parked".into() } else { output::when(Some(f.next_try_at)) };
                    vec![
                        f.consumer.clone(),
                        f.seq.to_string(),
                        f.kind.clone(),
                        f.attempts.to_string(),
                        next,
                        f.last_error.clone(),
                    ]
                });
            }
            Ok(())
        }
        EventsCommand::Retry { consumer, seq } => {
            if !consumers::retry(db, &consumer, seq, context::now()).await? {
                return Err(invalid(format!("{consumer} has no parked event {seq} (see `j1msky events consumers`)")));
            }
            output::done(
                g,
                &format!("event {seq} of {consumer} will be tried again"),
                json!({"retried": seq, "consumer": consumer}),
            );
            Ok(())
        }
        EventsCommand::Replay { consumer, from } => {
            if from < 1 {
                return Err(invalid(format!("--from must be a sequence number of 1 or more (got {from})")));
            }
            let Some(was) = consumers::replay(db, &consumer, from, context::now()).await? else {
                return Err(invalid(format!("no consumer named {consumer} has run (see `j1msky events consumers`)")));
            };
            output::done(
                g,
                &format!("{consumer} handles events again from {from} on (its cursor was {was})"),
                json!({"consumer": consumer, "from": from, "cursor_was": was}),
            );
            Ok(())
        }
    }
}

fn row(e: &Event) -> Vec<String> {
    vec![
        e.seq.to_string(),
        output::when(Some(e.created_at)),
        e.kind.clone(),
        output::opt(e.customer_id.clone()),
        e.payload.to_string(),
    ]
}

fn print_line(g: &Globals, e: &Event) {
    if g.json {
        match serde_json::to_string(e) {
            Ok(line) => println!("{line}"),
            Err(err) => eprintln!("error: cannot write event {}: {err}", e.seq),
        }
    } else {
        println!("{}", row(e).join("  "));
    }
}
