"""Cloud upstreams (issue 27): Azure OpenAI, Anthropic on AWS Bedrock and on Google Vertex AI, through
`examples/cloud.toml` as written (only its ports, plugin paths and the test service account's token URI moved), with
the built-in mock playing each cloud and checking what the cloud checks.

Independent oracles keep the gateway and the mock from agreeing on the same mistake: botocore computes the SigV4
signature of the exact request the gateway sent and must get the same; botocore signs a request of its own that the
mock must accept, and decodes the mock's event-stream frames (the gateway decodes the same frames); google-auth
verifies the JWT assertion the gateway sent to the token endpoint, with the public half of the test key."""

import base64
import json
import re
import subprocess
import time
import urllib.request
import uuid

import anthropic
import openai
import pytest

from conftest import GUESTS, ROOT, WEIR, anthropic_client, free_port, http_json, openai_client, wait_http

DEMO_KEY = "sk-weir-demo"
MSG = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def makefile_demo_env():
    """The test credentials `make run` exports for examples/cloud.toml (read from the Makefile, so a test failing
    here means `make run WEIR_CONFIG=examples/cloud.toml` would not start)."""
    text = (ROOT / "Makefile").read_text()
    env = dict(re.findall(r"^run: export (WEIR_DEMO_\w+) \?= (\S+)$", text, re.M))
    assert set(env) == {"WEIR_DEMO_AWS_ACCESS_KEY_ID", "WEIR_DEMO_AWS_SECRET_ACCESS_KEY", "WEIR_DEMO_AZURE_KEY"}
    return env


