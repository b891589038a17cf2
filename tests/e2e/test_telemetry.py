"""Observability end to end: OTLP traces received by a real OTLP receiver in this process (gRPC with grpcio and HTTP
with http.server, both decoding the protobuf messages of `opentelemetry-proto`), and `/metrics` parsed with the
Prometheus client's OpenMetrics parser.

The gateways export to the receiver over both protocols (one configured by the standard `OTEL_*` variables, one by
`[telemetry]`), run the allowlist plugin, and are called through the official SDKs.
"""

import concurrent.futures
import json
import statistics
import threading
import time
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import httpx2 as httpx  # the HTTP client the official SDKs use
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import ALLOWLIST_PLUGIN, CLIENT_KEY, GUESTS, UPSTREAM_KEY, Gateway, anthropic_client, free_port, openai_client

PROMPT_CANARY = "prompt-canary-51d0c7 what is a weir"
QUERY_CANARY = "query-canary-8e21aa"
ANSWER_TEXT = "Hello from the Weir mock"
KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT"}


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class Receiver:
    """An OTLP trace receiver: gRPC TraceService and HTTP POST /v1/traces, keeping every decoded span and the raw
    bytes of every export (to search for secrets)."""

    def __init__(self):
        self.spans, self.raw, self.lock = [], [], threading.Lock()
        receiver = self

        class Service(pb_grpc.TraceServiceServicer):
            def Export(self, request, context):
                receiver.take(request, request.SerializeToString(), "grpc")
                return pb.ExportTraceServiceResponse()

        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_TraceServiceServicer_to_server(Service(), self.grpc)
        self.grpc_port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.grpc.start()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/v1/traces", self.path
                assert self.headers["content-type"] == "application/x-protobuf"
                receiver.take(pb.ExportTraceServiceRequest.FromString(body), body, "http",
                              dict(self.headers.items()))
                out = pb.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.http_headers = []

    def take(self, req, raw, protocol, headers=None):
        with self.lock:
            self.raw.append(raw)
            if headers:
                self.http_headers.append(headers)
            for rs in req.resource_spans:
                resource = {a.key: any_value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({
                            "protocol": protocol,
                            "service": resource.get("service.name"),
                            "scope": ss.scope.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": KINDS.get(s.kind, s.kind),
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "status": s.status.code,
                            "attrs": {a.key: any_value(a.value) for a in s.attributes},
                            "events": [e.name for e in s.events],
                        })

    def trace(self, trace_id, pred, timeout=10.0):
        """The spans of one trace, once `pred(spans)` holds."""
        deadline = time.time() + timeout
        while True:
            with self.lock:
                spans = [s for s in self.spans if s["trace_id"] == trace_id]
            if pred(spans):
                return spans
            if time.time() > deadline:
                raise AssertionError(f"trace {trace_id}: {json.dumps(spans, indent=1)[:3000]}")
            time.sleep(0.05)

    def request_trace(self, request_id, pred=lambda spans: True, timeout=10.0):
        """The spans of the trace whose server span has this request id (the server span is exported last)."""
        deadline = time.time() + timeout
        while True:
            with self.lock:
                server = [s for s in self.spans if s["attrs"].get("weir.request_id") == request_id]
            if server:
                return self.trace(server[0]["trace_id"], pred, timeout)
            if time.time() > deadline:
                raise AssertionError(f"no span for {request_id}")
            time.sleep(0.05)

    def stop(self):
        self.grpc.stop(0)
        self.http.shutdown()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def gws(session_tmp, mock, receiver):
    """grpc: configured only by the standard environment variables; http: by [telemetry]; capture: http with
    content capture on."""
    g = {
        "grpc": Gateway(session_tmp, mock, name="otel-grpc", tail=ALLOWLIST_PLUGIN, env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.grpc_port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "weir-grpc"}),
        "http": Gateway(session_tmp, mock, name="otel-http", tail=ALLOWLIST_PLUGIN + f"""
[telemetry]
otlp_endpoint = "http://127.0.0.1:{receiver.http_port}"
otlp_protocol = "http/protobuf"
service_name = "weir-http"
otlp_headers = {{ "x-collector-tenant" = "team-a" }}
"""),
        "capture": Gateway(session_tmp, mock, name="otel-capture", tail=f"""
[telemetry]
otlp_endpoint = "http://127.0.0.1:{receiver.http_port}"
service_name = "weir-capture"
capture_content = true
"""),
        # The conformance plugin (sets a principal, attributes and an event); a span per on-chunk call; no new
        # traces sampled (only callers' sampled traces are recorded).
        "debug": Gateway(session_tmp, mock, name="otel-debug", tail=f"""
[telemetry]
otlp_endpoint = "http://127.0.0.1:{receiver.http_port}"
service_name = "weir-debug"
chunk_spans = true
sampling_ratio = 0.0

[[plugins]]
name = "conformance"
file = "{GUESTS / 'conformance-rust.wasm'}"
capabilities = ["log", "config", "kv", "trace", "clock"]
config = {{ rewrite_model = "gpt-4o-mini" }}
"""),
    }
    yield g
    for x in g.values():
        x.stop()


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e{:04x}"
CALLER_SPAN = "00f067aa0ba902b7"


