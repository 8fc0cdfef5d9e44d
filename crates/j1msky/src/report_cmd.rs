//! `j1msky report morning|evening`: the daily reviews as text.

use clap::{Args, ValueEnum};

use crate::context::Globals;
use crate::Failure;

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

pub async fn report(_g: &Globals, a: ReportArgs) -> Result<(), Failure> {
    Err(anyhow::anyhow!("report {:?}: not built yet", a.which).into())
}
