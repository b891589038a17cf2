//! Property: with several streams of text in one answer — OpenAI choices interleaved (`n` > 1), Anthropic thinking
//! and several text blocks, tool-call arguments split across events, Responses output items — each stream's output
//! through the plugin's hooks equals redacting that stream's whole text, streams never mix, and no PII substring
//! reaches the client in any of them. Driven through the plugin exactly as the gateway drives it: `on-chunk` per
//! event (each carrying one piece of one stream), `flush` for a stream when it ends.

use std::collections::HashMap;

use weir_plugin_redact::Redact;
use weir_plugin_redact::detect::KINDS;
use weir_plugin_redact::redact::{Mode, Policy};
use weir_sdk::{Chunk, ChunkDecision, Plugin, TextKind, TextPiece, TextStream, testing};

const TEXTS: &[&str] = &[
    "Sure — write to jane.doe+billing@mail.example.co.uk. Thanks!",
    "Call us at +1 (415) 555-0132 any time, or 415.555.0199 après 18h.",
    "The card on file is 4111 1111 1111 1111, expiring 12/29.",
    "Transfer to DE89 3704 0044 0532 0130 00 by Friday.",
    "The server is 192.168.100.254; the gateway is 10.0.0.1.",
    "Your key is sk-proj-AbCdEfGhIjKlMnOpQrStUv0123456789 keep it safe",
    "{\"to\": \"ops@example.org\", \"card\": \"5500-0000-0000-0004\", \"ip\": \"8.8.8.8\"}",
    "📧 a.b@c.io, ☎ +44 20 7946 0958, 💳 4012888888881881 and 8.8.8.8 — all in one line",
];

fn secrets(text: &str) -> Vec<&str> {
    let (found, _) = weir_plugin_redact::detect::analyze(text.as_bytes(), 0, true, &KINDS);
    found.iter().map(|f| &text[f.start..f.end]).collect()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `text` cut at random character boundaries into 1..=12 pieces.
fn cut<'a>(text: &'a str, rng: &mut Rng) -> Vec<&'a str> {
    let b: Vec<usize> = (1..text.len()).filter(|&i| text.is_char_boundary(i)).collect();
    let mut cuts: Vec<usize> = (0..rng.below(12)).map(|_| b[rng.below(b.len())]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        out.push(&text[at..c]);
        at = c;
    }
    out.push(&text[at..]);
    out
}

/// Runs one answer made of `streams` (each a stream and its text) through the plugin, interleaving their pieces at
/// random; returns what the client received per stream.
fn run(streams: &[(TextStream, &str)], rng: &mut Rng) -> HashMap<(u32, u32, u8), String> {
    testing::init::<Redact>(r#"{"default": "mask"}"#).unwrap();
    let mut p = Redact::default();
    let req = testing::request("m", br#"{"model":"m","messages":[]}"#);
    p.on_request(&req.view()).unwrap();
    let key = |s: &TextStream| (s.choice, s.part, s.kind as u8);
    let mut queues: Vec<(TextStream, Vec<&str>)> = streams.iter().map(|(s, t)| (*s, cut(t, rng))).collect();
    for q in &mut queues {
        q.1.reverse();
    }
    let mut got: HashMap<(u32, u32, u8), String> = HashMap::new();
    let mut index = 0;
    while queues.iter().any(|q| !q.1.is_empty()) {
        let live: Vec<usize> = (0..queues.len()).filter(|&i| !queues[i].1.is_empty()).collect();
        let i = live[rng.below(live.len())];
        let stream = queues[i].0;
        let piece = queues[i].1.pop().unwrap();
        let chunk = Chunk {
            index,
            event: None,
            data: String::new(),
            texts: vec![TextPiece { stream, text: piece.to_string() }],
            whole_body: false,
        };
        index += 1;
        let out = match p.on_chunk(&chunk).unwrap() {
            ChunkDecision::Pass => piece.to_string(),
            ChunkDecision::ReplaceTexts(t) => t.into_iter().next().unwrap(),
            ChunkDecision::Hold => String::new(),
            d => panic!("unexpected decision {d:?}"),
        };
        got.entry(key(&stream)).or_default().push_str(&out);
        if queues[i].1.is_empty() {
            // The stream ended (its block stopped, its choice finished): the gateway flushes it.
            let rest = p.flush(stream).unwrap().unwrap_or_default();
            got.entry(key(&stream)).or_default().push_str(&rest);
        }
    }
    got
}

fn check(streams: &[(TextStream, &str)], rng: &mut Rng) {
    let policy = Policy::new(KINDS.iter().map(|&k| (k, Mode::Mask)).collect(), "req_test", vec![]);
    let got = run(streams, rng);
    for (s, text) in streams {
        let want = policy.text(text).unwrap().unwrap_or_else(|| text.to_string());
        let out = &got[&(s.choice, s.part, s.kind as u8)];
        assert_eq!(out, &want, "stream {s:?}");
        for leak in secrets(text) {
            assert!(!out.contains(leak), "{leak:?} leaked in stream {s:?}");
        }
    }
}

fn ts(choice: u32, part: u32, kind: TextKind) -> TextStream {
    TextStream { choice, part, kind }
}

#[test]
fn interleaved_choices() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let a = TEXTS[round % TEXTS.len()];
        let b = TEXTS[(round + 3) % TEXTS.len()];
        check(&[(ts(0, 0, TextKind::Answer), a), (ts(1, 0, TextKind::Answer), b)], &mut rng);
    }
}

#[test]
fn thinking_and_several_text_blocks() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..300 {
        let t = |k: usize| TEXTS[(round + k) % TEXTS.len()];
        check(
            &[
                (ts(0, 0, TextKind::Reasoning), t(0)),
                (ts(0, 1, TextKind::Answer), t(1)),
                (ts(0, 2, TextKind::Answer), t(2)),
            ],
            &mut rng,
        );
    }
}

#[test]
fn tool_call_arguments_split_across_events() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for round in 0..300 {
        let t = |k: usize| TEXTS[(round + k) % TEXTS.len()];
        check(
            &[
                (ts(0, 0, TextKind::Answer), t(0)),
                (ts(0, 0, TextKind::ToolArguments), TEXTS[6]),
                (ts(0, 1, TextKind::ToolArguments), t(2)),
            ],
            &mut rng,
        );
    }
}

#[test]
fn responses_output_items() {
    let mut rng = Rng(0x0bad_cafe_dead_beef);
    for round in 0..300 {
        let t = |k: usize| TEXTS[(round + k) % TEXTS.len()];
        check(
            &[
                (ts(0, 0, TextKind::Reasoning), t(0)),
                (ts(1, 0, TextKind::Answer), t(1)),
                (ts(1, 1, TextKind::Answer), t(4)),
                (ts(2, 0, TextKind::ToolArguments), TEXTS[6]),
            ],
            &mut rng,
        );
    }
}