class Cloud:
    def __init__(self, tmp, edit=lambda text: text, sa_edit=lambda sa: sa, env=None):
        self.port, self.mock_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mock = f"http://127.0.0.1:{self.mock_port}"
        sa = json.loads((ROOT / "examples" / "cloud" / "vertex-service-account.json").read_text())
        self.token_uri = sa["token_uri"] = f"{self.mock}/token"
        self.sa = sa_edit(sa)
        (tmp / "sa.json").write_text(json.dumps(self.sa))
        text = (ROOT / "examples" / "cloud.toml").read_text()
        assert 'credentials_file = "cloud/vertex-service-account.json"' in text
        text = text.replace("cloud/vertex-service-account.json", str(tmp / "sa.json"))
        text = text.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}").replace("127.0.0.1:8081", f"127.0.0.1:{self.mock_port}")
        text = text.replace('format = "text"', 'format = "json"')
        for name in ("auth", "cost"):
            text = text.replace(f"../target/wasm32-wasip2/plugin/weir_plugin_{name}.wasm", str(GUESTS / f"{name}.wasm"))
        config = tmp / "cloud.toml"
        config.write_text(edit(text))
        self.log = tmp / "weir.log"
        self.env = {**makefile_demo_env(), **(env or {})}
        import os
        self.proc = subprocess.Popen([str(WEIR), "serve", "--config", str(config)], stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        wait_http(self.url + "/readyz", proc=self.proc, log=self.log)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def record(self, request_id, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.log.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("target") == "weir::request" and rec.get("request_id") == request_id:
                    return rec
            time.sleep(0.02)
        raise AssertionError(f"no log record for {request_id}")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud"))
    yield c
    c.stop()


def oai(c):
    return openai_client(c, api_key=DEMO_KEY)


def ant(c):
    return anthropic_client(c, api_key=DEMO_KEY)


def test_each_cloud_answers_both_sdks_whole_and_streamed(cloud):
    for model, upstream in [("claude-haiku-4-5", "bedrock"), ("claude-sonnet-4-5", "vertex")]:
        raw = ant(cloud).messages.with_raw_response.create(model=model, max_tokens=64, messages=MSG)
        m = raw.parse()
        assert raw.headers["x-weir-upstream"] == upstream
        assert m.content[0].text.startswith("Hello from the Weir mock") and m.usage.output_tokens == 8
        with ant(cloud).messages.stream(model=model, max_tokens=64, messages=MSG) as s:
            assert "".join(s.text_stream).startswith("Hello from the Weir mock")
            final = s.get_final_message()
        assert final.usage.input_tokens > 0 and final.usage.output_tokens == 8, final.usage
        # The same models for an OpenAI client: translated, streamed.
        chunks = list(oai(cloud).chat.completions.create(model=model, messages=MSG, stream=True,
                                                         stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Hello from")
        assert chunks[-1].usage.completion_tokens == 8

    raw = oai(cloud).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    assert raw.headers["x-weir-upstream"] == "azure"
    assert raw.parse().choices[0].message.content.startswith("Hello from the Weir mock")
    chunks = list(oai(cloud).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                                     stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 8
    e = oai(cloud).embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(e.data) == 2
    # An Anthropic client on the Azure model: translated.
    with ant(cloud).messages.stream(model="gpt-4o-mini", max_tokens=64, messages=MSG) as s:
        assert "".join(s.text_stream).startswith("Hello from the Weir mock")


def test_tool_calls_through_each_cloud(cloud):
    for model in ("claude-haiku-4-5", "claude-sonnet-4-5"):
        with ant(cloud).messages.stream(model=model, max_tokens=256, messages=MSG, tools=[WEATHER],
                                        tool_choice={"type": "tool", "name": "get_weather"}) as s:
            final = s.get_final_message()
        tool = [b for b in final.content if b.type == "tool_use"]
        assert tool and tool[0].name == "get_weather" and isinstance(tool[0].input["city"], str), final
        assert final.stop_reason == "tool_use"
    fn = {"type": "function", "function": {"name": WEATHER["name"], "description": WEATHER["description"],
                                           "parameters": WEATHER["input_schema"]}}
    for model in ("gpt-4o-mini", "claude-haiku-4-5"):
        r = oai(cloud).chat.completions.create(model=model, messages=MSG, tools=[fn], tool_choice="required")
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments), r
        args = ""
        for c in oai(cloud).chat.completions.create(model=model, messages=MSG, tools=[fn], tool_choice="required",
                                                    stream=True):
            for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                args += tc.function.arguments or ""
        assert "city" in json.loads(args)


def test_usage_cost_and_provider_name_are_recorded(cloud):
    for model, upstream, provider, sent in [
        ("claude-haiku-4-5", "bedrock", "aws.bedrock", "anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("claude-sonnet-4-5", "vertex", "gcp.vertex_ai", "claude-sonnet-4-5@20250929"),
    ]:
        with ant(cloud).messages.with_streaming_response.create(model=model, max_tokens=64, messages=MSG,
                                                                 stream=True) as r:
            rid = r.headers["x-request-id"]
            for _ in r.iter_lines():
                pass
        rec = cloud.record(rid)
        assert (rec["upstream"], rec["provider"], rec["upstream_model"]) == (upstream, provider, sent), rec
        assert rec["output_tokens"] == 8 and rec["input_tokens"] > 0
        price_in, price_out = (1.0, 5.0) if upstream == "bedrock" else (3.0, 15.0)
        usd = (rec["input_tokens"] * price_in + 8 * price_out) / 1e6
        assert f"usd={usd:.6f}" in rec["plugin_attributes"], rec["plugin_attributes"]
    raw = oai(cloud).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    rec = cloud.record(raw.headers["x-request-id"])
    assert (rec["upstream"], rec["provider"]) == ("azure", "azure.ai.openai")
    assert "usd=" in rec["plugin_attributes"]
    log = cloud.log.read_text()
    for secret in makefile_demo_env().values():
        assert secret not in log
    assert "ya29." not in log and "PRIVATE KEY" not in log


def test_bedrock_failures_reach_the_client_in_its_shape(cloud):
    # An exception frame mid-stream: the events before it, then the client's error with Bedrock's message.
    with pytest.raises(anthropic.APIStatusError) as e:
        with ant(cloud).messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG, extra_headers={
                "x-mock-bedrock-exception": "throttlingException", "x-mock-bedrock-exception-after": "4"}) as s:
            for _ in s.text_stream:
                pass
    assert "throttlingException" in str(e.value)
    # A frame whose checksum fails: nothing of it is forwarded, the stream ends with an error.
    with pytest.raises(anthropic.APIStatusError) as e:
        with ant(cloud).messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG,
                                        extra_headers={"x-mock-bedrock-corrupt-after": "3"}) as s:
            text = ""
            for t in s.text_stream:
                text += t
    assert "checksum" in str(e.value)
    # The same on an OpenAI client (translated): its own error shape.
    with pytest.raises(openai.APIError) as e:
        for _ in oai(cloud).chat.completions.create(model="claude-haiku-4-5", messages=MSG, stream=True,
                                                    extra_headers={"x-mock-bedrock-corrupt-after": "3"}):
            pass
    assert "checksum" in str(e.value)
    # A validation error before the stream: Anthropic's error type, Bedrock's exception name and message.
    with pytest.raises(anthropic.BadRequestError) as e:
        ant(cloud).messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MSG,
                                   extra_headers={"x-mock-status": "400"})
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert e.value.body["error"]["message"].startswith("ValidationException: ")


def test_bedrock_fails_over_to_vertex_before_the_first_byte(cloud):
    tag = f"failover-{uuid.uuid4().hex}"
    raw = ant(cloud).messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=MSG,
        extra_headers={"x-mock-tag": tag, "x-mock-fail-times": "1", "x-mock-status": "503"})
    assert raw.headers["x-weir-upstream"] == "vertex"
    rec = cloud.record(raw.headers["x-request-id"])
    assert rec["attempt_outcomes"].startswith("bedrock:server_error") and "vertex:ok" in rec["attempt_outcomes"]


def test_azure_content_filter_shapes(cloud):
    # A stream that opens with Azure's empty-choices prompt-filter chunk: both SDKs get the whole answer.
    chunks = list(oai(cloud).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                                     extra_headers={"x-mock-azure-filter": "1"}))
    assert chunks[0].choices == []
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Hello from")
    with ant(cloud).messages.stream(model="gpt-4o-mini", max_tokens=64, messages=MSG,
                                    extra_headers={"x-mock-azure-filter": "1"}) as s:
        assert "".join(s.text_stream).startswith("Hello from the Weir mock")
    # A refused prompt: Azure's 400 content_filter, as the OpenAI SDK raises it.
    with pytest.raises(openai.BadRequestError) as e:
        oai(cloud).chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                           extra_headers={"x-mock-azure-content-filter": "1"})
    assert e.value.code == "content_filter"


