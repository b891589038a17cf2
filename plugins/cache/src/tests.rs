use weir_sdk::answer::ClientAnswer;
use weir_sdk::testing;
use weir_sdk::{Principal, Usage};

use super::*;

const CONFIG: &str = r#"{"sampled": ["gpt-*"]}"#;

fn req(key: Option<&str>, body: &str) -> weir_sdk::FakeRequest {
    let mut r = testing::request("gpt-4o-mini", body.as_bytes());
    r.principal = key.map(|k| Principal { id: k.into(), team: Some("t".into()) });
    r.digest = Some(format!("d-{body}"));
    r
}

/// An `on-complete` summary of a request that ended well, with `meta` (what this plugin's `on-request` set).
fn summary(meta: Vec<(String, String)>) -> Summary {
    let mut s = testing::summary("gpt-4o-mini", 0, 0);
    s.usage = Usage { input_tokens: None, output_tokens: None, cached_tokens: None, reasoning_tokens: None };
    s.metadata = meta;
    s
}

/// Runs a miss through on-request and on-complete with `answer`, returning the on-request metadata.
fn miss_then_store(r: &weir_sdk::FakeRequest, answer: &str) -> Vec<(String, String)> {
    let d = Cache.on_request(&r.view()).unwrap();
    let RequestDecision::ContinueWith(c) = d else { panic!("a miss continues: {d:?}") };
    assert_eq!(r.response_headers.borrow().last().unwrap(), &("x-weir-cache".to_string(), "MISS".to_string()));
    let key = c.metadata.iter().find(|(k, _)| k == KEY_META).map(|(_, v)| v.clone());
    assert_eq!(*r.coalesce.borrow(), key, "a miss joins the flight of its key");
    testing::set_answer(Some(ClientAnswer {
        status: 200,
        stream: false,
        body: AnswerBody::Whole(answer.as_bytes().to_vec()),
        state: AnswerState::Complete,
    }));
    Cache.on_complete(&summary(c.metadata.clone()));
    c.metadata
}

