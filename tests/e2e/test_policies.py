"""The first-party policy plugins (auth, router, redact, cost), composed the way `examples/weir.toml` composes them,
driven through the official SDKs against the real binary and the mock upstream."""

import concurrent.futures
import hashlib
import json
import re
import time
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from conftest import ADMIN_TOKEN, GUESTS, Gateway, auth_plugin, admin_kv, anthropic_client, openai_client


KEYS = {  # virtual key -> (id, team, extra)
    "sk-weir-demo": ("demo", "platform", ""),
    "sk-weir-research": ("research-1", "research", 'models = ["fast", "gpt-4o-mini"]'),
    "sk-weir-expired": ("old", "platform", 'expires = "2020-01-01"'),
    "sk-weir-revoked": ("gone", "platform", "revoked = true"),
    "sk-weir-budget": ("budget", "finance", ""),
}

# Prices in USD per million tokens (round numbers keep the expected costs exact).
PRICE_IN, PRICE_OUT = 10.0, 20.0
BUDGET_USD = 0.002


def sha(key):
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def key_entries():
    rows = []
    for key, (kid, team, extra) in KEYS.items():
        rows.append(f'{{ id = "{kid}", hash = "{sha(key)}", team = "{team}"' + (f", {extra}" if extra else "") + " }")
    return ",\n  ".join(rows)


@pytest.fixture(scope="module")
def gw4(session_tmp, mock):
    tail = f"""
[[upstreams]]
id = "mock-openai-b"
kind = "openai"
base_url = "http://127.0.0.1:{mock.port}/v1"
api_key_env = "WEIR_TEST_UPSTREAM_KEY"

[admin]
token_env = "WEIR_TEST_ADMIN_TOKEN"

{auth_plugin(key_entries())}
[[plugins]]
name = "router"
order = 20
file = "{GUESTS / 'router.wasm'}"
capabilities = ["config", "trace"]
[[plugins.config.rules]]
name = "research-fast"
model = "fast"
team = "research"
targets = [{{ upstream = "mock-openai", model = "gpt-4o" }}]
[[plugins.config.rules]]
name = "split"
model = "split"
targets = [{{ upstream = "mock-openai", model = "gpt-4o-mini", weight = 3 }}, {{ upstream = "mock-openai-b", model = "gpt-4o-mini", weight = 1 }}]
[[plugins.config.rules]]
name = "beta"
model = "fast"
headers = {{ "x-tier" = "beta" }}
targets = [{{ upstream = "mock-openai-b", model = "gpt-4o" }}]
[[plugins.config.rules]]
name = "fast"
model = "fast"
targets = [{{ upstream = "dead-openai", model = "gpt-4o-mini" }}, {{ upstream = "dead-anthropic", model = "claude-haiku-4-5" }}]
fallbacks = [{{ upstream = "mock-openai", model = "gpt-4o-mini" }}, {{ upstream = "mock-anthropic", model = "claude-haiku-4-5" }}]

[[plugins]]
name = "redact"
order = 30
file = "{GUESTS / 'redact.wasm'}"
capabilities = ["config", "trace"]
config = {{ modes = {{ phone = "hash", secret = "block" }} }}

[[plugins]]
name = "cost"
order = 40
file = "{GUESTS / 'cost.wasm'}"
capabilities = ["log", "config", "kv", "trace", "clock"]
[plugins.config]
default_max_tokens = 64
budgets = [{{ key = "budget", usd = {BUDGET_USD}, period = "day" }}]
[plugins.config.prices]
"gpt-4o-mini" = {{ input = {PRICE_IN}, output = {PRICE_OUT} }}
"gpt-4o" = {{ input = {PRICE_IN * 2}, output = {PRICE_OUT * 2} }}
"claude-*" = {{ input = {PRICE_IN}, output = {PRICE_OUT}, cached_input = 1.0 }}
"""
    g = Gateway(session_tmp, mock, name="policies", tail=tail, env={"WEIR_TEST_ADMIN_TOKEN": ADMIN_TOKEN})
    yield g
    g.stop()


def oai(g, key="sk-weir-demo"):
    return openai_client(g, api_key=key)


def ant(g, key="sk-weir-demo"):
    return anthropic_client(g, api_key=key)


MSG = [{"role": "user", "content": "Say hello"}]



