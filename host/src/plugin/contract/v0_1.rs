//! `weir:plugin@0.1.0` adapted to the current contract: its imports served by the current capabilities, its types
//! converted at the call (see the semantics kept, in the parent module's doc).

use super::bindings::{types, v1};
use crate::api::Family;
use crate::plugin::host::{RequestSnapshot, State, ttl};

impl v1::types::Host for State {}

super::unchanged_capabilities!(v1);

impl v1::weir::plugin::kv::Host for State {
    // 0.1.0's kv cannot fail and is synchronous: a failure reads as "not set" / 0, as a 0.1.0 plugin expects of
    // an in-memory store (which is the only backend that never fails).
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.plugin.kv.get_now(&self.key(&key)).ok().flatten()
    }
    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) {
        let _ = self.plugin.kv.set_now(&self.key(&key), value, ttl(ttl_ms));
    }
    fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> i64 {
        self.plugin.kv.increment_now(&self.key(&key), delta, ttl(ttl_ms)).unwrap_or(0)
    }
    fn delete(&mut self, key: String) {
        let _ = self.plugin.kv.delete_now(&self.key(&key));
    }
}

/// A chunk as 0.1.0 sees it, and which of its texts is the one shown (the first answer text).
pub(super) fn chunk(chunk: &types::Chunk) -> (v1::types::Chunk, Option<usize>) {
    let answer = chunk.texts.iter().position(|p| p.stream.kind == types::TextKind::Answer);
    let old = v1::types::Chunk {
        index: chunk.index,
        event: chunk.event.clone(),
        data: chunk.data.clone(),
        text_delta: answer.and_then(|i| chunk.texts.get(i)).map(|p| p.text.clone()),
        whole_body: chunk.whole_body,
    };
    (old, answer)
}

/// A 0.1.0 chunk decision on `chunk` (whose shown text is `answer`): `replace-text` replaces that text only.
pub(super) fn chunk_decision(
    d: v1::types::ChunkDecision,
    chunk: &types::Chunk,
    answer: Option<usize>,
) -> Result<types::ChunkDecision, String> {
    use v1::types::ChunkDecision as D;
    Ok(match d {
        D::Pass => types::ChunkDecision::Pass,
        D::ReplaceText(t) => {
            let Some(i) = answer else { return Err("replaced the text of an event that has no text".into()) };
            let texts = chunk.texts.iter().enumerate();
            types::ChunkDecision::ReplaceTexts(
                texts.map(|(k, p)| if k == i { t.clone() } else { p.text.clone() }).collect(),
            )
        }
        D::ReplaceData(d) => types::ChunkDecision::ReplaceData(d),
        D::Drop => types::ChunkDecision::Drop,
        D::Hold => types::ChunkDecision::Hold,
        D::Abort(r) => types::ChunkDecision::Abort(r),
    })
}

/// The summary as 0.1.0's `on-complete` takes it (no metadata).
pub(super) fn summary(s: &types::Summary) -> v1::types::Summary {
    let s = s.clone();
    v1::types::Summary {
        request_id: s.request_id,
        model: s.model,
        status: s.status,
        outcome: s.outcome,
        upstream: s.upstream,
        attempts: s.attempts,
        usage: v1::types::Usage {
            input_tokens: s.usage.input_tokens,
            output_tokens: s.usage.output_tokens,
            cached_tokens: s.usage.cached_tokens,
            reasoning_tokens: s.usage.reasoning_tokens,
        },
        ttft_ms: s.ttft_ms,
        duration_ms: s.duration_ms,
        principal: s.principal.map(|p| v1::types::Principal { id: p.id, team: p.team }),
        error: s.error,
        partial: s.partial,
    }
}

/// The whole request, copied, as 0.1.0's `on-request` takes it.
pub(super) fn request(r: &RequestSnapshot) -> v1::types::Request {
    v1::types::Request {
        id: r.id.clone(),
        family: match r.family {
            Family::OpenAi => v1::types::ApiFamily::Openai,
            Family::Anthropic => v1::types::ApiFamily::Anthropic,
        },
        endpoint: r.endpoint_name().to_string(),
        headers: r.headers_list().into_iter().map(|(name, value)| v1::types::Header { name, value }).collect(),
        body: r.body.to_vec(),
        model: r.model.clone(),
        stream: r.stream,
        principal: r.principal.clone().map(|p| v1::types::Principal { id: p.id, team: p.team }),
        metadata: r.metadata.clone(),
    }
}

