//! Every crate's integration tests build as one binary (`tests/main.rs`, with
//! `autotests = false`), so a test file that `tests/main.rs` does not name would never be
//! compiled nor run. These tests walk the workspace and fail on such a file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

fn workspace_crates() -> Vec<PathBuf> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crates/").to_path_buf();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&crates)
        .expect("read crates/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    found.sort();
    found
}

/// The `.rs` files directly in `dir`, by stem, `main` left out.
fn test_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut stems: Vec<String> = entries
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| s != "main")
        .collect();
    stems.sort();
    stems
}

/// The modules `main.rs` declares (`mod name;` lines).
fn declared(main: &str) -> Vec<String> {
    main.lines().filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';').map(str::to_string)).collect()
}

#[test]
fn every_test_file_of_every_crate_is_a_module_of_its_one_test_binary() {
    let mut problems = Vec::new();
    let mut files_seen = 0;
    for krate in workspace_crates() {
        let files = test_files(&krate.join("tests"));
        if files.is_empty() {
            continue;
        }
        let name = krate.file_name().unwrap().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
        if !manifest.contains("autotests = false") || !manifest.contains("path = \"tests/main.rs\"") {
            problems.push(format!("{name}/Cargo.toml: no `autotests = false` with a [[test]] at tests/main.rs"));
            continue;
        }
        let main = std::fs::read_to_string(krate.join("tests/main.rs")).unwrap_or_default();
        let mods = declared(&main);
        for file in &files {
            files_seen += 1;
            if !mods.contains(file) {
                problems.push(format!("{name}/tests/{file}.rs is not `mod {file};` in {name}/tests/main.rs"));
            }
        }
    }
    assert!(problems.is_empty(), "test files that would not run:\n{}", problems.join("\n"));
    // The walk found the workspace's test files (this file among them), not an empty tree.
    assert!(files_seen > 50, "only {files_seen} test files found");
}

#[test]
fn a_file_left_out_of_main_rs_is_reported() {
    let main = "//! docs\nmod common;\n#[path = \"x/mod.rs\"]\nmod support;\n\nmod alpha;\nmod beta;\n";
    let mods = declared(main);
    assert_eq!(mods, ["common", "support", "alpha", "beta"]);
    assert!(!mods.contains(&"gamma".to_string()));
}
