//! Property: however an answer is cut into SSE events, the redacted output is the same as redacting the whole text,
//! and no PII substring ever reaches the client. Every split point, and random multi-splits.

use std::collections::HashMap;

use weir_plugin_redact::detect::KINDS;
use weir_plugin_redact::redact::{Mode, Policy, Stream};

const SAMPLES: &[(&str, &str)] = &[
    ("email", "Sure — write to jane.doe+billing@mail.example.co.uk. Thanks!"),
    ("phone", "Call us at +1 (415) 555-0132 any time, or 415.555.0199 après 18h."),
    ("credit_card", "The card on file is 4111 1111 1111 1111, expiring 12/29."),
    ("credit_card", "Use 5500-0000-0000-0004 ✓"),
    ("iban", "Transfer to DE89 3704 0044 0532 0130 00 by Friday."),
    ("iban", "IBAN:GB82WEST12345698765432."),
    ("ipv4", "The server is 192.168.100.254; the gateway is 10.0.0.1."),
    ("secret", "Your key is sk-proj-AbCdEfGhIjKlMnOpQrStUv0123456789 keep it safe"),
    ("secret", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"),
    ("secret", "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_abc' …"),
    (
        "secret",
        "Here:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\nDone.",
    ),
    ("mixed", "📧 a.b@c.io, ☎ +44 20 7946 0958, 💳 4012888888881881 and 8.8.8.8 — all in one line"),
];

/// The PII in each sample (what must never reach the client).
fn secrets(text: &str) -> Vec<&str> {
    let (found, _) = weir_plugin_redact::detect::analyze(text.as_bytes(), 0, true, &KINDS);
    found.iter().map(|f| &text[f.start..f.end]).collect()
}

fn policy(mode: Mode) -> Policy {
    Policy::new(KINDS.iter().map(|&k| (k, mode)).collect::<HashMap<_, _>>(), "req_1", vec![])
}

/// Streams `pieces` through a redactor; returns what the client would get.
fn stream(policy: &Policy, pieces: &[&str]) -> String {
    let mut s = Stream::default();
    let mut out = String::new();
    for p in pieces {
        out.push_str(&s.push(policy, p).unwrap());
    }
    out.push_str(&s.finish(policy).unwrap());
    out
}

fn boundaries(text: &str) -> Vec<usize> {
    (1..text.len()).filter(|&i| text.is_char_boundary(i)).collect()
}

fn check(policy: &Policy, text: &str, cuts: &[usize]) {
    let mut pieces = Vec::new();
    let mut at = 0;
    for &c in cuts {
        pieces.push(&text[at..c]);
        at = c;
    }
    pieces.push(&text[at..]);
    let want = policy.text(text).unwrap().unwrap_or_else(|| text.to_string());
    let got = stream(policy, &pieces);
    assert_eq!(got, want, "cut at {cuts:?}: {pieces:?}");
    for s in secrets(text) {
        assert!(!got.contains(s), "{s:?} leaked with cuts {cuts:?}");
    }
}

#[test]
fn every_sample_has_its_kind() {
    for (kind, text) in SAMPLES {
        let found = weir_plugin_redact::detect::analyze(text.as_bytes(), 0, true, &KINDS).0;
        assert!(kind == &"mixed" || found.iter().any(|f| f.kind.name() == *kind), "{kind}: {text} found {found:?}");
        assert!(!found.is_empty());
    }
}

#[test]
fn every_single_split_point() {
    for mode in [Mode::Mask, Mode::Hash] {
        let p = policy(mode);
        for (_, text) in SAMPLES {
            for cut in boundaries(text) {
                check(&p, text, &[cut]);
            }
        }
    }
}

#[test]
fn random_multi_splits() {
    let p = policy(Mode::Hash);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (_, text) in SAMPLES {
        let b = boundaries(text);
        for _ in 0..2000 {
            let n = (next() % 12) as usize;
            let mut cuts: Vec<usize> = (0..n).map(|_| b[(next() % b.len() as u64) as usize]).collect();
            cuts.sort_unstable();
            cuts.dedup();
            check(&p, text, &cuts);
        }
        // And one event per character, the worst case for hold-back.
        check(&p, text, &b);
    }
}

#[test]
fn holds_back_no_more_than_needed() {
    let p = policy(Mode::Mask);
    let mut s = Stream::default();
    assert_eq!(s.push(&p, "Hello there, ").unwrap(), "Hello there, ");
    assert_eq!(s.push(&p, "mail jane@exa").unwrap(), "mail ", "only the possible address is held");
    assert_eq!(s.push(&p, "mple.com soon").unwrap(), "[EMAIL] ", "the address is released once it has ended");
    assert_eq!(s.push(&p, ". ").unwrap(), "soon. ");
    assert!(!s.holding());
}

#[test]
fn hash_is_stable_within_a_request_only() {
    let text = "a.b@c.io and a.b@c.io";
    let one = policy(Mode::Hash).text(text).unwrap().unwrap();
    let tags: Vec<&str> = one.split(" and ").collect();
    assert_eq!(tags[0], tags[1]);
    assert!(tags[0].starts_with("[EMAIL:"));
    let other =
        Policy::new(KINDS.iter().map(|&k| (k, Mode::Hash)).collect(), "req_2", vec![]).text(text).unwrap().unwrap();
    assert_ne!(one, other);
}

#[test]
fn block_stops_before_anything_of_it_is_sent() {
    let p = policy(Mode::Block);
    let mut s = Stream::default();
    assert_eq!(s.push(&p, "card: 4111 1111").unwrap(), "card: ");
    assert!(s.push(&p, " 1111 1111. Thanks").is_err());
}
