//! The wire shapes the usage tap reads, for both families: only the fields it needs, borrowed where they are
//! strings; everything else is skipped by serde. Which surface reads which shape is each dialect's
//! `observe_event`/`observe_body`.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Observed, Usage, UsageUpdate};

#[derive(Deserialize)]
pub(crate) struct OaEnvelope<'a> {
    #[serde(borrow, default)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) choices: Vec<Choice<'a>>,
    #[serde(default)]
    pub(crate) usage: Option<WireUsage>,
    #[serde(borrow, default)]
    pub(crate) status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) response: Option<Box<OaEnvelope<'a>>>,
    #[serde(default)]
    pub(crate) error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
pub(crate) struct Choice<'a> {
    #[serde(borrow, default)]
    pub(crate) delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub(crate) finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(crate) struct Delta<'a> {
    #[serde(borrow, default)]
    pub(crate) content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) refusal: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) tool_calls: Option<IgnoredAny>,
}

impl Delta<'_> {
    pub(crate) fn has_content(&self) -> bool {
        self.content.as_ref().is_some_and(|c| !c.is_empty())
            || self.refusal.as_ref().is_some_and(|c| !c.is_empty())
            || self.tool_calls.is_some()
    }
}

#[derive(Deserialize)]
pub(crate) struct AnEnvelope<'a> {
    #[serde(borrow, default)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) usage: Option<WireUsage>,
    #[serde(borrow, default)]
    pub(crate) stop_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) message: Option<Box<AnEnvelope<'a>>>,
    #[serde(borrow, default)]
    pub(crate) delta: Option<AnDelta<'a>>,
    #[serde(default)]
    pub(crate) input_tokens: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct AnDelta<'a> {
    #[serde(borrow, default)]
    pub(crate) stop_reason: Option<Cow<'a, str>>,
}

/// Every usage field name either family uses.
#[derive(Deserialize, Default)]
pub(crate) struct WireUsage {
    pub(crate) prompt_tokens: Option<u64>,
    pub(crate) completion_tokens: Option<u64>,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    #[serde(alias = "input_tokens_details")]
    pub(crate) prompt_tokens_details: Option<Details>,
    #[serde(alias = "output_tokens_details")]
    pub(crate) completion_tokens_details: Option<Details>,
    pub(crate) cache_read_input_tokens: Option<u64>,
    pub(crate) cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
pub(crate) struct Details {
    pub(crate) cached_tokens: Option<u64>,
    pub(crate) reasoning_tokens: Option<u64>,
}

impl WireUsage {
    pub(crate) fn openai(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens.or(self.input_tokens),
            output_tokens: self.completion_tokens.or(self.output_tokens),
            cached_tokens: self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens),
            reasoning_tokens: self.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens),
        }
    }

    /// What an Anthropic usage object reports (input normalised to include cached and cache-written input); it
    /// updates earlier reports ([`Usage::updated_by`]).
    pub(crate) fn anthropic(&self) -> Usage {
        let input = self
            .input_tokens
            .map(|i| i + self.cache_read_input_tokens.unwrap_or(0) + self.cache_creation_input_tokens.unwrap_or(0));
        Usage {
            input_tokens: input,
            output_tokens: self.output_tokens,
            cached_tokens: self.cache_read_input_tokens,
            reasoning_tokens: None,
        }
    }
}

/// A whole OpenAI answer (chat completion, response, embeddings): identity, usage, finish reason or status.
pub(crate) fn observe_openai_body(body: &[u8]) -> Observed<'_> {
    let Ok(b) = serde_json::from_slice::<OaEnvelope>(body) else { return Observed::default() };
    let finish_reason = b.choices.iter().find_map(|c| c.finish_reason.clone()).or(b.status);
    Observed {
        id: b.id,
        model: b.model,
        usage: b.usage.as_ref().map(|u| UsageUpdate::Replace(u.openai())),
        finish_reason,
        ..Observed::default()
    }
}

/// A whole Anthropic answer (message, token count): identity, usage, stop reason.
pub(crate) fn observe_anthropic_body(body: &[u8]) -> Observed<'_> {
    let Ok(b) = serde_json::from_slice::<AnEnvelope>(body) else { return Observed::default() };
    let mut usage = b.usage.as_ref().map(WireUsage::anthropic).unwrap_or_default();
    if let Some(n) = b.input_tokens {
        usage.input_tokens = Some(n);
    }
    Observed {
        id: b.id,
        model: b.model,
        usage: Some(UsageUpdate::Update(usage)),
        finish_reason: b.stop_reason,
        ..Observed::default()
    }
}
