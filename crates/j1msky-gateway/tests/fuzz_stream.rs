//! Fuzzing the providers' stream parsers (`providers::parse_stream`, what
//! `ProviderClient::stream` does with a response body): streams recorded from the
//! simulated provider (`bench/fuzz/corpus/sse_*`), mutated byte by byte and cut into
//! chunks anywhere, never panic; a well-formed stream gives the same answer however it
//! is chunked; and a stream only ever ends in `Done` with the whole answer, never with
//! a piece of it (a cut stream is an error).

// A test (or bench) stops at the first surprise: panicking shortcuts, the wall clock
// and untracked tasks are fine here (see [workspace.lints] in Cargo.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use crate::mutate;

use futures::StreamExt;
use j1msky_core::catalogue::ProviderKind;
use j1msky_gateway::chat::{StopReason, StreamEvent, Usage};
use j1msky_gateway::providers::{parse_stream, UpstreamError};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::json;

/// Runs the parser over `chunks`; the events it gave, in order.
fn parse(kind: ProviderKind, chunks: Vec<Vec<u8>>) -> Vec<Result<StreamEvent, UpstreamError>> {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let input = futures::stream::iter(chunks.into_iter().map(Ok::<Vec<u8>, UpstreamError>));
        parse_stream(kind, input).collect::<Vec<_>>().await
    })
}

/// What a parsed stream amounts to: its text, and its end (`Ok` = `Done`).
fn outcome(events: &[Result<StreamEvent, UpstreamError>]) -> (String, Result<(StopReason, Option<Usage>), String>) {
    let mut text = String::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            Ok(StreamEvent::Delta(t)) => text.push_str(t),
            Ok(StreamEvent::Reasoning(_) | StreamEvent::Prompt(_)) => {}
            Ok(StreamEvent::Done { stop, usage }) => {
                assert_eq!(i, events.len() - 1, "nothing follows Done: {events:?}");
                return (text, Ok((*stop, *usage)));
            }
            Err(err) => {
                assert_eq!(i, events.len() - 1, "nothing follows an error: {events:?}");
                return (text, Err(err.to_string()));
            }
        }
    }
    panic!("a stream ends in Done or an error, never silently: {events:?}")
}

fn kind_of(target: &str) -> ProviderKind {
    if target == "sse_openai" {
        ProviderKind::Openai
    } else {
        ProviderKind::Anthropic
    }
}

