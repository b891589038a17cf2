//! Redaction that fits agents: `allow` leaves values that are not personal data (an agent's commit trailer, a
//! company's domain), `scope = "conversation"` leaves what the application or agent wrote (system prompt,
//! instructions, system/developer messages, tool definitions) while the user's and tools' text is still masked.

use serde_json::{Value, json};
use weir_plugin_redact::Redact;
use weir_sdk::{Plugin, RequestDecision, testing};

/// The request body after `on-request` under `config` (unchanged when the plugin changed nothing).
fn redacted(config: &str, body: &Value) -> Value {
    testing::init::<Redact>(config).unwrap();
    let bytes = serde_json::to_vec(body).unwrap();
    let req = testing::request("m", &bytes);
    match Redact::default().on_request(&req.view()).unwrap() {
        RequestDecision::ContinueWith(c) => serde_json::from_slice(&c.body.expect("a body")).unwrap(),
        RequestDecision::Continue => body.clone(),
        other => panic!("{other:?}"),
    }
}

fn claude_code_like() -> Value {
    json!({
        "model": "m",
        "system": [{"type": "text", "text": "You are an agent. Sign commits with Co-Authored-By: Claude <noreply@anthropic.com>. Escalate to oncall@corp.example."}],
        "tools": [{"name": "Mail", "description": "Send mail as bot@corp.example", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>Co-Authored-By: Claude <noreply@anthropic.com></system-reminder> mail jane.doe@gmail.com please"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {"path": "a"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "owner: bob@gmail.com"}]},
        ],
    })
}

#[test]
fn allowed_values_pass_and_the_rest_is_masked() {
    let out = redacted(r#"{"allow": ["noreply@anthropic.com", "*@corp.example"]}"#, &claude_code_like());
    let user = out["messages"][0]["content"][0]["text"].as_str().unwrap();
    assert!(user.contains("<noreply@anthropic.com>"), "{user}");
    assert!(user.contains("mail [EMAIL] please"), "{user}");
    assert_eq!(out["messages"][2]["content"][0]["content"], "owner: [EMAIL]");
    let system = out["system"][0]["text"].as_str().unwrap();
    assert!(system.contains("noreply@anthropic.com") && system.contains("oncall@corp.example"), "{system}");
    // Case-insensitive; the default scope scans the system prompt.
    let out = redacted(r#"{"allow": ["NoReply@Anthropic.com"]}"#, &claude_code_like());
    let system = out["system"][0]["text"].as_str().unwrap();
    assert!(system.contains("noreply@anthropic.com") && system.contains("Escalate to [EMAIL]."), "{system}");
}

#[test]
fn conversation_scope_leaves_instructions_intact() {
    let original = claude_code_like();
    let out = redacted(r#"{"scope": "conversation"}"#, &original);
    assert_eq!(out["system"], original["system"], "the system prompt is the agent's");
    assert_eq!(out["tools"], original["tools"]);
    let user = out["messages"][0]["content"][0]["text"].as_str().unwrap();
    assert!(user.contains("mail [EMAIL] please") && !user.contains("gmail"), "{user}");
    assert_eq!(out["messages"][2]["content"][0]["content"], "owner: [EMAIL]");

    // OpenAI shapes: system/developer messages and Responses `instructions` are left; user input is scanned.
    let chat = json!({"model": "m", "messages": [
        {"role": "system", "content": "Reply to ops@corp.example"},
        {"role": "developer", "content": "cc lead@corp.example"},
        {"role": "user", "content": "I am jane@gmail.com"}]});
    let out = redacted(r#"{"scope": "conversation"}"#, &chat);
    assert_eq!(out["messages"][0]["content"], "Reply to ops@corp.example");
    assert_eq!(out["messages"][1]["content"], "cc lead@corp.example");
    assert_eq!(out["messages"][2]["content"], "I am [EMAIL]");
    let responses = json!({"model": "m", "instructions": "Reply to ops@corp.example", "input": "I am jane@gmail.com"});
    let out = redacted(r#"{"scope": "conversation"}"#, &responses);
    assert_eq!(out["instructions"], "Reply to ops@corp.example");
    assert_eq!(out["input"], "I am [EMAIL]");
    // A secret in the user's text is still refused.
    testing::init::<Redact>(r#"{"scope": "conversation", "modes": {"secret": "block"}}"#).unwrap();
    let body =
        br#"{"model":"m","messages":[{"role":"user","content":"key sk-proj-AbCdEfGhIjKlMnOpQrStUv0123456789"}]}"#;
    let d = Redact::default().on_request(&testing::request("m", body).view()).unwrap();
    assert!(matches!(d, RequestDecision::Reject(_)), "{d:?}");
}

#[test]
fn bad_allow_patterns_refuse_the_config() {
    for bad in [r#"{"allow": ["*corp*"]}"#, r#"{"allow": ["*"]}"#, r#"{"allow": ["a*b*"]}"#, r#"{"scope": "some"}"#] {
        assert!(testing::init::<Redact>(bad).is_err(), "{bad}");
    }
}