def caller(n):
    trace_id = TRACE_ID.format(n)
    return trace_id, {"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01", "tracestate": "vendor=abc"}


def by_kind(spans, kind):
    return [s for s in spans if s["kind"] == kind]


def complete(spans):
    """Server span, its attempt(s) and the plugin's on-request span (the only hook it declares) are all there."""
    return len(by_kind(spans, "SERVER")) == 1 and by_kind(spans, "CLIENT") and len(by_kind(spans, "INTERNAL")) >= 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("family,stream", [("openai", False), ("openai", True), ("anthropic", False), ("anthropic", True)])
def test_span_tree_and_genai_attributes(gws, receiver, mock, protocol, family, stream):
    g = gws[protocol]
    n = ["grpc", "http"].index(protocol) * 16 + ["openai", "anthropic"].index(family) * 2 + int(stream)
    trace_id, headers = caller(n)
    tag = f"otel-{protocol}-{family}-{stream}"
    headers = {**headers, "x-mock-tag": tag, "x-mock-chunks": "6"}
    if family == "openai":
        raw = openai_client(g).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=stream, extra_headers=headers,
            **({"stream_options": {"include_usage": True}} if stream else {}))
        if stream:
            chunks = list(raw.parse())
            usage, answer_id = chunks[-1].usage, chunks[0].id
        else:
            usage, answer_id = raw.parse().usage, raw.parse().id
        tokens = (usage.prompt_tokens, usage.completion_tokens)
    else:
        raw = anthropic_client(g).messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=stream,
            extra_headers=headers)
        if stream:
            events = list(raw.parse())
            answer_id = events[0].message.id
            out = [e for e in events if e.type == "message_delta"][-1].usage.output_tokens
            tokens = (None, out)
        else:
            m = raw.parse()
            answer_id, tokens = m.id, (m.usage.input_tokens, m.usage.output_tokens)

    spans = receiver.trace(trace_id, complete)
    (server,) = by_kind(spans, "SERVER")
    a = server["attrs"]
    assert server["parent"] == CALLER_SPAN, "continues the caller's trace under its span"
    assert server["service"] == f"weir-{protocol}" and server["scope"] == "weir"
    model = "gpt-4o-mini" if family == "openai" else "claude-haiku-4-5"
    assert server["name"] == f"chat {model}"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == family
    assert a["gen_ai.request.model"] == model and a["gen_ai.response.model"] == model
    assert a["gen_ai.response.id"] == answer_id
    assert a["gen_ai.response.finish_reasons"] == (["stop"] if family == "openai" else ["end_turn"])
    assert a["gen_ai.usage.output_tokens"] == tokens[1] == 6
    if tokens[0] is not None:
        assert a["gen_ai.usage.input_tokens"] == tokens[0]
    assert a["http.response.status_code"] == 200 and a["http.request.method"] == "POST"
    assert a["http.route"] == ("/v1/chat/completions" if family == "openai" else "/v1/messages")
    assert a["weir.request_id"] == raw.headers["x-request-id"]
    assert a["weir.stream"] is stream
    if stream:
        assert 0 < a["weir.time_to_first_token_ms"] < 10_000
    # allowlist declares no chunk hook: no on-chunk calls to summarize (the summary is checked with the
    # conformance plugin below).
    assert "weir.plugin.allowlist.on_chunk.calls" not in a

    (attempt,) = by_kind(spans, "CLIENT")
    assert attempt["parent"] == server["span_id"]
    assert attempt["name"] == f"upstream mock-{family}"
    assert attempt["attrs"]["weir.attempt"] == 1 and attempt["attrs"]["weir.attempt.outcome"] == "ok"
    assert attempt["attrs"]["http.response.status_code"] == 200
    assert server["start"] <= attempt["start"] <= attempt["end"] <= server["end"]

    plugin = by_kind(spans, "INTERNAL")
    # allowlist declares only on-request (weir:hooks): no on-chunk, flush or on-complete calls, so no such spans.
    assert {s["attrs"]["weir.plugin.hook"] for s in plugin} == {"on-request"}
    for s in plugin:
        assert s["parent"] == server["span_id"] and s["attrs"]["weir.plugin.name"] == "allowlist"
        assert len(s["attrs"]["weir.plugin.version"]) == 12
    assert [s["attrs"]["weir.plugin.decision"] for s in plugin if s["attrs"]["weir.plugin.hook"] == "on-request"] == ["continue-with"]

    # The upstream got the trace, with the attempt's span as parent.
    (rec,) = mock.wait_requests(tag, lambda r: len(r) >= 1)
    sent = dict(rec["headers"])
    assert sent["traceparent"] == f"00-{trace_id}-{attempt['span_id']}-01"
    assert sent["tracestate"] == "vendor=abc"


