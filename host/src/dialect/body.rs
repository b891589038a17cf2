//! The client's request body as the gateway reads it: parsed once into its top-level fields (borrowed raw JSON, not
//! copied), the two the gateway needs (`model`, `stream`), and the rewrites an attempt may make when it renders the
//! body for an upstream of the client's own family: another model name, and usage asked for in a stream where the
//! dialect needs it (OpenAI chat's `stream_options.include_usage`, [`super::Dialect::asks_for_stream_usage`]).

// Request path: no panics from input (see docs/gateway-core.md, "No panic from the wire").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::api::Endpoint;
use crate::error::{ApiError, ErrorKind};

/// The request body as parsed by the gateway: top-level fields kept as raw JSON (borrowed, not copied), the few
/// fields the gateway reads, and the rewrites it must make.
pub(crate) struct RequestBody<'a> {
    original: &'a Bytes,
    fields: BTreeMap<Cow<'a, str>, &'a RawValue>,
    pub model: Cow<'a, str>,
    pub stream: bool,
    /// `stream_options` with `include_usage: true`, when the gateway must ask for usage the client did not ask for.
    injected_stream_options: Option<String>,
    pub injected_usage: bool,
}

impl<'a> RequestBody<'a> {
    pub fn parse(bytes: &'a Bytes, endpoint: Endpoint) -> Result<RequestBody<'a>, ApiError> {
        let invalid = |m: String| ApiError::new(ErrorKind::InvalidRequest, m);
        let fields: BTreeMap<Cow<'a, str>, &'a RawValue> = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() {
                invalid("the request body must be a JSON object".into())
            } else {
                invalid(format!("the request body is not valid JSON: {e}"))
            }
        })?;
        let model: Cow<'a, str> = match fields.get("model") {
            None => return Err(invalid("the request body has no `model`".into())),
            Some(raw) => serde_json::from_str(raw.get()).map_err(|_| invalid("`model` must be a string".into()))?,
        };
        let stream = match fields.get("stream") {
            Some(raw) if endpoint.can_stream() => match raw.get() {
                "true" => true,
                "false" | "null" => false,
                _ => return Err(invalid("`stream` must be a boolean".into())),
            },
            _ => false,
        };
        let mut injected_stream_options = None;
        if stream && super::of(endpoint).asks_for_stream_usage() {
            let mut opts: serde_json::Map<String, serde_json::Value> = match fields.get("stream_options") {
                Some(raw) if raw.get() != "null" => {
                    serde_json::from_str(raw.get()).map_err(|_| invalid("`stream_options` must be an object".into()))?
                }
                _ => serde_json::Map::new(),
            };
            if opts.get("include_usage") != Some(&serde_json::Value::Bool(true)) {
                opts.insert("include_usage".into(), serde_json::Value::Bool(true));
                injected_stream_options = Some(serde_json::Value::Object(opts).to_string());
            }
        }
        Ok(RequestBody {
            original: bytes,
            injected_usage: injected_stream_options.is_some(),
            fields,
            model,
            stream,
            injected_stream_options,
        })
    }

    /// The body to send upstream: the client's bytes unchanged unless the model is rewritten or usage injected.
    pub fn render(&self, model: Option<&str>) -> Bytes {
        if model.is_none() && self.injected_stream_options.is_none() {
            return self.original.clone();
        }
        let model_json = model.map(|m| serde_json::Value::from(m).to_string());
        let mut out = ObjectWriter::with_capacity(self.original.len() + 64);
        for (k, v) in &self.fields {
            let v = match k.as_ref() {
                "model" => model_json.as_deref().unwrap_or(v.get()),
                "stream_options" => self.injected_stream_options.as_deref().unwrap_or(v.get()),
                _ => v.get(),
            };
            out.put(k, v);
        }
        if let Some(opts) = &self.injected_stream_options
            && !self.fields.contains_key("stream_options")
        {
            out.put("stream_options", opts);
        }
        out.finish()
    }
}

/// A JSON object written field by field, values given as raw JSON (so fields kept from a parsed body are copied,
/// not re-serialized).
pub(crate) struct ObjectWriter {
    out: Vec<u8>,
    first: bool,
}

impl ObjectWriter {
    pub fn with_capacity(n: usize) -> ObjectWriter {
        let mut out = Vec::with_capacity(n);
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    /// Appends `"key": value`, `value` being raw JSON.
    pub fn put(&mut self, key: &str, value: &str) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.extend_from_slice(serde_json::Value::from(key).to_string().as_bytes());
        self.out.push(b':');
        self.out.extend_from_slice(value.as_bytes());
    }

    pub fn finish(mut self) -> Bytes {
        self.out.push(b'}');
        Bytes::from(self.out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn body_passes_through_unless_rewritten() {
        let b = Bytes::from_static(br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#);
        let r = RequestBody::parse(&b, Endpoint::ChatCompletions).unwrap();
        assert!(!r.stream && !r.injected_usage);
        assert_eq!(r.render(None), b, "unchanged body is the same bytes");
        let v: serde_json::Value = serde_json::from_slice(&r.render(Some("other"))).unwrap();
        assert_eq!(v["model"], "other");
        assert_eq!(v["messages"][0]["content"], "hi");
    }

    #[test]
    fn injects_include_usage_keeping_other_options() {
        let b = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"x":1},"messages":[]}"#);
        let r = RequestBody::parse(&b, Endpoint::ChatCompletions).unwrap();
        assert!(r.stream && r.injected_usage);
        let v: serde_json::Value = serde_json::from_slice(&r.render(None)).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"x": 1, "include_usage": true}));
        let b = Bytes::from_static(br#"{"model":"m","stream":true,"messages":[]}"#);
        let v: serde_json::Value =
            serde_json::from_slice(&RequestBody::parse(&b, Endpoint::ChatCompletions).unwrap().render(None)).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let b = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#);
        let r = RequestBody::parse(&b, Endpoint::ChatCompletions).unwrap();
        assert!(!r.injected_usage, "the client asked itself");
        assert_eq!(r.render(None), b);
        let b = Bytes::from_static(br#"{"model":"m","stream":true}"#);
        assert!(!RequestBody::parse(&b, Endpoint::Messages).unwrap().injected_usage, "Anthropic always reports usage");
    }

    #[test]
    fn rejects_bad_bodies_clearly() {
        let msg = |s: &'static str| {
            RequestBody::parse(&Bytes::from_static(s.as_bytes()), Endpoint::Messages).err().unwrap().message
        };
        assert!(msg("{\"model\": ").contains("not valid JSON"));
        assert!(msg("[1,2]").contains("JSON object"));
        assert!(msg("{\"messages\":[]}").contains("no `model`"));
        assert!(msg("{\"model\":5}").contains("`model` must be a string"));
        assert!(msg("{\"model\":\"m\",\"stream\":\"yes\"}").contains("`stream` must be a boolean"));
    }
}
