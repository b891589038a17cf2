//! A finished request's Prometheus metrics, counted from its frozen record.

use crate::record::Ended;
use crate::telemetry::metrics::{
    AttemptLabels, EndpointLabels, METRICS, ModelLabels, RequestLabels, RetryLabels, TokenLabels, TranslationLabels,
};

/// Counts a finished request in the Prometheus metrics.
pub fn count(line: &Ended) {
    let m = &*METRICS;
    let endpoint = line.endpoint.as_str();
    m.requests
        .get_or_create(&RequestLabels {
            family: line.endpoint.family().as_str(),
            endpoint,
            status: line.status,
            outcome: line.outcome.as_str(),
        })
        .inc();
    if let Some(kind) = line.provider.filter(|k| k.family() != line.endpoint.family()) {
        m.translated.get_or_create(&TranslationLabels { endpoint, provider: kind.family().as_str() }).inc();
    }
    let n = line.attempts.len();
    for (k, a) in line.attempts.iter().enumerate() {
        m.attempts.get_or_create(&AttemptLabels { upstream: a.upstream.clone(), outcome: a.outcome }).inc();
        if k + 1 < n {
            m.retries.get_or_create(&RetryLabels { upstream: a.upstream.clone(), reason: a.outcome }).inc();
        }
    }
    let model = line.upstream_model.clone().or_else(|| line.model.clone()).unwrap_or_default();
    if let Some(i) = line.usage.input_tokens {
        m.tokens.get_or_create(&TokenLabels { model: model.clone(), direction: "input" }).inc_by(i);
    }
    if let Some(o) = line.usage.output_tokens {
        m.tokens.get_or_create(&TokenLabels { model: model.clone(), direction: "output" }).inc_by(o);
    }
    if let Some(ttft) = line.ttft_ms {
        m.ttft.get_or_create(&EndpointLabels { endpoint }).observe(ttft / 1e3);
    }
    m.duration.get_or_create(&EndpointLabels { endpoint }).observe(line.duration_ms / 1e3);
    if let Some(tps) = line.tokens_per_s {
        m.tokens_per_second.get_or_create(&ModelLabels { model }).observe(tps);
    }
}