def test_chain_runs_in_the_configured_order(gw4):
    plugins = gw4.admin()["plugins"]
    assert [p["name"] for p in plugins] == ["auth", "router", "redact", "cost"]
    assert all(p["preinitialized"] and p["preinit_error"] is None for p in plugins), plugins


# ---- auth ----

def test_virtual_key_sets_principal_and_never_leaves_the_gateway(gw4, mock):
    raw = oai(gw4).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, extra_headers={"x-mock-tag": "auth-ok"})
    assert raw.parse().choices[0].message.content
    rec = gw4.record(raw.headers["x-request-id"])
    assert rec["principal"] == "demo"
    seen = mock.wait_requests("auth-ok", lambda r: len(r) == 1)[0]
    assert seen["auth"] == "ok", "the upstream got its own key"
    assert not any("sk-weir-demo" in v for _, v in seen["headers"]), "the virtual key reached the upstream"
    with ant(gw4).messages.stream(model="claude-haiku-4-5", max_tokens=32, messages=MSG) as s:
        assert s.get_final_text()
    assert "sk-weir-demo" not in gw4.log_text()


def test_missing_and_unknown_keys_are_401_in_each_shape(gw4):
    req = urllib.request.Request(gw4.url + "/v1/chat/completions", method="POST",
                                 data=json.dumps({"model": "gpt-4o-mini", "messages": MSG}).encode(),
                                 headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401
    body = json.loads(e.value.read())
    assert body["error"]["type"] == "authentication_error" and "Authorization: Bearer" in body["error"]["message"]
    with pytest.raises(openai.AuthenticationError) as e:
        oai(gw4, "sk-not-a-key").chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert "invalid API key" in e.value.message and "sk-not-a-key" not in e.value.message
    with pytest.raises(anthropic.AuthenticationError) as e:
        ant(gw4, "sk-not-a-key").messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MSG)
    assert e.value.body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("key,model,words", [
    ("sk-weir-expired", "gpt-4o-mini", "expired"),
    ("sk-weir-revoked", "gpt-4o-mini", "revoked"),
    ("sk-weir-research", "gpt-4o", "may not use model `gpt-4o`"),
])
def test_expired_revoked_and_disallowed_model_are_403(gw4, key, model, words):
    with pytest.raises(openai.PermissionDeniedError) as e:
        oai(gw4, key).chat.completions.create(model=model, messages=MSG)
    assert words in e.value.message
    with pytest.raises(anthropic.PermissionDeniedError):
        ant(gw4, key).messages.create(model="claude-haiku-4-5" if "model" not in words else model,
                                      max_tokens=16, messages=MSG)


def test_keys_issued_and_revoked_at_run_time_through_the_admin_api(gw4):
    new_key = "sk-weir-issued-at-runtime"
    hexd = sha(new_key).split(":")[1]
    assert admin_kv(gw4, "auth", f"keys/{hexd}", "PUT", b"{}", token=None)[0] == 401
    assert admin_kv(gw4, "auth", f"keys/{hexd}", "PUT", b"{}", token="wrong")[0] == 401
    with pytest.raises(openai.AuthenticationError):
        oai(gw4, new_key).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    record = json.dumps({"id": "issued", "team": "platform", "models": ["gpt-4o-mini"]}).encode()
    assert admin_kv(gw4, "auth", f"keys/{hexd}", "PUT", record)[0] == 204
    raw = oai(gw4, new_key).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    assert gw4.record(raw.headers["x-request-id"])["principal"] == "issued"
    assert admin_kv(gw4, "auth", "revoked/issued", "PUT", b"1")[0] == 204
    with pytest.raises(openai.PermissionDeniedError):
        oai(gw4, new_key).chat.completions.create(model="gpt-4o-mini", messages=MSG)


