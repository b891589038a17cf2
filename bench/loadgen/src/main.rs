//! `weir-loadgen`: the benchmark harness's streaming client (`bench/run.sh`).
//!
//! Opens `--conns` HTTP/1.1 connections to `--url`; on each, sends `--requests` streamed chat completions one after
//! the other and timestamps every SSE event as it arrives. Prints one line of `key=value` pairs: time to the first
//! event, time to first token (request sent → first event with content) and the gaps between consecutive content
//! events, as percentiles in microseconds, plus the streams completed and failed.
//!
//! `--hold S`: once every connection has seen its first token, print `ready` and keep all streams open for S seconds
//! (for memory per open stream), then exit.
//!
//! A small Rust client rather than a Python one so that 1,000 streams at 50 events/s each are measured, not
//! throttled, by the client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Args {
    url: String,
    conns: usize,
    requests: usize,
    body: String,
    headers: Vec<(String, String)>,
    hold: Option<u64>,
}

fn args() -> Result<Args, String> {
    let mut a =
        Args { url: String::new(), conns: 1, requests: 1, body: String::new(), headers: Vec::new(), hold: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val()?,
            "--conns" => a.conns = val()?.parse().map_err(|e| format!("--conns: {e}"))?,
            "--requests" => a.requests = val()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--body" => a.body = val()?,
            "--header" => {
                let h = val()?;
                let (k, v) = h.split_once(':').ok_or("--header takes name:value")?;
                a.headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            "--hold" => a.hold = Some(val()?.parse().map_err(|e| format!("--hold: {e}"))?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.url.is_empty() || a.body.is_empty() {
        return Err("usage: weir-loadgen --url http://host:port/v1/chat/completions --body JSON [--conns N] \
                    [--requests N] [--header name:value]... [--hold SECONDS]"
            .into());
    }
    Ok(a)
}

#[derive(Default)]
struct Stats {
    /// Request sent → first SSE event of any kind (no timer of the mock's in between, unlike the first token).
    ttfe: Vec<u64>,
    ttft: Vec<u64>,
    gaps: Vec<u64>,
    /// With `x-mock-stamp`: the mock's send time → arrival here, per text event (same host, same clock).
    delivery: Vec<u64>,
    ok: usize,
    failed: usize,
    errors: Vec<String>,
}

/// Whether an SSE event carries generated text (chat completions `delta.content`, Anthropic `text_delta`, Responses
/// `output_text.delta`).
fn has_content(event: &[u8]) -> bool {
    let s = String::from_utf8_lossy(event);
    ["\"content\":\"", "\"text\":\"", "\"delta\":\""]
        .iter()
        .any(|k| s.split(k).skip(1).any(|rest| !rest.starts_with('"')))
}

async fn one_connection(
    a: std::sync::Arc<Args>,
    first_token: tokio::sync::mpsc::Sender<()>,
    release: tokio::sync::watch::Receiver<bool>,
) -> Stats {
    let mut st = Stats::default();
    let uri: hyper::Uri = a.url.parse().expect("valid --url");
    let addr = format!("{}:{}", uri.host().unwrap_or("127.0.0.1"), uri.port_u16().unwrap_or(80));
    let stream = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            st.failed += a.requests;
            st.errors.push(format!("connect {addr}: {e}"));
            return st;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => {
            st.failed += a.requests;
            st.errors.push(format!("handshake: {e}"));
            return st;
        }
    };
    tokio::spawn(conn);
    for _ in 0..a.requests {
        let mut req = Request::post(uri.clone())
            .header("host", &addr)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(a.body.clone())))
            .expect("request");
        for (k, v) in &a.headers {
            req.headers_mut().insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                v.parse().expect("header value"),
            );
        }
        let sent = Instant::now();
        let resp = match send.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                st.failed += 1;
                st.errors.push(format!("request: {e}"));
                return st;
            }
        };
        if !resp.status().is_success() {
            st.failed += 1;
            st.errors.push(format!("status {}", resp.status()));
            let _ = resp.into_body().collect().await;
            continue;
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut last: Option<Instant> = None;
        let mut first_event = true;
        let mut broken = false;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                broken = true;
                break;
            };
            let now = Instant::now();
            let Some(data) = frame.data_ref() else { continue };
            buf.extend_from_slice(data);
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                if std::mem::take(&mut first_event) {
                    st.ttfe.push((now - sent).as_micros() as u64);
                }
                if !has_content(&event) {
                    continue;
                }
                if let Some(sent_us) = stamp(&event) {
                    st.delivery.push(unix_us().saturating_sub(sent_us));
                }
                match last {
                    None => {
                        st.ttft.push((now - sent).as_micros() as u64);
                        let _ = first_token.try_send(());
                        if let Some(secs) = a.hold {
                            // Keep the stream open (unread) until released or the hold ends.
                            let mut r = release.clone();
                            let _ = tokio::time::timeout(Duration::from_secs(secs + 60), r.changed()).await;
                            st.ok += 1;
                            return st;
                        }
                    }
                    Some(prev) => st.gaps.push((now - prev).as_micros() as u64),
                }
                last = Some(now);
            }
        }
        if broken || last.is_none() {
            st.failed += 1;
            st.errors.push("stream broke or carried no content".into());
        } else {
            st.ok += 1;
        }
    }
    st
}

/// The mock's `: sent_us=N` comment, if the event carries one.
fn stamp(event: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(event).ok()?;
    s.lines().find_map(|l| l.strip_prefix(": sent_us=")?.trim().parse().ok())
}

fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p / 100.0).ceil() as usize).clamp(1, v.len()) - 1]
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => std::sync::Arc::new(a),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(a.conns.max(1));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> =
        (0..a.conns).map(|_| tokio::spawn(one_connection(a.clone(), tx.clone(), release_rx.clone()))).collect();
    drop(tx);
    if let Some(secs) = a.hold {
        let mut seen = 0;
        while seen < a.conns && rx.recv().await.is_some() {
            seen += 1;
        }
        println!("ready {seen}");
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let _ = release_tx.send(true);
    }
    let mut all = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.ttfe.extend(s.ttfe);
            all.ttft.extend(s.ttft);
            all.gaps.extend(s.gaps);
            all.delivery.extend(s.delivery);
            all.ok += s.ok;
            all.failed += s.failed;
            all.errors.extend(s.errors);
        }
    }
    let (e, t, g, d) = (&mut all.ttfe, &mut all.ttft, &mut all.gaps, &mut all.delivery);
    println!(
        "streams_ok={} streams_failed={} ttfe_p50_us={} ttfe_p99_us={} ttft_p50_us={} ttft_p99_us={} gap_p50_us={} \
         gap_p99_us={} gap_max_us={} gaps={} delivery_p50_us={} delivery_p99_us={} delivered={}",
        all.ok,
        all.failed,
        pct(e, 50.0),
        pct(e, 99.0),
        pct(t, 50.0),
        pct(t, 99.0),
        pct(g, 50.0),
        pct(g, 99.0),
        pct(g, 100.0),
        g.len(),
        pct(d, 50.0),
        pct(d, 99.0),
        d.len()
    );
    if let Some(e) = all.errors.first() {
        eprintln!("first error: {e} ({} errors)", all.errors.len());
    }
}
