//! `j1msky lead list|qualify|trial` and pilot mode.

use clap::Subcommand;

use crate::context::Globals;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum LeadCommand {
    /// The leads, newest first.
    List,
}

pub async fn lead(_g: &Globals, c: LeadCommand) -> Result<(), Failure> {
    match c {
        LeadCommand::List => Err(anyhow::anyhow!("lead list: not built yet").into()),
    }
}