/// An answer in `kind`'s wire format, as the providers send it.
fn wire(kind: ProviderKind, pieces: &[String], usage: Usage, length: bool) -> Vec<u8> {
    let mut out = String::new();
    match kind {
        ProviderKind::Openai => {
            for p in pieces {
                let chunk =
                    json!({"id": "c", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
                out.push_str(&format!("data: {chunk}\n\n"));
            }
            let finish = if length { "length" } else { "stop" };
            out.push_str(&format!(
                "data: {}\n\n",
                json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            ));
            out.push_str(&format!(
                "data: {}\n\n",
                json!({"id": "c", "choices": [],
                       "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens}})
            ));
            out.push_str("data: [DONE]\n\n");
        }
        ProviderKind::Anthropic => {
            let start = json!({"type": "message_start",
                               "message": {"usage": {"input_tokens": usage.input_tokens, "output_tokens": 1}}});
            out.push_str(&format!("event: message_start\ndata: {start}\n\n"));
            for p in pieces {
                let d = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}});
                out.push_str(&format!("event: content_block_delta\ndata: {d}\n\n"));
            }
            let stop = if length { "max_tokens" } else { "end_turn" };
            let d = json!({"type": "message_delta", "delta": {"stop_reason": stop},
                           "usage": {"output_tokens": usage.output_tokens}});
            out.push_str(&format!("event: message_delta\ndata: {d}\n\n"));
            out.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        }
    }
    out.into_bytes()
}

fn seeds() -> Vec<(ProviderKind, Vec<u8>)> {
    ["sse_openai", "sse_anthropic"]
        .into_iter()
        .flat_map(|t| mutate::corpus(t).into_iter().map(move |(_, bytes)| (kind_of(t), bytes)))
        .collect()
}

#[test]
fn every_recorded_stream_parses_to_a_whole_answer_however_it_is_chunked() {
    for (kind, bytes) in seeds() {
        let whole = outcome(&parse(kind, vec![bytes.clone()]));
        assert!(whole.1.is_ok(), "{kind:?}: {whole:?}");
        assert!(!whole.0.is_empty());
        // One byte at a time: the worst chunking there is.
        let bytewise = bytes.iter().map(|b| vec![*b]).collect();
        assert_eq!(outcome(&parse(kind, bytewise)), whole);
    }
}

/// Found by `mutated_streams_never_panic`: a body starting with a byte-order mark made
/// eventsource-stream slice inside the mark and panic. Each mark at the start is skipped,
/// whichever chunks it arrives in, and the answer after it is whole.
#[test]
fn a_stream_starting_with_byte_order_marks_parses_and_never_panics() {
    for (kind, body) in seeds() {
        let whole = outcome(&parse(kind, vec![body.clone()]));
        for marks in 1..=2 {
            let mut marked = "\u{feff}".repeat(marks).into_bytes();
            marked.extend_from_slice(&body);
            for cut in 1..=7 {
                let chunks = vec![marked[..cut].to_vec(), marked[cut..].to_vec()];
                assert_eq!(outcome(&parse(kind, chunks)), whole, "{marks} mark(s), cut at byte {cut}");
            }
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: mutate::cases(256), ..Config::default() })]

    /// Mutated recordings, chunked anywhere: no panic, and a clean ending.
    #[test]
    fn mutated_streams_never_panic(
        seed in any::<prop::sample::Index>(),
        ms in mutate::byte_mutations(6),
        cuts in mutate::splits(),
    ) {
        let seeds = seeds();
        let (kind, mut bytes) = seeds[seed.index(seeds.len())].clone();
        mutate::apply_bytes(&mut bytes, &ms);
        let _ = outcome(&parse(kind, mutate::chunked(&bytes, &cuts)));
    }

    /// Arbitrary bytes in either format: no panic, and a clean ending.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), cuts in mutate::splits(),
                                   openai in any::<bool>()) {
        let kind = if openai { ProviderKind::Openai } else { ProviderKind::Anthropic };
        let _ = outcome(&parse(kind, mutate::chunked(&bytes, &cuts)));
    }

    /// A well-formed stream round-trips: its pieces, stop reason and usage come out as
    /// sent, whatever the chunking.
    #[test]
    fn well_formed_streams_round_trip(
        pieces in proptest::collection::vec("\\PC{0,12}", 0..8),
        input in 0u64..1_000_000_000,
        output in 1u64..1_000_000_000,
        length in any::<bool>(),
        cuts in mutate::splits(),
        openai in any::<bool>(),
    ) {
        let kind = if openai { ProviderKind::Openai } else { ProviderKind::Anthropic };
        let usage = Usage { input_tokens: input, output_tokens: output };
        let bytes = wire(kind, &pieces, usage, length);
        let (text, end) = outcome(&parse(kind, mutate::chunked(&bytes, &cuts)));
        prop_assert_eq!(text, pieces.concat());
        let stop = if length { StopReason::Length } else { StopReason::End };
        prop_assert_eq!(end, Ok((stop, Some(usage))));
    }

    /// A stream cut short is an error, or (cut after its last event) the whole answer:
    /// never `Done` with part of the text.
    #[test]
    fn a_cut_stream_never_ends_as_a_shorter_answer(
        pieces in proptest::collection::vec("[a-z ]{1,6}", 1..6),
        at in any::<prop::sample::Index>(),
        openai in any::<bool>(),
    ) {
        let kind = if openai { ProviderKind::Openai } else { ProviderKind::Anthropic };
        let usage = Usage { input_tokens: 5, output_tokens: 7 };
        let bytes = wire(kind, &pieces, usage, false);
        let cut = &bytes[..at.index(bytes.len())];
        let (text, end) = outcome(&parse(kind, vec![cut.to_vec()]));
        if end.is_ok() {
            prop_assert_eq!(text, pieces.concat());
        }
    }
}

/// An Anthropic-format stream that never says what it used (a compatible proxy set as the
/// provider's URL) ends with no usage, so the gateway counts its estimate, as it does for
/// the OpenAI format; it ended with zero tokens, and the call cost nothing.
#[test]
fn an_anthropic_stream_without_usage_ends_without_usage_so_it_is_estimated() {
    let frames = [
        ("message_start", json!({"type": "message_start", "message": {"id": "m", "type": "message"}})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        ("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}})),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let body: String = frames.iter().map(|(e, d)| format!("event: {e}\ndata: {d}\n\n")).collect();
    let (text, end) = outcome(&parse(ProviderKind::Anthropic, vec![body.into_bytes()]));
    assert_eq!(text, "Hello");
    assert_eq!(end, Ok((StopReason::End, None)), "no usage seen: none reported");
    // With usage, it is what the stream said.
    let with = wire(ProviderKind::Anthropic, &["Hi".to_string()], Usage { input_tokens: 7, output_tokens: 3 }, false);
    let (_, end) = outcome(&parse(ProviderKind::Anthropic, vec![with]));
    assert_eq!(end, Ok((StopReason::End, Some(Usage { input_tokens: 7, output_tokens: 3 }))));
}