def test_collector_headers_from_config(gws, receiver):
    r = openai_client(gws["http"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    receiver.request_trace(r.headers["x-request-id"])
    assert any(h.get("x-collector-tenant") == "team-a" for h in receiver.http_headers)


def test_new_trace_without_traceparent(gws, receiver):
    r = openai_client(gws["grpc"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    spans = receiver.request_trace(r.headers["x-request-id"], complete)
    (server,) = by_kind(spans, "SERVER")
    assert server["parent"] == "" and len(server["trace_id"]) == 32 and server["trace_id"] != "0" * 32


def test_failover_shows_two_attempt_spans(gws, receiver):
    trace_id, headers = caller(0xFA11)
    r = openai_client(gws["grpc"]).chat.completions.with_raw_response.create(
        model="failover-refused", messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
    assert r.headers["x-weir-upstream"] == "mock-openai"
    spans = receiver.trace(trace_id, lambda s: len(by_kind(s, "CLIENT")) == 2 and len(by_kind(s, "SERVER")) == 1)
    (server,) = by_kind(spans, "SERVER")
    first, second = sorted(by_kind(spans, "CLIENT"), key=lambda s: s["attrs"]["weir.attempt"])
    assert (first["name"], second["name"]) == ("upstream dead-openai", "upstream mock-openai")
    assert first["attrs"]["weir.attempt.outcome"] == "connect" and first["attrs"]["weir.retry.reason"] == "connect"
    assert first["status"] == 2 and "http.response.status_code" not in first["attrs"]  # STATUS_CODE_ERROR
    assert second["attrs"]["weir.attempt"] == 2 and second["attrs"]["weir.attempt.outcome"] == "ok"
    assert first["parent"] == second["parent"] == server["span_id"] and first["span_id"] != second["span_id"]
    assert first["end"] <= second["start"]
    assert server["attrs"]["weir.attempts"] == 2 and server["attrs"]["weir.upstream"] == "mock-openai"


def test_plugin_rejection_span(gws, receiver):
    trace_id, headers = caller(0xBAD)
    import openai
    with pytest.raises(openai.PermissionDeniedError):
        openai_client(gws["grpc"]).chat.completions.create(
            model="text-embedding-3-small", messages=[{"role": "user", "content": "hi"}], extra_headers=headers)
    spans = receiver.trace(trace_id, lambda s: len(by_kind(s, "SERVER")) == 1)
    (server,) = by_kind(spans, "SERVER")
    assert server["attrs"]["http.response.status_code"] == 403 and server["attrs"]["error.type"] == "client_error"
    (on_request,) = [s for s in by_kind(spans, "INTERNAL") if s["attrs"]["weir.plugin.hook"] == "on-request"]
    assert on_request["attrs"]["weir.plugin.decision"] == "reject"
    assert not by_kind(spans, "CLIENT"), "no upstream was called"


def test_chunk_spans_principal_and_plugin_events(gws, receiver):
    trace_id, headers = caller(0xDEB)
    chunks = list(openai_client(gws["debug"]).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={**headers, "x-conformance": "rewrite", "x-mock-chunks": "4"}))
    assert chunks
    spans = receiver.trace(trace_id, lambda s: len(by_kind(s, "SERVER")) == 1)
    (server,) = by_kind(spans, "SERVER")
    a = server["attrs"]
    assert a["weir.principal.id"] == "conformance-user", "the principal a plugin set"
    assert a["weir.plugin.conformance.mode"] == "rewrite"
    assert server["events"] == ["weir.plugin.conformance.request"]
    on_chunk = [s for s in by_kind(spans, "INTERNAL") if s["attrs"]["weir.plugin.hook"] == "on-chunk"]
    assert len(on_chunk) == a["weir.plugin.conformance.on_chunk.calls"] >= 4
    assert {s["attrs"]["weir.plugin.decision"] for s in on_chunk} == {"pass"}


def test_sampling_ratio_zero_records_only_callers_sampled_traces(gws, receiver, mock):
    client = openai_client(gws["debug"])
    unsampled = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-tag": "otel-unsampled"})
    trace_id, headers = caller(0x5A)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   extra_headers=headers)
    receiver.trace(trace_id, lambda s: len(by_kind(s, "SERVER")) == 1)
    # Spans are queued in order: once the later request's are in, the earlier one's would have been too.
    with receiver.lock:
        assert not [s for s in receiver.spans if s["attrs"].get("weir.request_id") == unsampled.headers["x-request-id"]]
    (rec,) = mock.wait_requests("otel-unsampled", lambda r: len(r) >= 1)
    assert dict(rec["headers"])["traceparent"].endswith("-00"), "the upstream is told the trace is not sampled"


def secret_request(g):
    """A request carrying canaries in every place a secret or prompt can be: the bearer key, x-api-key, a ?key=
    query parameter and the prompt. Returns its request id."""
    r = httpx.post(f"{g.url}/v1/chat/completions?key={QUERY_CANARY}",
                   headers={"authorization": f"Bearer {CLIENT_KEY}", "x-api-key": CLIENT_KEY},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT_CANARY}]}, timeout=20)
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"], r.json()["choices"][0]["message"]["content"]


