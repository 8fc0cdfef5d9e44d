//! `j1msky kpi …`: the board's numbers on the command line. (Being built.)

use clap::Subcommand;

use crate::context::Globals;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum KpiCommand {
    /// Recompute every rollup from the source tables.
    Rebuild,
}

pub async fn kpi(_g: &Globals, _cmd: KpiCommand) -> Result<(), Failure> {
    Ok(())
}
