//! `j1msky db migrate|backup|backups|restore`.

use clap::Subcommand;

use crate::context::{self, Globals};
use crate::{output, Failure};

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations (the server also does this at start).
    Migrate,
}

pub async fn db(g: &Globals, c: DbCommand) -> Result<(), Failure> {
    match c {
        DbCommand::Migrate => {
            let db = context::open_db(g).await?;
            output::done(
                g,
                &format!("migrations applied ({})", db.backend().name()),
                serde_json::json!({"migrated": true, "backend": db.backend().name()}),
            );
            db.close().await;
            Ok(())
        }
    }
}
