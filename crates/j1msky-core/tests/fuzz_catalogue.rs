//! Fuzzing the catalogue parser (`Catalogue::from_json_str`): the shipped catalogue, the
//! refused ones of `tests/bad_catalogues` and `bench/fuzz/corpus/catalogue`, mutated
//! structurally and byte by byte, never panic, and every refusal names where the
//! problem is (a JSON path, `.` for the document itself); the shipped catalogue
//! round-trips through its own serialisation; money strings round-trip exactly.

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::mutate;

use std::path::Path;

use j1msky_core::catalogue::{Catalogue, CatalogueError, SHIPPED};
use j1msky_core::Money;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

fn seeds() -> Vec<String> {
    let mut out = vec![SHIPPED.to_string()];
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_catalogues");
    let mut files: Vec<_> = std::fs::read_dir(bad).expect("bad catalogues").map(|e| e.expect("entry").path()).collect();
    files.sort();
    out.extend(files.iter().map(|p| std::fs::read_to_string(p).expect("read")));
    out.extend(mutate::corpus("catalogue").into_iter().map(|(_, b)| String::from_utf8_lossy(&b).into_owned()));
    out
}

/// Parses `text`: either a catalogue, or located issues. Never a panic (the caller
/// runs it in the property), never an empty refusal, never an issue without a place.
fn check(text: &str) -> Option<Catalogue> {
    match Catalogue::from_json_str(text) {
        Ok(c) => Some(c),
        Err(CatalogueError::Invalid(issues)) => {
            assert!(!issues.is_empty(), "a refusal says why");
            for i in &issues {
                assert!(!i.path.is_empty(), "issue without a path: {i:?}");
                assert!(!i.message.trim().is_empty(), "issue without a message: {i:?}");
            }
            None
        }
        Err(e) => panic!("parsing text gave {e}"),
    }
}

#[test]
fn the_seeds_parse_as_expected() {
    let seeds = seeds();
    assert!(check(&seeds[0]).is_some(), "the shipped catalogue is valid");
    // Every bad catalogue is refused with located issues.
    for s in &seeds[1..] {
        let _ = check(s);
    }
}

// Findings of the first run, kept as regression tests.

#[test]
fn an_unknown_empty_key_at_the_top_is_located_at_the_document() {
    // serde_path_to_error gives an empty path for it; the issue had no place.
    let mut doc: Value = serde_json::from_str(SHIPPED).expect("shipped");
    doc[""] = Value::Bool(true);
    let err = Catalogue::from_json_str(&doc.to_string()).expect_err("unknown key");
    let issue = err.issues().iter().find(|i| i.message.contains("unknown field ``")).expect("the key's issue");
    assert_eq!(issue.path, ".");
}

#[test]
fn the_shipped_catalogue_round_trips_through_its_serialisation() {
    let c = Catalogue::from_json_str(SHIPPED).expect("shipped");
    let again = serde_json::to_string(&c).expect("serialise");
    let back = Catalogue::from_json_str(&again).unwrap_or_else(|e| panic!("re-read: {e}"));
    assert_eq!(back, c);
}

proptest! {
    #![proptest_config(Config { cases: mutate::cases(256), ..Config::default() })]

    /// Structural mutations of the seeds: no panic, located refusals, and what is
    /// accepted survives its own serialisation unchanged.
    #[test]
    fn mutated_catalogues_are_accepted_or_refused_with_a_path(
        seed in any::<prop::sample::Index>(),
        ms in mutate::json_mutations(6),
    ) {
        let seeds = seeds();
        let text = &seeds[seed.index(seeds.len())];
        let Ok(mut doc) = serde_json::from_str::<Value>(text) else { return Ok(()) };
        for m in &ms {
            mutate::apply(&mut doc, m);
        }
        if let Some(c) = check(&doc.to_string()) {
            let again = serde_json::to_string(&c).expect("serialise");
            prop_assert_eq!(Catalogue::from_json_str(&again).ok(), Some(c));
        }
    }

    /// Byte-level mutations (broken JSON, odd encodings): no panic, located refusals.
    #[test]
    fn mutated_catalogue_bytes_never_panic(seed in any::<prop::sample::Index>(), ms in mutate::byte_mutations(8)) {
        let seeds = seeds();
        let mut bytes = seeds[seed.index(seeds.len())].clone().into_bytes();
        mutate::apply_bytes(&mut bytes, &ms);
        let _ = check(&String::from_utf8_lossy(&bytes));
    }

    /// Money, the catalogue's prices: any amount prints and reads back exactly.
    #[test]
    fn money_round_trips(micros in (i64::MIN + 1)..=i64::MAX) {
        let m = Money::from_micros(micros);
        prop_assert_eq!(m.to_string().parse::<Money>(), Ok(m));
        prop_assert_eq!(m.to_decimal_string().parse::<Money>(), Ok(m));
    }

    /// Any string given as an amount: a value or an error, never a panic.
    #[test]
    fn money_strings_never_panic(s in "[-+$0-9. ]{0,30}|\\PC{0,30}") {
        let _ = s.parse::<Money>();
    }
}