def test_no_secrets_or_content_in_spans_by_default(gws, receiver):
    for name in ("grpc", "http"):
        request_id, answer = secret_request(gws[name])
        receiver.request_trace(request_id, complete)
        assert answer.startswith(ANSWER_TEXT)
    with receiver.lock:
        exported = b"".join(receiver.raw)
    for canary in (CLIENT_KEY, UPSTREAM_KEY, QUERY_CANARY, PROMPT_CANARY, ANSWER_TEXT):
        assert canary.encode() not in exported, f"{canary!r} was exported"


def test_content_capture_is_opt_in(gws, receiver):
    request_id, answer = secret_request(gws["capture"])
    (server,) = by_kind(receiver.request_trace(request_id, lambda s: by_kind(s, "SERVER")), "SERVER")
    assert PROMPT_CANARY in server["attrs"]["gen_ai.input.messages"]
    out = json.loads(server["attrs"]["gen_ai.output.messages"])
    assert out == [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]
    # Even then, no credentials.
    encoded = json.dumps(server).encode()
    for canary in (CLIENT_KEY, UPSTREAM_KEY, QUERY_CANARY):
        assert canary.encode() not in encoded


def scrape(g):
    with urllib.request.urlopen(g.url + "/metrics", timeout=5) as r:
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families, metric, name=None, **labels):
    f = families[metric]
    for s in f.samples:
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def test_metrics_parse_and_count(gws):
    g = gws["grpc"]
    client = openai_client(g)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"x-mock-chunks": "5"})
    list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                        stream=True, extra_headers={"x-mock-chunks": "5"}))
    client.chat.completions.create(model="failover-refused", messages=[{"role": "user", "content": "hi"}])
    m = scrape(g)
    assert sample(m, "weir_requests", "weir_requests_total", family="openai", endpoint="chat.completions",
                  status="200", outcome="ok") >= 3
    assert sample(m, "weir_upstream_attempts", upstream="dead-openai", outcome="connect") >= 1
    assert sample(m, "weir_upstream_retries", upstream="dead-openai", reason="connect") >= 1
    assert sample(m, "weir_upstream_attempts", upstream="mock-openai", outcome="ok") >= 3
    assert sample(m, "weir_tokens", model="gpt-4o-mini", direction="output") >= 10
    assert sample(m, "weir_tokens", model="gpt-4o-mini", direction="input") > 0
    assert sample(m, "weir_time_to_first_token_seconds", "weir_time_to_first_token_seconds_count",
                  endpoint="chat.completions") >= 1
    assert sample(m, "weir_request_duration_seconds", "weir_request_duration_seconds_count",
                  endpoint="chat.completions") >= 3
    assert sample(m, "weir_output_tokens_per_second", "weir_output_tokens_per_second_count", model="gpt-4o-mini") >= 1
    assert sample(m, "weir_open_streams") == 0
    assert sample(m, "weir_plugin_calls", plugin="allowlist", hook="on-request") >= 3
    # allowlist declares only on-request (weir:hooks): it is never called for chunks.
    assert sample(m, "weir_plugin_calls", plugin="allowlist", hook="on-chunk") == 0
    assert sample(m, "weir_plugin_call_duration_seconds", "weir_plugin_call_duration_seconds_count",
                  plugin="allowlist", hook="on-request") >= 3
    assert sample(m, "weir_plugin_failures", plugin="allowlist", hook="on-request") == 0
    assert sample(m, "weir_spans_exported") > 0 and sample(m, "weir_spans_dropped") == 0


