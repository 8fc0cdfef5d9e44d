//! `j1msky lifecycle …`: journeys, enrollments, messages, suppressions, previews and
//! test sends, staff to-dos, surveys and the newsletter from the command line. Each
//! file handles its own subcommands; they all call the `j1msky-lifecycle` functions the
//! admin pages call.

mod engagement;
mod journeys;
mod messages;
mod triggers;

use clap::Subcommand;

use crate::context::Globals;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    #[command(flatten)]
    Journeys(journeys::JourneysCommand),
    #[command(flatten)]
    Messages(messages::MessagesCommand),
    #[command(flatten)]
    Engagement(engagement::EngagementCommand),
    #[command(flatten)]
    Triggers(triggers::TriggersCommand),
}

pub async fn lifecycle(g: &Globals, cmd: LifecycleCommand) -> Result<(), Failure> {
    match cmd {
        LifecycleCommand::Journeys(c) => journeys::run(g, c).await,
        LifecycleCommand::Messages(c) => messages::run(g, c).await,
        LifecycleCommand::Engagement(c) => engagement::run(g, c).await,
        LifecycleCommand::Triggers(c) => triggers::run(g, c).await,
    }
}
