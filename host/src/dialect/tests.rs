use serde_json::json;

use super::*;

fn ts(choice: u32, part: u32, kind: TextKind) -> TextStream {
    TextStream { choice, part, kind }
}

fn texts(l: &[Located]) -> Vec<(TextStream, &str)> {
    l.iter().map(|l| (l.stream, l.text.as_str())).collect()
}

#[test]
fn chat_choices_reasoning_and_tool_calls_are_separate_streams() {
    let d = of(Endpoint::ChatCompletions);
    let v = json!({"choices": [{"index": 1, "delta": {"content": "b@x.io"}, "finish_reason": null}]});
    assert_eq!(texts(&d.deltas(None, &v)), [(ts(1, 0, TextKind::Answer), "b@x.io")]);
    let v = json!({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm", "tool_calls": [
        {"index": 2, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]}}]});
    let l = d.deltas(None, &v);
    assert_eq!(texts(&l), [(ts(0, 0, TextKind::Reasoning), "hmm"), (ts(0, 2, TextKind::ToolArguments), "{\"a\":")]);
    assert_eq!(l[1].pointer, "/choices/0/delta/tool_calls/0/function/arguments");
    // A flushed-text template keeps one tool call, without what must appear once.
    let mut t = v.clone();
    d.template(&mut t, &ts(0, 2, TextKind::ToolArguments));
    assert_eq!(t["choices"][0]["delta"]["tool_calls"][0], json!({"index": 2, "function": {"arguments": "{\"a\":"}}));
    let end = json!({"choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]});
    let e = d.ends(None, Some(&end), "");
    assert!(e[0].matches(&ts(1, 0, TextKind::Answer)) && !e[0].matches(&ts(0, 0, TextKind::Answer)));
    assert_eq!(d.ends(None, None, "[DONE]"), [Ends::ALL]);
    let whole =
        json!({"choices": [{"index": 0, "message": {"content": "one"}}, {"index": 1, "message": {"content": "two"}}]});
    assert_eq!(texts(&d.whole(&whole)), [(ts(0, 0, TextKind::Answer), "one"), (ts(1, 0, TextKind::Answer), "two")]);
}

#[test]
fn messages_blocks_by_index_and_kind() {
    let d = of(Endpoint::Messages);
    let think =
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "t"}});
    assert_eq!(texts(&d.deltas(Some("content_block_delta"), &think)), [(ts(0, 0, TextKind::Reasoning), "t")]);
    let text = json!({"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "x"}});
    assert_eq!(texts(&d.deltas(Some("content_block_delta"), &text)), [(ts(0, 2, TextKind::Answer), "x")]);
    let tool =
        json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{"}});
    assert_eq!(texts(&d.deltas(Some("content_block_delta"), &tool)), [(ts(0, 3, TextKind::ToolArguments), "{")]);
    let stop = json!({"type": "content_block_stop", "index": 2});
    let e = d.ends(Some("content_block_stop"), Some(&stop), "");
    assert!(e[0].matches(&ts(0, 2, TextKind::Answer)) && !e[0].matches(&ts(0, 0, TextKind::Reasoning)));
    let whole = json!({"content": [{"type": "thinking", "thinking": "a"}, {"type": "tool_use", "input": {}},
                                   {"type": "text", "text": "b"}]});
    assert_eq!(texts(&d.whole(&whole)), [(ts(0, 0, TextKind::Reasoning), "a"), (ts(0, 2, TextKind::Answer), "b")]);
}

#[test]
fn responses_deltas_ends_and_summaries() {
    let d = of(Endpoint::Responses);
    let delta = json!({"type": "response.output_text.delta", "output_index": 1, "content_index": 0, "delta": "hi"});
    assert_eq!(texts(&d.deltas(Some("response.output_text.delta"), &delta)), [(ts(1, 0, TextKind::Answer), "hi")]);
    let done = json!({"type": "response.output_text.done", "output_index": 1, "content_index": 0, "text": "hi there"});
    assert!(d.deltas(Some("response.output_text.done"), &done).is_empty(), "a summary is not new text");
    let s = d.summaries(Some("response.output_text.done"), &done);
    assert_eq!((s[0].stream, s[0].pointer.as_str()), (ts(1, 0, TextKind::Answer), "/text"));
    assert!(d.ends(Some("response.output_text.done"), Some(&done), "")[0].matches(&ts(1, 0, TextKind::Answer)));
    let completed = json!({"response": {"output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r"}]},
        {"type": "message", "content": [{"type": "output_text", "text": "hi there"}]},
        {"type": "function_call", "arguments": "{}"}]}});
    let s = d.summaries(Some("response.completed"), &completed);
    assert_eq!(
        s.iter().map(|l| (l.stream, l.pointer.as_str())).collect::<Vec<_>>(),
        [
            (ts(0, 0, TextKind::Reasoning), "/response/output/0/summary/0/text"),
            (ts(1, 0, TextKind::Answer), "/response/output/1/content/0/text"),
            (ts(2, 0, TextKind::ToolArguments), "/response/output/2/arguments"),
        ]
    );
    let mut whole = json!({"output_text": "old", "output": [{"type": "message", "content": [{"type": "output_text", "text": "new"}]}]});
    d.after_whole_replace(&mut whole);
    assert_eq!(whole["output_text"], "new");
}

#[test]
fn sse_error_events_parse() {
    let e = crate::error::ApiError::new(crate::error::ErrorKind::UpstreamTimeout, "idle");
    let ev = of(Endpoint::Messages).error_event(&e, 0);
    let s = std::str::from_utf8(&ev).unwrap();
    assert!(s.starts_with("event: error\ndata: {") && s.ends_with("\n\n"));
    let chat = of(Endpoint::ChatCompletions).error_event(&e, 0);
    let data: serde_json::Value = serde_json::from_slice(&chat[6..chat.len() - 2]).unwrap();
    assert_eq!(data["error"]["code"], "upstream_timeout");
}

#[test]
fn observations_are_values_the_tap_applies() {
    // Anthropic: `message_start` reports input, `message_delta` the output; the second updates the first.
    let start = r#"{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#;
    let seen = of(Endpoint::Messages).observe_event(Some("message_start"), start);
    assert_eq!((seen.id.as_deref(), seen.model.as_deref()), (Some("msg_1"), Some("claude")));
    let Some(UsageUpdate::Update(first)) = seen.usage else { panic!("{seen:?}") };
    assert_eq!((first.input_tokens, first.cached_tokens, first.output_tokens), (Some(15), Some(5), Some(1)));
    let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}"#;
    let seen = of(Endpoint::Messages).observe_event(Some("message_delta"), delta);
    assert_eq!(seen.finish_reason.as_deref(), Some("end_turn"));
    let Some(UsageUpdate::Update(later)) = seen.usage else { panic!("{seen:?}") };
    assert_eq!(first.updated_by(later).output_tokens, Some(42));
    assert_eq!(first.updated_by(later).input_tokens, Some(15), "what the later report lacks stays");
    // OpenAI chat: the usage-only chunk says so; whether it is hidden is the tap's decision.
    let usage = r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
    let seen = of(Endpoint::ChatCompletions).observe_event(None, usage);
    assert!(seen.usage_only && !seen.content);
    assert!(of(Endpoint::ChatCompletions).observe_event(None, "[DONE]").finished);
    assert!(of(Endpoint::Responses).observe_event(Some("error"), "{}").upstream_error);
    assert_eq!(of(Endpoint::Embeddings).observe_event(None, "{}"), Observed::default());
}