#[test]
fn a_stored_answer_is_a_hit_for_the_same_tenant_only() {
    testing::init::<Cache>(CONFIG).unwrap();
    testing::set_now_ms(1_000_000);
    let body = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    let answer = r#"{"choices":[{"finish_reason":"stop","message":{"content":"hi"}}]}"#;
    miss_then_store(&req(Some("a"), body), answer);
    testing::set_now_ms(1_030_000);
    let hit = req(Some("a"), body);
    match Cache.on_request(&hit.view()).unwrap() {
        RequestDecision::Reply(r) => {
            assert!(r.cached && r.status == 200);
            assert_eq!(r.body, AnswerBody::Whole(answer.as_bytes().to_vec()));
            let h: Vec<_> = r.headers.iter().map(|h| (h.name.as_str(), h.value.as_str())).collect();
            assert_eq!(h, [("x-weir-cache", "HIT"), ("age", "30")]);
        }
        other => panic!("expected a hit: {other:?}"),
    }
    assert!(
        matches!(Cache.on_request(&req(Some("b"), body).view()).unwrap(), RequestDecision::ContinueWith(_)),
        "another tenant misses"
    );
    assert!(matches!(
        Cache.on_request(&req(Some("a"), r#"{"model":"gpt-4o-mini","messages":[1]}"#).view()).unwrap(),
        RequestDecision::ContinueWith(_)
    ));
}

#[test]
fn cache_control_and_what_is_never_cached() {
    testing::init::<Cache>(CONFIG).unwrap();
    let body = r#"{"model":"gpt-4o-mini"}"#;
    miss_then_store(&req(Some("a"), body), r#"{"choices":[{"finish_reason":"stop"}]}"#);
    let with = |h: &str, v: &str| {
        let mut r = req(Some("a"), body);
        r.headers.push((h.into(), v.into()));
        r
    };
    let r = with("cache-control", "no-cache");
    assert!(matches!(Cache.on_request(&r.view()).unwrap(), RequestDecision::ContinueWith(_)));
    assert_eq!(r.response_headers.borrow()[0].1, "STORED");
    let r = with("cache-control", "no-store");
    assert_eq!(Cache.on_request(&r.view()).unwrap(), RequestDecision::Continue);
    assert_eq!(r.response_headers.borrow()[1].1, "no-store");
    testing::set_now_ms(120_000);
    assert!(
        matches!(
            Cache.on_request(&with("cache-control", "max-age=60").view()).unwrap(),
            RequestDecision::ContinueWith(_)
        ),
        "too old"
    );
    assert!(matches!(
        Cache.on_request(&with("cache-control", "max-age=600").view()).unwrap(),
        RequestDecision::Reply(_)
    ));
    // No principal; Responses with server state; sampled answers of a model not listed.
    assert_eq!(Cache.on_request(&req(None, body).view()).unwrap(), RequestDecision::Continue);
    let mut r = testing::request_to("responses", "gpt-4o-mini", br#"{"model":"gpt-4o-mini","input":"hi"}"#);
    r.principal = Some(Principal { id: "a".into(), team: None });
    assert_eq!(Cache.on_request(&r.view()).unwrap(), RequestDecision::Continue);
    assert_eq!(r.response_headers.borrow()[1].1, "responses-store");
    let mut r = testing::request_to("messages", "claude-haiku-4-5", br#"{"model":"claude-haiku-4-5","max_tokens":9}"#);
    r.principal = Some(Principal { id: "a".into(), team: None });
    assert_eq!(Cache.on_request(&r.view()).unwrap(), RequestDecision::Continue);
    assert_eq!(r.response_headers.borrow()[1].1, "sampled");
    r.body = br#"{"model":"claude-haiku-4-5","max_tokens":9,"temperature":0}"#.to_vec();
    assert!(
        matches!(Cache.on_request(&r.view()).unwrap(), RequestDecision::ContinueWith(_)),
        "temperature 0 is cacheable"
    );
}

#[test]
fn cut_failed_and_corrupt_answers_are_not_served() {
    testing::init::<Cache>(CONFIG).unwrap();
    let body = r#"{"model":"gpt-4o-mini","n":1}"#;
    miss_then_store(&req(Some("a"), body), r#"{"choices":[{"finish_reason":"length"}]}"#);
    assert!(
        matches!(Cache.on_request(&req(Some("a"), body).view()).unwrap(), RequestDecision::ContinueWith(_)),
        "length-cut not stored"
    );
    // A cut stream.
    let d = Cache.on_request(&req(Some("a"), body).view()).unwrap();
    let RequestDecision::ContinueWith(c) = d else { panic!() };
    testing::set_answer(Some(ClientAnswer {
        status: 200,
        stream: true,
        body: AnswerBody::Events(vec![]),
        state: AnswerState::Cut,
    }));
    Cache.on_complete(&summary(c.metadata.clone()));
    assert!(matches!(Cache.on_request(&req(Some("a"), body).view()).unwrap(), RequestDecision::ContinueWith(_)));
    // A corrupt value is a miss and is deleted.
    let key = c.metadata.iter().find(|(k, _)| k == KEY_META).unwrap().1.clone();
    weir_sdk::kv::set(&key, b"{\"v\":0}", None).unwrap();
    assert!(matches!(Cache.on_request(&req(Some("a"), body).view()).unwrap(), RequestDecision::ContinueWith(_)));
    assert_eq!(weir_sdk::kv::get(&key), Ok(None));
    // The kv down: a bypass, never a failure.
    testing::fail_kv(Some(weir_sdk::KvError::Timeout));
    let r = req(Some("a"), body);
    assert_eq!(Cache.on_request(&r.view()).unwrap(), RequestDecision::Continue);
    assert_eq!(r.response_headers.borrow()[1].1, "kv-unavailable");
    testing::fail_kv(None);
    assert_eq!(testing::counts()["bypass.kv-unavailable"], 1);
    assert_eq!(testing::counts()["discarded"], 1);
}

#[test]
fn vary_headers_are_part_of_the_key() {
    testing::init::<Cache>(r#"{"sampled": ["gpt-*"], "vary": ["x-tier", "x-mock-*"]}"#).unwrap();
    let body = r#"{"model":"gpt-4o-mini"}"#;
    let with = |h: &[(&str, &str)]| {
        let mut r = req(Some("a"), body);
        r.headers = h.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        r
    };
    miss_then_store(&with(&[("x-tier", "premium"), ("x-other", "1")]), r#"{"choices":[{"finish_reason":"stop"}]}"#);
    assert!(
        matches!(
            Cache.on_request(&with(&[("x-tier", "premium"), ("x-other", "2")]).view()).unwrap(),
            RequestDecision::Reply(_)
        ),
        "other headers do not vary"
    );
    assert!(matches!(
        Cache.on_request(&with(&[("x-tier", "basic")]).view()).unwrap(),
        RequestDecision::ContinueWith(_)
    ));
    assert!(matches!(
        Cache.on_request(&with(&[("x-tier", "premium"), ("x-mock-deltas", "[]")]).view()).unwrap(),
        RequestDecision::ContinueWith(_)
    ));
}

#[test]
fn control_parses_the_directives() {
    assert_eq!(
        control(Some("No-Cache, max-age=\"30\"".into())),
        Control { no_store: false, no_cache: true, max_age: Some(30) }
    );
    assert_eq!(control(None), Control::default());
}
