//! The fuzz harness's mutators, shared by the `tests/fuzz_*.rs` files that include this
//! file with `#[path]`: structured changes to a JSON document (a seed from
//! `bench/fuzz/corpus/<target>/`) and byte-level changes to a raw input. Stable Rust
//! has no libFuzzer, so proptest drives these instead: its shrinking turns a finding
//! into a short list of mutations to read and to keep as a regression test.
//!
//! Cases per property: `PROPTEST_CASES` (256 when unset); `bench/fuzz/run` raises it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{json, Value};

/// The corpus folder of one target.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/fuzz/corpus").join(target)
}

/// Every file of one target's corpus, sorted by name (name, bytes).
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().expect("name").to_string_lossy().into_owned(), std::fs::read(&p).expect("read seed")))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "corpus {} is empty", dir.display());
    out
}

/// Cases per property: `PROPTEST_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Values chosen to break parsers: extremes, wrong types, odd strings.
pub fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(-1i64),
            Just(0i64),
            Just(1i64),
            Just(253_402_300_800i64),
            any::<i64>()
        ]
        .prop_map(|n| json!(n)),
        prop_oneof![Just(u64::MAX), any::<u64>()].prop_map(|n| json!(n)),
        prop_oneof![Just(1e308f64), Just(-1e308f64), Just(-0.0f64), Just(0.5f64), Just(33.333f64), any::<f64>()]
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just(String::new()),
            Just("evt_".to_string()),
            Just("sub_".to_string()),
            Just("cus_".to_string()),
            Just("whsec_pasted".to_string()),
            Just("9999999999999999999999".to_string()),
            Just("1e400".to_string()),
            Just("NaN".to_string()),
            Just("é\u{0}\u{202e}".to_string()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!([[[[[[[[]]]]]]]])),
    ]
}

/// One structural change to a JSON document, at the node numbered `at` (modulo the
/// number of nodes, in document order).
#[derive(Debug, Clone)]
pub enum JsonMutation {
    /// Replace the node with another value.
    Replace { at: usize, with: Value },
    /// Remove the node from its parent.
    Remove { at: usize },
    /// Copy the node over one of its siblings' places (same key in another object, or
    /// an extra array element).
    Duplicate { at: usize },
    /// Wrap the node in an array.
    Wrap { at: usize },
    /// Rename an object key.
    Rename { at: usize, to: String },
}

/// Up to `max` mutations.
pub fn json_mutations(max: usize) -> impl Strategy<Value = Vec<JsonMutation>> {
    let one = prop_oneof![
        4 => (any::<usize>(), hostile_value()).prop_map(|(at, with)| JsonMutation::Replace { at, with }),
        2 => any::<usize>().prop_map(|at| JsonMutation::Remove { at }),
        1 => any::<usize>().prop_map(|at| JsonMutation::Duplicate { at }),
        1 => any::<usize>().prop_map(|at| JsonMutation::Wrap { at }),
        1 => (any::<usize>(), "[a-z_]{0,8}").prop_map(|(at, to)| JsonMutation::Rename { at, to }),
    ];
    proptest::collection::vec(one, 0..=max)
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(m) => m.values().map(count).sum(),
        _ => 0,
    }
}

/// Applies `m` to `doc` (the root itself can only be replaced or wrapped).
pub fn apply(doc: &mut Value, m: &JsonMutation) {
    let n = count(doc);
    let at = match m {
        JsonMutation::Replace { at, .. }
        | JsonMutation::Remove { at }
        | JsonMutation::Duplicate { at }
        | JsonMutation::Wrap { at }
        | JsonMutation::Rename { at, .. } => at % n,
    };
    if at == 0 {
        match m {
            JsonMutation::Replace { with, .. } => *doc = with.clone(),
            JsonMutation::Wrap { .. } => *doc = json!([doc.take()]),
            _ => {}
        }
        return;
    }
    let mut seen = 0;
    edit(doc, at, &mut seen, m);
}