def test_models_list_shows_what_the_key_may_use(gw4):
    """`GET /v1/models` goes through auth's decision: each key sees the models (aliases included) it may use, a
    missing or unknown key is refused as for any request, and listing spends nothing."""
    every = {m.id for m in oai(gw4).models.list()}
    assert {"gpt-4o-mini", "claude-haiku-4-5", "claude-failover"} <= every, "the config's models and routes"
    assert {"fast", "split"} <= every, "the router plugin's aliases"
    research = {m.id for m in oai(gw4, "sk-weir-research").models.list()}
    assert research == {"gpt-4o-mini", "fast"}, "exactly what the key may use"
    assert {m.id for m in ant(gw4, "sk-weir-research").models.list()} == research
    assert [m.id for m in oai(gw4, "sk-weir-revoked").models.list()] == []
    with pytest.raises(openai.AuthenticationError):
        oai(gw4, "sk-not-a-key").models.list()
    with pytest.raises(anthropic.AuthenticationError):
        ant(gw4, "sk-not-a-key").models.list()
    raw = oai(gw4).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG)
    gw4.record(raw.headers["x-request-id"])  # logged after on-complete: the spend is settled
    day = time.strftime("%Y-%m-%d", time.gmtime())
    before = admin_kv(gw4, "cost", f"spend/key/demo/{day}")
    assert before[0] == 200 and int(before[1]) > 0, before
    for _ in range(3):
        assert oai(gw4).models.list().data
    assert admin_kv(gw4, "cost", f"spend/key/demo/{day}") == before, "a listing reserved or spent budget"


# ---- router ----

def test_alias_fails_over_to_fallbacks_in_both_families(gw4):
    raw = oai(gw4).chat.completions.with_raw_response.create(model="fast", messages=MSG)
    assert raw.headers["x-weir-upstream"] == "mock-openai"
    assert raw.parse().model == "gpt-4o-mini", "the candidate's model was sent"
    rec = gw4.record(raw.headers["x-request-id"])
    assert rec["attempts"] == 2 and rec["upstream_model"] == "gpt-4o-mini"
    assert "plugin_attributes" in rec and "rule=fast" in rec["plugin_attributes"]
    # The same alias on the Anthropic API: the OpenAI candidates are skipped, the Anthropic ones run.
    raw = ant(gw4).messages.with_raw_response.create(model="fast", max_tokens=16, messages=MSG)
    assert raw.headers["x-weir-upstream"] == "mock-anthropic"
    assert raw.parse().model == "claude-haiku-4-5"


def test_rules_by_team_and_by_header(gw4):
    r = oai(gw4, "sk-weir-research").chat.completions.with_raw_response.create(model="fast", messages=MSG)
    assert r.parse().model == "gpt-4o" and r.headers["x-weir-upstream"] == "mock-openai"
    r = oai(gw4).chat.completions.with_raw_response.create(model="fast", messages=MSG, extra_headers={"x-tier": "beta"})
    assert r.parse().model == "gpt-4o" and r.headers["x-weir-upstream"] == "mock-openai-b"


def test_weighted_split(gw4):
    client = oai(gw4)
    hits = {"mock-openai": 0, "mock-openai-b": 0}
    for _ in range(200):
        r = client.chat.completions.with_raw_response.create(model="split", messages=MSG, max_tokens=4)
        hits[r.headers["x-weir-upstream"]] += 1
    # 3:1 → 150 expected; ±35 is more than 5 standard deviations.
    assert 115 <= hits["mock-openai"] <= 185, hits


# ---- redact ----

EMAIL, CARD, PHONE = "jane.doe@example.com", "4111 1111 1111 1111", "+1 415 555 0132"


def test_request_text_is_redacted_in_both_families(gw4, mock):
    oai(gw4).chat.completions.create(
        model="gpt-4o-mini", extra_headers={"x-mock-tag": "redact-req-oai"},
        messages=[{"role": "system", "content": f"Reply to {EMAIL}"},
                  {"role": "user", "content": [{"type": "text", "text": f"My card is {CARD}, call {PHONE}"}]}])
    body = json.dumps(mock.wait_requests("redact-req-oai", lambda r: len(r) == 1)[0]["body"])
    assert EMAIL not in body and CARD not in body and PHONE not in body
    assert "[EMAIL]" in body and "[CREDIT_CARD]" in body and re.search(r"\[PHONE:[0-9a-f]{8}\]", body)
    ant(gw4).messages.create(
        model="claude-haiku-4-5", max_tokens=16, extra_headers={"x-mock-tag": "redact-req-ant"},
        system=[{"type": "text", "text": f"Reply to {EMAIL}"}],
        messages=[{"role": "user", "content": [{"type": "text", "text": f"server 10.1.2.3, card {CARD}"}]}])
    body = json.dumps(mock.wait_requests("redact-req-ant", lambda r: len(r) == 1)[0]["body"])
    assert EMAIL not in body and CARD not in body and "10.1.2.3" not in body and "[IPV4]" in body


