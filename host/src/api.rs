//! The API surface Weir speaks: the two families and the endpoints of each.

use http::HeaderMap;

/// The wire family of a request: which provider's API the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    OpenAi,
    Anthropic,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::OpenAi => "openai",
            Family::Anthropic => "anthropic",
        }
    }

    /// Best guess of a client's family for requests that match no endpoint (unknown routes): the
    /// Anthropic SDK always sends `anthropic-version`, and Anthropic paths start with `/v1/messages`.
    pub fn guess(path: &str, headers: &HeaderMap) -> Family {
        if path.starts_with("/v1/messages") || headers.contains_key("anthropic-version") {
            Family::Anthropic
        } else {
            Family::OpenAi
        }
    }
}

/// A proxied endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Responses,
    Embeddings,
    Messages,
    CountTokens,
}

impl Endpoint {
    /// Every endpoint, in declaration order (so `ALL[e as usize] == e`).
    pub const ALL: [Endpoint; 5] = [
        Endpoint::ChatCompletions,
        Endpoint::Responses,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::CountTokens,
    ];

    pub fn family(self) -> Family {
        match self {
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Embeddings => Family::OpenAi,
            Endpoint::Messages | Endpoint::CountTokens => Family::Anthropic,
        }
    }

    /// Path appended to an upstream's `base_url` (which ends in the version, e.g. `/v1`).
    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Responses => "/responses",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Messages => "/messages",
            Endpoint::CountTokens => "/messages/count_tokens",
        }
    }

    /// Low-cardinality name for logs and metrics.
    /// The client-facing path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "messages.count_tokens",
        }
    }

    /// Whether a `"stream": true` request body asks for SSE on this endpoint.
    pub fn can_stream(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order() {
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "{e:?}");
        }
    }
}