/// Walks to the node numbered `at` below `parent` and edits it in its parent.
fn edit(parent: &mut Value, at: usize, seen: &mut usize, m: &JsonMutation) -> bool {
    match parent {
        Value::Array(items) => {
            for i in 0..items.len() {
                *seen += 1;
                if *seen == at {
                    match m {
                        JsonMutation::Replace { with, .. } => items[i] = with.clone(),
                        JsonMutation::Remove { .. } => {
                            items.remove(i);
                        }
                        JsonMutation::Duplicate { .. } => {
                            let copy = items[i].clone();
                            items.insert(i, copy);
                        }
                        JsonMutation::Wrap { .. } => items[i] = json!([items[i].take()]),
                        JsonMutation::Rename { .. } => {}
                    }
                    return true;
                }
                if edit(&mut items[i], at, seen, m) {
                    return true;
                }
            }
            false
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                *seen += 1;
                if *seen == at {
                    match m {
                        JsonMutation::Replace { with, .. } => {
                            map.insert(k, with.clone());
                        }
                        JsonMutation::Remove { .. } => {
                            map.remove(&k);
                        }
                        JsonMutation::Duplicate { .. } => {
                            // Moved under a sibling key: the same value where another belongs.
                            let copy = map[&k].clone();
                            if let Some(other) = map.keys().find(|o| **o != k).cloned() {
                                map.insert(other, copy);
                            }
                        }
                        JsonMutation::Wrap { .. } => {
                            let v = map[&k].clone();
                            map.insert(k, json!([v]));
                        }
                        JsonMutation::Rename { to, .. } => {
                            if let Some(v) = map.remove(&k) {
                                map.insert(to.clone(), v);
                            }
                        }
                    }
                    return true;
                }
                if let Some(child) = map.get_mut(&k) {
                    if edit(child, at, seen, m) {
                        return true;
                    }
                }
            }
            false
        }
        _ => false,
    }
}

/// One change to raw bytes, at a position taken modulo the input's length.
#[derive(Debug, Clone)]
pub enum ByteMutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    /// Repeat a slice of the input right after itself.
    Repeat {
        at: usize,
        len: usize,
    },
    /// Cut the input short.
    Truncate {
        at: usize,
    },
}

/// Up to `max` byte mutations; inserted bytes favour the characters SSE and JSON care about.
pub fn byte_mutations(max: usize) -> impl Strategy<Value = Vec<ByteMutation>> {
    let special = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b":".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"data: [DONE]\n\n".to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    let one = prop_oneof![
        3 => (any::<usize>(), 1u8..).prop_map(|(at, mask)| ByteMutation::Flip { at, mask }),
        3 => (any::<usize>(), special).prop_map(|(at, bytes)| ByteMutation::Insert { at, bytes }),
        2 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| ByteMutation::Delete { at, len }),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| ByteMutation::Repeat { at, len }),
        1 => any::<usize>().prop_map(|at| ByteMutation::Truncate { at }),
    ];
    proptest::collection::vec(one, 0..=max)
}

/// Applies byte mutations in order.
pub fn apply_bytes(input: &mut Vec<u8>, ms: &[ByteMutation]) {
    for m in ms {
        let n = input.len();
        match m {
            ByteMutation::Flip { at, mask } if n > 0 => input[at % n] ^= mask,
            ByteMutation::Insert { at, bytes } => {
                let at = at % (n + 1);
                input.splice(at..at, bytes.iter().copied());
            }
            ByteMutation::Delete { at, len } if n > 0 => {
                let at = at % n;
                input.drain(at..(at + len).min(n));
            }
            ByteMutation::Repeat { at, len } if n > 0 => {
                let at = at % n;
                let piece: Vec<u8> = input[at..(at + len).min(n)].to_vec();
                let end = at + piece.len();
                input.splice(end..end, piece);
            }
            ByteMutation::Truncate { at } => input.truncate(at % (n + 1)),
            _ => {}
        }
    }
}

/// Split points: where to cut an input into the chunks it arrives in.
pub fn splits() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(any::<usize>(), 0..12)
}

/// `input` cut at `points` (modulo its length), in order.
pub fn chunked(input: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts {
        out.push(input[from..c].to_vec());
        from = c;
    }
    out.push(input[from..].to_vec());
    out
}