def test_secret_in_request_is_blocked(gw4):
    with pytest.raises(openai.BadRequestError) as e:
        oai(gw4).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "use sk-proj-0123456789abcdefghijklmnop"}])
    assert "API key or secret" in e.value.message
    with pytest.raises(anthropic.BadRequestError):
        ant(gw4).messages.create(model="claude-haiku-4-5", max_tokens=16,
                                 messages=[{"role": "user", "content": "AKIAIOSFODNN7EXAMPLE"}])


# An answer with PII split across events: the address over three events, the card over four.
DELTAS = ["Write to jane", ".doe@exam", "ple.com or pay with 4111 11", "11 1111", " 1111", ". Call +1 415", " 555 0132", " today."]
WANT = re.compile(r"^Write to \[EMAIL\] or pay with \[CREDIT_CARD\]\. Call \[PHONE:[0-9a-f]{8}\] today\.$")
PII = ["jane", "doe@", "example.com", "4111", "415 555"]


def deltas_header(deltas=DELTAS):
    return {"x-mock-deltas": json.dumps(deltas)}


@pytest.mark.parametrize("stream", [False, True])
def test_answer_is_redacted_across_event_boundaries_openai_chat(gw4, stream):
    c = oai(gw4)
    if not stream:
        text = c.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers=deltas_header()).choices[0].message.content
        assert WANT.match(text), text
        return
    pieces = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True, extra_headers=deltas_header()) if ch.choices]
    text = "".join(pieces)
    assert WANT.match(text), text
    assert not any(p in piece for piece in pieces for p in PII)
    assert len([p for p in pieces if p]) > 1, "still streamed, not buffered to the end"


@pytest.mark.parametrize("stream", [False, True])
def test_answer_is_redacted_anthropic(gw4, stream):
    c = ant(gw4)
    if not stream:
        msg = c.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MSG, extra_headers=deltas_header())
        assert WANT.match(msg.content[0].text), msg.content[0].text
        return
    with c.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG, extra_headers=deltas_header()) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert WANT.match("".join(pieces)), pieces
    assert WANT.match(final.content[0].text)
    assert not any(p in piece for piece in pieces for p in PII)


@pytest.mark.parametrize("stream", [False, True])
def test_answer_is_redacted_responses_api(gw4, stream):
    c = oai(gw4)
    if not stream:
        r = c.responses.create(model="gpt-4o-mini", input="hi", extra_headers=deltas_header())
        assert WANT.match(r.output_text), r.output_text
        return
    pieces, final = [], None
    with c.responses.stream(model="gpt-4o-mini", input="hi", extra_headers=deltas_header()) as s:
        for ev in s:
            if ev.type == "response.output_text.delta":
                pieces.append(ev.delta)
            elif ev.type == "response.output_text.done":
                assert WANT.match(ev.text), ev.text
        final = s.get_final_response()
    assert WANT.match("".join(pieces)), pieces
    assert WANT.match(final.output_text), "the completed response repeats the text: redacted too"
    assert not any(p in piece for piece in pieces for p in PII)


def test_hash_is_stable_within_a_request(gw4):
    deltas = ["call +1 415 555 0132", " or +1 415", " 555 0132 again"]
    text = oai(gw4).chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers=deltas_header(deltas)).choices[0].message.content
    tags = re.findall(r"\[PHONE:[0-9a-f]{8}\]", text)
    assert len(tags) == 2 and tags[0] == tags[1], text


@pytest.mark.parametrize("api", ["chat", "messages"])
def test_secret_in_streamed_answer_aborts_before_any_of_it_is_sent(gw4, api):
    deltas = ["Here is a key: sk-proj-", "0123456789", "abcdefghijklmnop", " enjoy"]
    pieces = []
    if api == "chat":
        with pytest.raises(openai.APIError) as e:
            for ch in oai(gw4).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                                       extra_headers=deltas_header(deltas)):
                pieces.extend(c.delta.content or "" for c in ch.choices)
    else:
        with pytest.raises(anthropic.APIStatusError) as e:
            with ant(gw4).messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSG,
                                          extra_headers=deltas_header(deltas)) as s:
                pieces.extend(s.text_stream)
    assert "API key or secret" in str(e.value)
    assert "sk-" not in "".join(pieces) and "0123456789" not in "".join(pieces)


