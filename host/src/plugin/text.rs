//! The provider-neutral text of an answer: where each format keeps the generated text, how to read it, and how to
//! write a replacement back in the same format. This is what lets a plugin redact text without knowing providers.
//!
//! | endpoint | streamed event | non-streamed body |
//! |---|---|---|
//! | chat completions | `choices[0].delta.content` | `choices[0].message.content` |
//! | responses | `response.output_text.delta`: `delta` | first `output_text` part of `output[]` |
//! | messages | `content_block_delta` with `text_delta`: `delta.text` | first `text` block of `content[]` |

use serde_json::Value;

use crate::api::Endpoint;

/// JSON pointer-ish location of the text in one event or body.
fn locate<'a>(endpoint: Endpoint, event: Option<&str>, v: &'a mut Value, whole: bool) -> Option<&'a mut Value> {
    match (endpoint, whole) {
        (Endpoint::ChatCompletions, false) => v.pointer_mut("/choices/0/delta/content"),
        (Endpoint::ChatCompletions, true) => v.pointer_mut("/choices/0/message/content"),
        (Endpoint::Messages, false) => {
            if event != Some("content_block_delta") || v.pointer("/delta/type")? != "text_delta" {
                return None;
            }
            v.pointer_mut("/delta/text")
        }
        (Endpoint::Messages, true) => {
            v.get_mut("content")?.as_array_mut()?.iter_mut().find(|b| b["type"] == "text")?.get_mut("text")
        }
        (Endpoint::Responses, false) => {
            if event != Some("response.output_text.delta") {
                return None;
            }
            v.get_mut("delta")
        }
        (Endpoint::Responses, true) => v
            .get_mut("output")?
            .as_array_mut()?
            .iter_mut()
            .filter_map(|item| item.get_mut("content")?.as_array_mut())
            .flatten()
            .find(|part| part["type"] == "output_text")?
            .get_mut("text"),
        (Endpoint::Embeddings | Endpoint::CountTokens, _) => None,
    }
    .filter(|t| t.is_string())
}

/// The text carried by an event's data (or a whole body); none when there is none or it is empty (e.g. the
/// opening chat chunk, `"content": ""`).
pub fn extract(endpoint: Endpoint, event: Option<&str>, data: &str, whole: bool) -> Option<String> {
    if !whole && !data.starts_with('{') {
        return None;
    }
    let mut v: Value = serde_json::from_str(data).ok()?;
    locate(endpoint, event, &mut v, whole)?.as_str().filter(|t| !t.is_empty()).map(str::to_string)
}

/// `data` with its text replaced by `text`, in the same format.
pub fn replace(endpoint: Endpoint, event: Option<&str>, data: &str, text: &str, whole: bool) -> Option<String> {
    let mut v: Value = serde_json::from_str(data).ok()?;
    *locate(endpoint, event, &mut v, whole)? = Value::String(text.to_string());
    if whole && endpoint == Endpoint::Responses {
        // Keep the convenience field some SDKs read in step.
        if let Some(t) = v.get_mut("output_text") {
            *t = Value::String(text.to_string());
        }
    }
    Some(v.to_string())
}

/// Frames one SSE event.
pub fn frame(event: Option<&str>, data: &str) -> bytes::Bytes {
    match event {
        Some(e) => bytes::Bytes::from(format!("event: {e}\ndata: {data}\n\n")),
        None => bytes::Bytes::from(format!("data: {data}\n\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_text_both_ways() {
        let chat = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a@b.c"}}]}"#;
        assert_eq!(extract(Endpoint::ChatCompletions, None, chat, false).as_deref(), Some("a@b.c"));
        let r = replace(Endpoint::ChatCompletions, None, chat, "[EMAIL]", false).unwrap();
        assert_eq!(extract(Endpoint::ChatCompletions, None, &r, false).as_deref(), Some("[EMAIL]"));
        assert!(r.contains(r#""id":"c""#), "the rest of the event is kept");

        let an = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#;
        assert_eq!(extract(Endpoint::Messages, Some("content_block_delta"), an, false).as_deref(), Some("hi"));
        assert_eq!(extract(Endpoint::Messages, Some("message_delta"), an, false), None);
        let resp = r#"{"type":"response.output_text.delta","delta":"yo"}"#;
        assert_eq!(
            extract(Endpoint::Responses, Some("response.output_text.delta"), resp, false).as_deref(),
            Some("yo")
        );
        assert_eq!(extract(Endpoint::ChatCompletions, None, "[DONE]", false), None);
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#;
        assert_eq!(extract(Endpoint::ChatCompletions, None, role, false), None);
        let empty = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert_eq!(extract(Endpoint::ChatCompletions, None, empty, false), None);
    }

    #[test]
    fn whole_bodies() {
        let m = r#"{"content":[{"type":"tool_use"},{"type":"text","text":"x"}]}"#;
        assert_eq!(extract(Endpoint::Messages, None, m, true).as_deref(), Some("x"));
        let r = r#"{"output":[{"type":"message","content":[{"type":"output_text","text":"t"}]}]}"#;
        let new = replace(Endpoint::Responses, None, r, "u", true).unwrap();
        assert_eq!(extract(Endpoint::Responses, None, &new, true).as_deref(), Some("u"));
    }
}