def test_open_streams_gauge_counts_streams_in_progress(gws):
    g = gws["http"]
    stream = openai_client(g).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"x-mock-chunks": "40", "x-mock-delay-ms": "50"})
    next(iter(stream))
    assert sample(scrape(g), "weir_open_streams") == 1
    stream.close()
    deadline = time.time() + 5
    while sample(scrape(g), "weir_open_streams") != 0:
        assert time.time() < deadline
        time.sleep(0.05)


def test_reloads_are_counted(session_tmp, mock):
    from conftest import install
    d = session_tmp / "otel-reload.d"
    d.mkdir()
    g = Gateway(session_tmp, mock, name="otel-reload", top=f'plugins_dir = "{d}"\n')
    try:
        install(d, "allowlist", "allowlist.wasm", 'capabilities = ["kv", "trace"]\nconfig = { models = ["*"] }\n')
        (d / "broken.wasm").write_bytes(b"\0asm half a file")
        deadline = time.time() + 30
        while True:
            m = scrape(g)
            loaded = sample(m, "weir_plugin_reloads", outcome="loaded") if "weir_plugin_reloads" in m else None
            failed = sample(m, "weir_plugin_reloads", outcome="failed") if "weir_plugin_reloads" in m else None
            if loaded and failed:
                break
            assert time.time() < deadline, (loaded, failed)
            time.sleep(0.1)
    finally:
        g.stop()


def test_collector_down_requests_unaffected_and_drops_counted(session_tmp, mock):
    """Spans to a collector that refuses connections: every request is served, as fast as by a gateway with
    tracing off (the gateway's own logged durations, same run), and the lost spans are counted."""
    dead = free_port()
    down = Gateway(session_tmp, mock, name="otel-down", tail=ALLOWLIST_PLUGIN + f"""
[telemetry]
otlp_endpoint = "http://127.0.0.1:{dead}"
otlp_protocol = "grpc"
""")
    off = Gateway(session_tmp, mock, name="otel-off", tail=ALLOWLIST_PLUGIN)
    try:
        def run(g, n=200):
            client = openai_client(g)
            def one(_):
                return client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).headers["x-request-id"]
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(one, range(n)))
            return statistics.median(g.record(i)["duration_ms"] for i in ids)

        run(off, 20), run(down, 20)  # warm-up
        off_ms, down_ms = run(off), run(down)
        assert down_ms <= 2 * off_ms + 5, (down_ms, off_ms)
        deadline = time.time() + 15
        while (dropped := sample(scrape(down), "weir_spans_dropped")) < 220 * 3:
            assert time.time() < deadline, dropped
            time.sleep(0.2)
        assert "could not export spans" in down.log_text()
        assert "traces: OTLP grpc to http://127.0.0.1" in down.log_text()
        assert "traces: off" in off.log_text()
    finally:
        down.stop()
        off.stop()


def test_translated_request_names_the_provider_actually_used(gws, receiver):
    """An OpenAI client served by an Anthropic upstream: the span names Anthropic as the provider, the usage is the
    answer's, and the attempt span is the Anthropic upstream's."""
    g = gws["http"]
    trace_id, headers = caller(99)
    stream = openai_client(g).chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}, extra_headers={**headers, "x-mock-chunks": "5"})
    usage = [c.usage for c in stream if c.usage][0]
    spans = receiver.trace(trace_id, complete)
    (server,) = by_kind(spans, "SERVER")
    a = server["attrs"]
    assert a["gen_ai.provider.name"] == "anthropic" and a["http.route"] == "/v1/chat/completions"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "claude-haiku-4-5"
    assert a["gen_ai.usage.output_tokens"] == usage.completion_tokens == 5
    assert a["gen_ai.usage.input_tokens"] == usage.prompt_tokens > 0
    assert a["gen_ai.response.finish_reasons"] == ["stop"], "in the client's terms"
    (attempt,) = by_kind(spans, "CLIENT")
    assert attempt["name"] == "upstream mock-anthropic"