# ---- cost ----

def cost_nano(usage_in, usage_out, price_in=PRICE_IN, price_out=PRICE_OUT):
    return round(usage_in * (price_in * 1e9 / 1e6) + usage_out * (price_out * 1e9 / 1e6))


def test_cost_is_on_the_request_line_and_in_the_spend(gw4):
    raw = oai(gw4).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MSG, max_tokens=16)
    u = raw.parse().usage
    want = cost_nano(u.prompt_tokens, u.completion_tokens)
    rec = gw4.record(raw.headers["x-request-id"])
    assert f"usd={want / 1e9:.6f}" in rec["plugin_attributes"], rec["plugin_attributes"]
    status, body = admin_kv(gw4, "cost", "spend/team/platform/" + time.strftime("%Y-%m", time.gmtime()))
    assert status == 200 and int(body) >= want


def test_cost_of_a_translated_request_uses_the_answers_usage(gw4):
    """An OpenAI client served by the Anthropic upstream: the cost plugin prices the model that answered with the
    usage the client saw (cached input at its own price: Anthropic reports it apart, the tap folds it in)."""
    raw = oai(gw4).chat.completions.with_raw_response.create(
        model="claude-haiku-4-5", messages=MSG, max_tokens=16, extra_headers={"x-mock-cached-tokens": "4"})
    assert raw.headers["x-weir-upstream"] == "mock-anthropic"
    u = raw.parse().usage
    assert u.prompt_tokens_details.cached_tokens == 4
    uncached = u.prompt_tokens - 4
    want = round(uncached * (PRICE_IN * 1e9 / 1e6) + 4 * (1.0 * 1e9 / 1e6) + u.completion_tokens * (PRICE_OUT * 1e9 / 1e6))
    rec = gw4.record(raw.headers["x-request-id"])
    assert rec["provider"] == "anthropic" and rec["cached_tokens"] == 4
    assert f"usd={want / 1e9:.6f}" in rec["plugin_attributes"], rec["plugin_attributes"]


def test_concurrent_requests_overspend_a_budget_by_at_most_one_reservation(gw4):
    client = oai(gw4, "sk-weir-budget")

    def one(_):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MSG, max_tokens=16, extra_headers={"x-mock-header-delay-ms": "20"})
            return raw.headers["x-request-id"], raw.parse().usage
        except openai.RateLimitError as e:
            assert "budget exceeded: key `budget`" in e.message
            return None

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(60)))
    refused_in_burst = sum(1 for r in results if r is None)
    # Reservations exceed actual costs, so once they settle there may be budget left: spend it, one at a time,
    # until the gateway refuses.
    for _ in range(50):
        results.append(one(None))
        if results[-1] is None:
            break
    assert results[-1] is None, "the budget was never enforced"
    ok = [r for r in results if r]
    spent = sum(cost_nano(u.prompt_tokens, u.completion_tokens) for _, u in ok)
    reservations = []
    for rid, _ in ok:
        attrs = gw4.record(rid)["plugin_attributes"]
        reservations.append(float(re.search(r"reserved_usd=([0-9.]+)", attrs).group(1)))
    one_reservation = max(reservations) * 1e9
    assert refused_in_burst > 0, "24 concurrent requests against a small budget: some must be refused"
    assert BUDGET_USD * 1e9 - one_reservation <= spent <= BUDGET_USD * 1e9 + one_reservation, (spent, len(ok))
    # What the plugin settled in kv is exactly the actual cost of what was served.
    day = time.strftime("%Y-%m-%d", time.gmtime())
    status, body = admin_kv(gw4, "cost", f"spend/key/budget/{day}")
    assert status == 200 and int(body) == spent, (int(body), spent)
    print(f"budget ${BUDGET_USD}: {len(ok)} served, {len(results) - len(ok)} refused, spent ${spent / 1e9:.6f}, "
          f"one reservation ${one_reservation / 1e9:.6f}")


def test_admin_kv_is_off_without_a_token_configured(gw):
    status, body = admin_kv(gw, "auth", "keys/x", "PUT", b"{}")
    assert status == 403 and b"token_env" in body
