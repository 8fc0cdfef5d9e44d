//! `j1msky alert list|ack|resolve`.

use clap::Subcommand;

use crate::context::Globals;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// The open alerts, worst first.
    List,
}

pub async fn alert(_g: &Globals, c: AlertCommand) -> Result<(), Failure> {
    match c {
        AlertCommand::List => Err(anyhow::anyhow!("alert list: not built yet").into()),
    }
}