pub(super) fn request_decision(d: v1::types::RequestDecision) -> types::RequestDecision {
    use v1::types::RequestDecision as D;
    match d {
        D::Continue => types::RequestDecision::Continue,
        D::ContinueWith(c) => types::RequestDecision::ContinueWith(types::RequestChanges {
            set_headers: c.set_headers.into_iter().map(|h| types::Header { name: h.name, value: h.value }).collect(),
            body: c.body,
            model: c.model,
            metadata: c.metadata,
            principal: c.principal.map(|p| types::Principal { id: p.id, team: p.team }),
        }),
        D::Route(targets) => types::RequestDecision::Route(
            targets.into_iter().map(|t| types::RouteTarget { upstream: t.upstream, model: t.model }).collect(),
        ),
        D::Respond(r) => types::RequestDecision::Respond(types::Response {
            status: r.status,
            content_type: r.content_type,
            body: r.body,
        }),
        D::Reject(r) => types::RequestDecision::Reject(types::Rejection {
            status: r.status,
            message: r.message,
            headers: Vec::new(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn piece(kind: types::TextKind, text: &str) -> types::TextPiece {
        types::TextPiece { stream: types::TextStream { choice: 0, part: 0, kind }, text: text.into() }
    }

    fn event() -> types::Chunk {
        types::Chunk {
            index: 4,
            event: Some("content_block_delta".into()),
            data: "{}".into(),
            texts: vec![piece(types::TextKind::Reasoning, "hmm"), piece(types::TextKind::Answer, "Hello")],
            whole_body: false,
        }
    }

    #[test]
    fn a_0_1_chunk_shows_the_first_answer_text_and_replace_text_replaces_only_it() {
        let c = event();
        let (old, answer) = chunk(&c);
        assert_eq!((old.index, old.text_delta.as_deref(), answer), (4, Some("Hello"), Some(1)));
        let d = chunk_decision(v1::types::ChunkDecision::ReplaceText("Hi".into()), &c, answer).unwrap();
        assert_eq!(d, types::ChunkDecision::ReplaceTexts(vec!["hmm".into(), "Hi".into()]));
        assert_eq!(chunk_decision(v1::types::ChunkDecision::Hold, &c, answer), Ok(types::ChunkDecision::Hold));
    }

    #[test]
    fn replacing_the_text_of_an_event_without_text_is_the_plugins_error() {
        let c = types::Chunk { texts: vec![piece(types::TextKind::Reasoning, "hmm")], ..event() };
        let (old, answer) = chunk(&c);
        assert_eq!((old.text_delta, answer), (None, None), "reasoning is not shown to 0.1.0");
        let e = chunk_decision(v1::types::ChunkDecision::ReplaceText("x".into()), &c, answer).unwrap_err();
        assert_eq!(e, "replaced the text of an event that has no text");
    }

    #[test]
    fn a_0_1_rejection_has_no_headers_and_a_summary_has_no_metadata() {
        let d = request_decision(v1::types::RequestDecision::Reject(v1::types::Rejection {
            status: 429,
            message: "slow down".into(),
        }));
        let types::RequestDecision::Reject(r) = d else { panic!("{d:?}") };
        assert_eq!((r.status, r.message.as_str(), r.headers.len()), (429, "slow down", 0));
        let s = types::Summary {
            request_id: "r".into(),
            model: "m".into(),
            status: 200,
            outcome: "ok".into(),
            upstream: Some("u".into()),
            attempts: 2,
            usage: types::Usage {
                input_tokens: Some(3),
                output_tokens: Some(4),
                cached_tokens: None,
                reasoning_tokens: None,
            },
            ttft_ms: Some(1.5),
            duration_ms: 9.0,
            principal: Some(types::Principal { id: "k".into(), team: Some("t".into()) }),
            metadata: vec![("a".into(), "b".into())],
            error: None,
            partial: true,
        };
        let old = summary(&s);
        assert_eq!((old.attempts, old.usage.output_tokens, old.partial), (2, Some(4), true));
        assert_eq!(old.principal.map(|p| (p.id, p.team)), Some(("k".into(), Some("t".into()))));
    }
}