def test_a_revoked_vertex_token_is_replaced_within_the_request(cloud):
    ant(cloud).messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=MSG)
    before = len(http_json(cloud.mock + "/_mock/raw?tag=_token"))
    req = urllib.request.Request(cloud.mock + "/_mock/revoke-tokens", data=b"", method="POST")
    assert json.loads(urllib.request.urlopen(req, timeout=5).read())["revoked"] >= 1
    raw = ant(cloud).messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=16, messages=MSG)
    assert raw.headers["x-weir-upstream"] == "vertex"
    rec = cloud.record(raw.headers["x-request-id"])
    assert rec["status"] == 200
    assert len(http_json(cloud.mock + "/_mock/raw?tag=_token")) == min(before + 1, 10), "one new token was fetched"


# ---- oracles ----

def test_sigv4_signature_matches_botocore(cloud):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    tag = f"sigv4-{uuid.uuid4().hex}"
    for stream in (False, True):
        with ant(cloud).messages.with_streaming_response.create(
                model="claude-haiku-4-5", max_tokens=16, messages=MSG, stream=stream,
                extra_headers={"x-mock-tag": tag, "anthropic-beta": "a-beta-2025-01-01"}) as r:
            assert r.status_code == 200
            r.read()
    env = makefile_demo_env()
    creds = Credentials(env["WEIR_DEMO_AWS_ACCESS_KEY_ID"], env["WEIR_DEMO_AWS_SECRET_ACCESS_KEY"])
    seen = http_json(f"{cloud.mock}/_mock/raw?tag={tag}")
    assert len(seen) == 2
    for rec in seen:
        headers = dict(rec["headers"])
        body = base64.b64decode(rec["body_b64"])
        assert rec["path"] in ("/model/anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke",
                               "/model/anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke-with-response-stream")
        sent = json.loads(body)
        assert "model" not in sent and "stream" not in sent
        assert sent["anthropic_version"] == "bedrock-2023-05-31" and sent["anthropic_beta"] == ["a-beta-2025-01-01"]
        auth = headers["authorization"]
        signed = re.search(r"SignedHeaders=([^,]+)", auth).group(1).split(";")
        assert "x-mock-tag" not in signed and "traceparent" not in signed and "anthropic-beta" not in signed
        req = AWSRequest(method="POST", url=cloud.mock + rec["path"], data=body,
                         headers={k: headers[k] for k in signed})
        req.context["timestamp"] = headers["x-amz-date"]
        signer = SigV4Auth(creds, "bedrock", "us-east-1")
        canonical = signer.canonical_request(req)
        signature = signer.signature(signer.string_to_sign(req, canonical), req)
        assert auth.endswith(f"Signature={signature}"), (auth, canonical)


