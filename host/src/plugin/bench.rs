//! `weir plugin bench <file.wasm>`: what one plugin costs, measured in process (no network, no proxy):
//! instantiation, `on-request`, `on-chunk` per event, and the whole per-request cost (instantiate + on-request +
//! on-complete + drop), as median and p99 over many iterations; and the per-request cost on one reused instance (what
//! `warm_instances` gives: on-request + on-complete, no instantiation).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::types;
use super::engine::PluginEngine;
use super::host::{PluginContext, RequestSnapshot};
use super::kv::MemoryKv;
use crate::api::{Endpoint, Family};
use crate::config::{Capability, PluginRuntime};

const CHUNKS_PER_REQUEST: usize = 16;

pub fn run(bytes: &[u8], iterations: usize, config_json: &str) -> anyhow::Result<()> {
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
    });
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about rivers and the weirs that hold them back."}],"stream":true,"max_tokens":256}"#;
    let mut headers = http::HeaderMap::new();
    for n in ["content-type", "accept", "user-agent", "x-stainless-lang", "authorization"] {
        headers.insert(n, http::HeaderValue::from_static("application/json; v=1"));
    }
    let req = Arc::new(RequestSnapshot::new(
        "req_0123456789abcdef".into(),
        Family::OpenAi,
        Endpoint::ChatCompletions,
        "gpt-4o-mini".into(),
        true,
        Arc::new(headers),
        bytes::Bytes::from_static(body),
        None,
        Vec::new(),
    ));
    let data = r#"{"id":"chatcmpl-weirmock","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" rivers"},"logprobs":null,"finish_reason":null}]}"#;
    let chunk = |i: usize| types::Chunk {
        index: i as u32,
        event: None,
        data: data.into(),
        texts: vec![types::TextPiece {
            stream: types::TextStream { choice: 0, part: 0, kind: types::TextKind::Answer },
            text: " rivers".into(),
        }],
        whole_body: false,
    };
    let summary = types::Summary {
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
        principal: None,
        metadata: Vec::new(),
        error: None,
        partial: false,
    };

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut inst, mut on_req, mut on_chunk, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut warm = Vec::new();
    rt.block_on(async {
        for i in 0..iterations + iterations / 10 {
            let warmup = i < iterations / 10;
            let t0 = Instant::now();
            let mut store = engine.store(context.clone());
            store.data_mut().start_call(Duration::from_millis(100));
            let plugin = compiled.pre.instantiate(&mut store).await?;
            let _ = plugin.init(&mut store, config_json).await?;
            let t1 = Instant::now();
            store.data_mut().start_call(Duration::from_millis(100));
            let _ = plugin.on_request(&mut store, &req).await?;
            let t2 = Instant::now();
            let mut chunk_times = [Duration::ZERO; CHUNKS_PER_REQUEST];
            for (k, slot) in chunk_times.iter_mut().enumerate() {
                let c = chunk(k);
                let s = Instant::now();
                store.data_mut().start_call(Duration::from_millis(100));
                let _ = plugin.on_chunk(&mut store, &c).await?;
                *slot = s.elapsed();
            }
            let t3 = Instant::now();
            store.data_mut().start_call(Duration::from_millis(100));
            plugin.on_complete(&mut store, &summary).await?;
            drop(store);
            let t4 = Instant::now();
            if !warmup {
                inst.push(t1 - t0);
                on_req.push(t2 - t1);
                on_chunk.extend(chunk_times);
                total.push((t2 - t0) + (t4 - t3));
            }
        }
        // One instance reused for every request, as with `warm_instances` (chunks are measured above).
        let mut store = engine.store(context.clone());
        store.data_mut().start_call(Duration::from_millis(100));
        let plugin = compiled.pre.instantiate(&mut store).await?;
        let _ = plugin.init(&mut store, config_json).await?;
        for i in 0..iterations + iterations / 10 {
            let t0 = Instant::now();
            store.data_mut().start_call(Duration::from_millis(100));
            let _ = plugin.on_request(&mut store, &req).await?;
            store.data_mut().start_call(Duration::from_millis(100));
            plugin.on_complete(&mut store, &summary).await?;
            if i >= iterations / 10 {
                warm.push(t0.elapsed());
            }
        }
        anyhow::Ok(())
    })?;

    println!("{iterations} requests, {CHUNKS_PER_REQUEST} on-chunk calls each (200-byte chat chunks)\n");
    println!("{:<44} {:>10} {:>10}", "measure", "median µs", "p99 µs");
    for (name, v) in [
        ("instantiate + init (pooling, fresh store)", &mut inst),
        ("on-request call", &mut on_req),
        ("per request: instantiate + on-request +", &mut total),
        ("per request, warm instance: on-request +", &mut warm),
        ("on-chunk call, per event", &mut on_chunk),
    ] {
        v.sort();
        let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        println!("{name:<44} {:>10.2} {:>10.2}", q(0.5), q(0.99));
        if name.starts_with("per request:") {
            println!("{:<44}", "  on-complete + drop");
        } else if name.starts_with("per request, warm") {
            println!("{:<44}", "  on-complete (warm_instances)");
        }
    }
    Ok(())
}
