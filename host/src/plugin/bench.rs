//! `weir plugin bench <file.wasm>`: what one plugin costs, measured in process (no network, no proxy):
//! instantiation, `on-request`, `on-chunk` per event, and the whole per-request cost (instantiate + on-request +
//! on-complete + drop), as median and p99 over many iterations; and the per-request cost on one reused instance (what
//! `isolation = "tenant"` or `"shared"` gives: on-request + on-complete, no instantiation).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::PluginEngine;
use super::hook::Hook;
use super::host::{PluginContext, RequestSnapshot};
use super::kv::MemoryKv;
use super::types;
use crate::api::{Endpoint, Family};
use crate::config::{Capability, PluginRuntime};

const CHUNKS_PER_REQUEST: usize = 16;

pub fn run(
    bytes: &[u8],
    iterations: usize,
    config_json: &str,
    extra_headers: &[String],
    principal: Option<&str>,
) -> anyhow::Result<()> {
    let engine = PluginEngine::new(&PluginRuntime { max_instances: 16, ..Default::default() })?;
    let started = Instant::now();
    let compiled = engine.compile(bytes, &Capability::ALL)?;
    println!(
        "compiled in {:.1} ms ({})",
        started.elapsed().as_secs_f64() * 1e3,
        if compiled.cached { "from the cache" } else { "fresh" }
    );
    let context = Arc::new(PluginContext {
        name: "bench".into(),
        config_json: config_json.into(),
        kv: Arc::new(MemoryKv::default()),
        memory_cap: 32 << 20,
        events: Default::default(),
        events_warned: Default::default(),
    });
    // `ID[:TEAM]`: the principal authentication established, for plugins that act only once one is known (cost,
    // ratelimit): without it they return early and the bench measures only that.
    let principal = principal.map(|p| match p.split_once(':') {
        Some((id, team)) => types::Principal { id: id.into(), team: Some(team.into()) },
        None => types::Principal { id: p.into(), team: None },
    });
    let req = Arc::new(sample_request(extra_headers, principal)?);
    let chunk = sample_chunk;
    let summary = sample_summary(&req);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The same plugin pre-initialized (what the gateway loads by default for 0.2.0 components), measured in the
    // same run, request by request alternating with the plain one.
    let preinit = rt.block_on(async {
        let snapshot = engine.preinitialize(bytes, context.clone(), Duration::from_millis(250)).await?;
        engine.compile(&snapshot, &Capability::ALL).map_err(|e| e.to_string())
    });
    let preinit = match preinit {
        Ok(c) => Some(c.pre),
        Err(e) => {
            println!("not pre-initialized: {e}");
            None
        }
    };
    let (mut plain, mut pre) = (Samples::default(), Samples::default());
    let mut reused = Vec::new();
    rt.block_on(async {
        for i in 0..iterations + iterations / 10 {
            let keep = i >= iterations / 10;
            fresh_request(
                &engine,
                &context,
                &compiled.pre,
                Some(config_json),
                &req,
                &chunk,
                &summary,
                keep,
                &mut plain,
            )
            .await?;
            if let Some(p) = &preinit {
                fresh_request(&engine, &context, p, None, &req, &chunk, &summary, keep, &mut pre).await?;
            }
        }
        // One instance reused for every request, as with `tenant` or `shared` isolation (chunks are measured above).
        let mut store = engine.store(context.clone());
        super::host::start_call(&mut store, Hook::Init, Duration::from_millis(100));
        let plugin = compiled.pre.instantiate(&mut store).await?;
        let _ = plugin.init(&mut store, config_json).await?;
        for i in 0..iterations + iterations / 10 {
            let t0 = Instant::now();
            super::host::start_call(&mut store, Hook::OnRequest, Duration::from_millis(100));
            let _ = plugin.on_request(&mut store, &req).await?;
            super::host::start_call(&mut store, Hook::OnComplete, Duration::from_millis(100));
            plugin.on_complete(&mut store, &summary).await?;
            if i >= iterations / 10 {
                reused.push(t0.elapsed());
            }
        }
        anyhow::Ok(())
    })?;

    print_table(iterations, &mut plain, preinit.is_some().then_some(&mut pre), &mut reused);
    Ok(())
}

/// A streamed chat request as an SDK sends it, with `extra_headers` (`NAME:VALUE`) added.
fn sample_request(extra_headers: &[String], principal: Option<types::Principal>) -> anyhow::Result<RequestSnapshot> {
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about rivers and the weirs that hold them back."}],"stream":true,"max_tokens":256}"#;
    let mut headers = http::HeaderMap::new();
    for n in ["content-type", "accept", "user-agent", "x-stainless-lang", "authorization"] {
        headers.insert(n, http::HeaderValue::from_static("application/json; v=1"));
    }
    for h in extra_headers {
        let Some((name, value)) = h.split_once(':') else { anyhow::bail!("--header {h:?}: expected NAME:VALUE") };
        headers.insert(
            http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())?,
            http::HeaderValue::from_str(value.trim())?,
        );
    }
    Ok(RequestSnapshot::new(
        "req_0123456789abcdef".into(),
        Family::OpenAi,
        Endpoint::ChatCompletions,
        "gpt-4o-mini".into(),
        true,
        Arc::new(headers),
        bytes::Bytes::from_static(body),
        principal,
        Vec::new(),
    ))
}

