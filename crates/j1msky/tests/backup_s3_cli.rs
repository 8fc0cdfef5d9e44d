//! `j1msky db backup --copy-to s3://…`, `db backups` and `db restore s3://…` against moto's
//! S3 server on loopback, on the engine the test run selects, the store reached through
//! the standard AWS environment variables as an operator would set them.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::common;
use crate::s3_server;

use std::process::Command;

use common::{text, Cli};
use s3_server::{s3_python, Moto};

fn aws<'a>(cmd: &'a mut Command, moto: &Moto) -> &'a mut Command {
    cmd.env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_REGION", "eu-central-1")
        .env("AWS_ACCESS_KEY_ID", "cli-key")
        .env("AWS_SECRET_ACCESS_KEY", "cli-secret")
        .env_remove("J1MSKY_BACKUP_DIR")
        .env_remove("J1MSKY_BACKUP_COPY_TO")
}

#[tokio::test]
async fn the_cli_copies_a_backup_to_s3_lists_where_it_is_and_restores_it_from_there() {
    let Some(python) = s3_python() else { return };
    let moto = Moto::start(&python);
    moto.bucket("ops-backups").await;
    let cli = Cli::new().await;
    assert!(cli.run(&["db", "migrate"]).status.success());
    cli.json(&["customer", "add", "--name", "Kept Co", "--plan", "starter"]);
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();

    // The copy target from the server's environment variable, as a deployment sets it.
    let out = aws(&mut cli.command(&["--json", "db", "backup", "--dir", &dir_arg]), &moto)
        .env("J1MSKY_BACKUP_COPY_TO", "s3://ops-backups/site-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let taken: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let copy = taken["backup"]["copied_to"].as_str().expect("copied").to_string();
    assert!(copy.starts_with("s3://ops-backups/site-1/j1msky-"), "{copy}");

    // `db backups` says where each copy is.
    let out = aws(&mut cli.command(&["db", "backups"]), &moto).output().unwrap();
    assert!(out.status.success() && text(&out.stdout).contains(&copy), "{}", text(&out.stdout));

    // Restored from the store into a new database.
    let target = Cli::new().await;
    let out = aws(&mut cli.command(&["db", "restore", &copy, "--into", &target.url, "--yes"]), &moto).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&copy), "{}", text(&out.stdout));
    let names = target.json(&["customer", "list"]);
    let names: Vec<&str> = names.as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, vec!["Kept Co"]);

    // A bad location is refused before anything runs, saying what is wrong.
    let out = aws(&mut cli.command(&["db", "backup", "--dir", &dir_arg, "--copy-to", "s3://Bad_Bucket/x"]), &moto)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bucket name"), "{}", text(&out.stderr));
}
