//! `j1msky report morning|evening`: the daily reviews as text (the same text the
//! report mails carry), or JSON with `--json`.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use j1msky_ops::reports;

use crate::context::{self, Globals};
use crate::{output, Failure};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Which {
    Morning,
    Evening,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Which review.
    pub which: Which,
}

pub async fn report(g: &Globals, a: ReportArgs) -> Result<(), Failure> {
    let db = context::open_db(g).await?;
    // The version the running processes serve, not the file this command was given.
    let catalogue = Arc::new(context::catalogue_in_force(g, &db).await?);
    let ops = j1msky_ops::Ctx { db, catalogue: catalogue.into(), clock: Arc::new(j1msky_core::SystemClock) };
    let which = match a.which {
        Which::Morning => reports::Which::Morning,
        Which::Evening => reports::Which::Evening,
    };
    let report = reports::build(&ops, which, context::now()).await.map_err(anyhow::Error::from)?;
    if g.json {
        output::json(&report);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