def test_mock_accepts_botocore_signatures_and_botocore_decodes_its_frames(cloud):
    """botocore signs a request to the mock's Bedrock route (so the mock's check is AWS's, not ours) and decodes the
    event-stream answer the gateway also decodes."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.eventstream import EventStreamBuffer

    env = makefile_demo_env()
    creds = Credentials(env["WEIR_DEMO_AWS_ACCESS_KEY_ID"], env["WEIR_DEMO_AWS_SECRET_ACCESS_KEY"])
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 32, "messages": MSG}).encode()
    url = f"{cloud.mock}/model/anthropic.claude-haiku-4-5-20251001-v1:0/invoke-with-response-stream"
    req = AWSRequest(method="POST", url=url, data=body, headers={"content-type": "application/json",
                                                                 "accept": "application/vnd.amazon.eventstream"})
    SigV4Auth(creds, "bedrock", "us-east-1").add_auth(req)
    prepared = req.prepare()
    r = urllib.request.urlopen(urllib.request.Request(prepared.url, data=body, headers=dict(prepared.headers),
                                                      method="POST"), timeout=10)
    assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
    buf = EventStreamBuffer()
    buf.add_data(r.read())
    types = []
    for msg in buf:
        assert msg.headers[":message-type"] == "event" and msg.headers[":event-type"] == "chunk"
        event = json.loads(base64.b64decode(json.loads(msg.payload)["bytes"]))
        types.append(event["type"])
    assert types[0] == "message_start" and types[-1] == "message_stop" and "content_block_delta" in types
    assert "amazon-bedrock-invocationMetrics" in event
    # A wrong secret is refused in AWS's shape.
    bad = AWSRequest(method="POST", url=url, data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(env["WEIR_DEMO_AWS_ACCESS_KEY_ID"], "wrong"), "bedrock", "us-east-1").add_auth(bad)
    p = bad.prepare()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(p.url, data=body, headers=dict(p.headers), method="POST"))
    assert e.value.code == 403 and e.value.headers["x-amzn-errortype"].startswith("InvalidSignatureException")


def test_jwt_assertion_verifies_with_google_auth(cloud):
    from cryptography.hazmat.primitives import serialization
    from google.auth import jwt

    ant(cloud).messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=MSG)
    assertion = http_json(cloud.mock + "/_mock/raw?tag=_token")[-1]["assertion"]
    key = serialization.load_pem_private_key(cloud.sa["private_key"].encode(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    claims = jwt.decode(assertion, certs=public, audience=cloud.token_uri)
    assert claims["iss"] == cloud.sa["client_email"] == claims["sub"]
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert claims["exp"] - claims["iat"] == 3600
    header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
    assert header == {"alg": "RS256", "typ": "JWT", "kid": cloud.sa["private_key_id"]}


# ---- credentials that do not work ----

def test_bad_credentials_are_clear_errors_without_secrets(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    c = Cloud(tmp_path, sa_edit=lambda sa: {**sa, "private_key": other},
              env={"WEIR_DEMO_AWS_SECRET_ACCESS_KEY": "wrong-secret-canary-1234"})
    try:
        # Vertex: the token endpoint refuses the assertion → 503 in the client's shape, naming the problem.
        with pytest.raises(anthropic.APIStatusError) as e:
            ant(c).messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=MSG)
        assert e.value.status_code == 503
        msg = e.value.body["error"]["message"]
        assert "upstream `vertex`" in msg and "refused the credentials" in msg and "Invalid JWT Signature" in msg, msg
        with pytest.raises(openai.APIStatusError) as e:
            oai(c).chat.completions.create(model="claude-sonnet-4-5", messages=MSG)
        assert e.value.status_code == 503 and e.value.code == "upstream_credentials_unavailable"
        # Bedrock: AWS refuses the signature → the gateway's credentials are named, with AWS's reason.
        with pytest.raises(anthropic.APIStatusError) as e:
            ant(c).messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MSG)
        assert e.value.status_code == 502
        msg = e.value.body["error"]["message"]
        assert "upstream `bedrock` rejected the gateway's credentials" in msg and "signature" in msg, msg
        log = c.log.read_text()
        assert "wrong-secret-canary-1234" not in log and "PRIVATE KEY" not in log
    finally:
        c.stop()


def test_missing_credentials_stop_the_start_naming_them(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f"""
listen = "127.0.0.1:{free_port()}"
[[upstreams]]
id = "br"
kind = "bedrock"
region = "eu-west-1"
access_key_env = "WEIR_TEST_NO_SUCH_VAR_A"
secret_key_env = "WEIR_TEST_NO_SUCH_VAR_B"
models = ["m"]
""")
    r = subprocess.run([str(WEIR), "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "WEIR_TEST_NO_SUCH_VAR_A" in r.stderr, r.stderr
    bad = config.read_text().replace('region = "eu-west-1"', 'region = "eu west 1"')
    config.write_text(bad)
    r = subprocess.run([str(WEIR), "check-config", str(config)], capture_output=True, text=True)
    assert r.returncode != 0 and "upstreams[0].region" in r.stderr, r.stderr
    config.write_text(bad.replace('region = "eu west 1"', 'region = "eu-west-1"\nproject = "p"'))
    r = subprocess.run([str(WEIR), "check-config", str(config)], capture_output=True, text=True)
    assert r.returncode != 0 and "not a setting of a `bedrock` upstream" in r.stderr, r.stderr


# ---- Bedrock and Vertex spoken to clients ----

BEDROCK_ID = "anthropic.claude-haiku-4-5-20251001-v1:0"


def bedrock_client(c, key=DEMO_KEY):
    return anthropic.AnthropicBedrock(api_key=key, aws_region="us-east-1", base_url=c.url, max_retries=0, timeout=20)


def vertex_client(c, key=DEMO_KEY):
    return anthropic.AnthropicVertex(access_token=key, region="us-east5", project_id="weir-demo",
                                     base_url=c.url + "/v1", max_retries=0, timeout=20)


def test_anthropic_bedrock_and_vertex_clients_use_weir(cloud):
    """The SDK's Bedrock and Vertex clients, with a Weir key, through Weir's Bedrock and Vertex routes: whole,
    streamed (Bedrock's event-stream encoded by Weir, decoded by the SDK with botocore), tools, any upstream behind
    them (the Azure model, translated), and the clients' own error shapes."""
    for client, model in [(bedrock_client(cloud), BEDROCK_ID), (vertex_client(cloud), "claude-sonnet-4-5@20250929"),
                          (bedrock_client(cloud), "gpt-4o-mini"), (vertex_client(cloud), "claude-haiku-4-5")]:
        raw = client.messages.with_raw_response.create(model=model, max_tokens=64, messages=MSG,
                                                       extra_headers={"anthropic-beta": "a-beta-2025-01-01"})
        m = raw.parse()
        assert m.content[0].text.startswith("Hello from the Weir mock") and m.usage.output_tokens == 8, (model, m)
        with client.messages.stream(model=model, max_tokens=64, messages=MSG) as s:
            assert "".join(s.text_stream).startswith("Hello from the Weir mock"), model
            assert s.get_final_message().usage.output_tokens == 8
        with client.messages.stream(model=model, max_tokens=256, messages=MSG, tools=[WEATHER],
                                    tool_choice={"type": "tool", "name": "get_weather"}) as s:
            final = s.get_final_message()
        assert [b.name for b in final.content if b.type == "tool_use"] == ["get_weather"], (model, final)
    raw = bedrock_client(cloud).messages.with_raw_response.create(model=BEDROCK_ID, max_tokens=64, messages=MSG)
    assert raw.headers["x-amzn-bedrock-output-token-count"] == "8"

    with pytest.raises(anthropic.AuthenticationError) as e:
        bedrock_client(cloud, key="sk-not-a-weir-key").messages.create(model=BEDROCK_ID, max_tokens=16, messages=MSG)
    assert e.value.response.headers["x-amzn-errortype"] == "AccessDeniedException"
    assert "gateway does not know it" in e.value.body["message"]
    with pytest.raises(anthropic.AuthenticationError):
        vertex_client(cloud, key="sk-not-a-weir-key").messages.create(model="claude-haiku-4-5", max_tokens=16,
                                                                      messages=MSG)
    with pytest.raises(anthropic.NotFoundError) as e:
        bedrock_client(cloud).messages.create(model="no-such-model", max_tokens=16, messages=MSG)
    assert e.value.response.headers["x-amzn-errortype"] == "ResourceNotFoundException"
    # A failure mid-stream reaches the Bedrock client as an exception frame, which the SDK raises.
    with pytest.raises(anthropic.APIStatusError) as e:
        with bedrock_client(cloud).messages.stream(model=BEDROCK_ID, max_tokens=64, messages=MSG,
                                                   extra_headers={"x-mock-bedrock-corrupt-after": "3"}) as s:
            for _ in s.text_stream:
                pass
    assert "checksum" in str(e.value)


def test_weirs_event_stream_decodes_with_botocore(cloud):
    """Weir's own event-stream encoding (its Bedrock route), read by botocore's parser with both CRCs checked."""
    from botocore.eventstream import EventStreamBuffer

    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 32, "messages": MSG}).encode()
    req = urllib.request.Request(f"{cloud.url}/model/{BEDROCK_ID}/invoke-with-response-stream", data=body,
                                 headers={"authorization": f"Bearer {DEMO_KEY}", "content-type": "application/json"})
    r = urllib.request.urlopen(req, timeout=10)
    assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
    buf = EventStreamBuffer()
    buf.add_data(r.read())
    events = [json.loads(base64.b64decode(json.loads(m.payload)["bytes"])) for m in buf]
    assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
    assert events[-1]["type"] == "message_stop"
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 8


def test_a_claude_code_shaped_request_through_bedrock_and_vertex_routes(cloud):
    """What Claude Code sends through its Bedrock and Vertex modes: system blocks with cache_control, metadata,
    several tools, an anthropic-beta header, streamed; the SDK's clients carry it as Claude Code does."""
    tools = [WEATHER, {"name": "Read", "description": "Read a file",
                       "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}},
                                        "required": ["file_path"]}}]
    kwargs = dict(
        max_tokens=1024,
        system=[{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "read README.md",
                                                "cache_control": {"type": "ephemeral"}}]}],
        tools=tools, tool_choice={"type": "tool", "name": "Read"}, metadata={"user_id": "user_abc_session_1"},
        extra_headers={"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"},
    )
    for client, model in [(bedrock_client(cloud), BEDROCK_ID), (vertex_client(cloud), "claude-haiku-4-5@20251001")]:
        with client.messages.stream(model=model, **kwargs) as s:
            final = s.get_final_message()
        call = [b for b in final.content if b.type == "tool_use"]
        assert call and call[0].name == "Read" and isinstance(call[0].input["file_path"], str), (model, final)
        assert final.stop_reason == "tool_use" and final.usage.input_tokens > 0