/// The `i`th event of a streamed chat answer (200 bytes, one text piece).
fn sample_chunk(i: usize) -> types::Chunk {
    let data = r#"{"id":"chatcmpl-weirmock","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" rivers"},"logprobs":null,"finish_reason":null}]}"#;
    types::Chunk {
        index: i as u32,
        event: None,
        data: data.into(),
        texts: vec![types::TextPiece {
            stream: types::TextStream { choice: 0, part: 0, kind: types::TextKind::Answer },
            text: " rivers".into(),
        }],
        whole_body: false,
    }
}

/// The completion summary of `req`: a successful streamed answer.
fn sample_summary(req: &RequestSnapshot) -> types::Summary {
    types::Summary {
        request_id: req.id.clone(),
        model: req.model.clone(),
        status: 200,
        outcome: "ok".into(),
        upstream: Some("openai".into()),
        attempts: 1,
        usage: types::Usage {
            input_tokens: Some(40),
            output_tokens: Some(16),
            cached_tokens: Some(0),
            reasoning_tokens: None,
        },
        ttft_ms: Some(120.0),
        duration_ms: 900.0,
        principal: req.principal.clone(),
        metadata: Vec::new(),
        error: None,
        partial: false,
    }
}

/// The results: median and p99 of each measure.
fn print_table(iterations: usize, plain: &mut Samples, pre: Option<&mut Samples>, reused: &mut Vec<Duration>) {
    println!("{iterations} requests, {CHUNKS_PER_REQUEST} on-chunk calls each (200-byte chat chunks)\n");
    println!("{:<52} {:>10} {:>10}", "measure", "median µs", "p99 µs");
    let mut rows: Vec<(&str, &mut Vec<Duration>)> = vec![
        ("instantiate + init (pooling, fresh store)", &mut plain.inst),
        ("on-request call", &mut plain.on_req),
        ("per request: instantiate + init + on-request + on-complete + drop", &mut plain.total),
    ];
    if let Some(pre) = pre {
        rows.push(("pre-initialized: instantiate (no init)", &mut pre.inst));
        rows.push(("pre-initialized: on-request call", &mut pre.on_req));
        rows.push(("pre-initialized: per request, fresh instance", &mut pre.total));
        rows.push(("  of which: new store", &mut pre.store));
        rows.push(("  of which: on-complete", &mut pre.complete));
        rows.push(("  of which: drop (slot reset)", &mut pre.drop));
    }
    rows.push(("per request, reused instance: on-request + on-complete", reused));
    rows.push(("on-chunk call, per event", &mut plain.on_chunk));
    for (name, v) in rows {
        v.sort();
        let q = |p: f64| v.get(((v.len().max(1) - 1) as f64 * p) as usize).map_or(0.0, |d| d.as_secs_f64() * 1e6);
        println!("{name:<52} {:>10.2} {:>10.2}", q(0.5), q(0.99));
    }
}

#[derive(Default)]
struct Samples {
    inst: Vec<Duration>,
    on_req: Vec<Duration>,
    on_chunk: Vec<Duration>,
    total: Vec<Duration>,
    store: Vec<Duration>,
    complete: Vec<Duration>,
    drop: Vec<Duration>,
}

/// One request on a fresh instance of `pre` (running `init` first when given its config), timed into `s` if `keep`.
#[allow(clippy::too_many_arguments)]
async fn fresh_request(
    engine: &PluginEngine,
    context: &Arc<PluginContext>,
    pre: &super::contract::Pre,
    init: Option<&str>,
    req: &Arc<RequestSnapshot>,
    chunk: &impl Fn(usize) -> types::Chunk,
    summary: &types::Summary,
    keep: bool,
    s: &mut Samples,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut store = engine.store(context.clone());
    let ts = Instant::now();
    super::host::start_call(&mut store, Hook::Init, Duration::from_millis(100));
    let plugin = pre.instantiate(&mut store).await?;
    if let Some(config) = init {
        let _ = plugin.init(&mut store, config).await?;
    }
    let t1 = Instant::now();
    super::host::start_call(&mut store, Hook::OnRequest, Duration::from_millis(100));
    let _ = plugin.on_request(&mut store, req).await?;
    let t2 = Instant::now();
    let mut chunk_times = [Duration::ZERO; CHUNKS_PER_REQUEST];
    for (k, slot) in chunk_times.iter_mut().enumerate() {
        let c = chunk(k);
        let started = Instant::now();
        super::host::start_call(&mut store, Hook::OnChunk, Duration::from_millis(100));
        let _ = plugin.on_chunk(&mut store, &c).await?;
        *slot = started.elapsed();
    }
    let t3 = Instant::now();
    super::host::start_call(&mut store, Hook::OnComplete, Duration::from_millis(100));
    plugin.on_complete(&mut store, summary).await?;
    let td = Instant::now();
    drop(store);
    let t4 = Instant::now();
    if keep {
        s.store.push(ts - t0);
        s.complete.push(td - t3);
        s.drop.push(t4 - td);
        s.inst.push(t1 - t0);
        s.on_req.push(t2 - t1);
        s.on_chunk.extend(chunk_times);
        s.total.push((t2 - t0) + (t4 - t3));
    }
    Ok(())
}
