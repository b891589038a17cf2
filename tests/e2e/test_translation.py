"""Translation between the API families (host/src/dialect/translate): the official OpenAI SDK served by an
Anthropic upstream and the Anthropic SDK by an OpenAI upstream, whole and streamed, tool calls included, and routes
that fail over from one family to the other. The mock records what the upstream received (`x-mock-tag`), so each
test checks both sides: the client's answer and the upstream's request."""

import json
import urllib.request
import uuid

import anthropic
import openai
import pytest

from conftest import Gateway, anthropic_client, expected_text, openai_client

TAIL = """
[[routes]]
model = "cross-openai-first"
candidates = [{ upstream = "dead-openai", model = "gpt-4o-mini" }, { upstream = "mock-anthropic", model = "claude-haiku-4-5" }]

[[routes]]
model = "cross-anthropic-first"
candidates = [{ upstream = "dead-anthropic", model = "claude-haiku-4-5" }, { upstream = "mock-openai", model = "gpt-4o-mini" }]

[translation]
default_max_tokens = 1234
drop_fields = ["seed"]
"""

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1},
    },
    "required": ["city", "unit"],
}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
OA_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
AN_TOOLS = [
    {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER},
    {"name": "get_time", "input_schema": TIME},
]


@pytest.fixture(scope="module")
def tgw(session_tmp, mock):
    g = Gateway(session_tmp, mock, name="translation", tail=TAIL)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def toai(tgw):
    return openai_client(tgw)


@pytest.fixture(scope="module")
def tant(tgw):
    return anthropic_client(tgw)


def tag():
    return "tr-" + uuid.uuid4().hex[:10]


def upstream_request(mock, t):
    recs = mock.wait_requests(t, lambda r: len(r) >= 1)
    assert len(recs) == 1, recs
    return recs[0]


def valid_weather(args):
    assert set(args) >= {"city", "unit"} and isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit")


# ---- the OpenAI SDK, an Anthropic upstream ----------------------------------------------------------------------


def test_openai_sdk_whole_answer_from_anthropic(tgw, toai, mock):
    t = tag()
    raw = toai.chat.completions.with_raw_response.create(
        model="claude-haiku-4-5",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        temperature=0.5, stop=["\n\n"], user="u-42", seed=7,
        extra_headers={"x-mock-tag": t, "x-mock-cached-tokens": "3"},
    )
    c = raw.parse()
    assert raw.headers["x-weir-upstream"] == "mock-anthropic"
    assert c.choices[0].message.content == expected_text() and c.choices[0].finish_reason == "stop"
    assert c.object == "chat.completion" and c.model == "claude-haiku-4-5"
    # Usage keeps its meaning: OpenAI's prompt tokens include the cached ones Anthropic reports apart.
    assert c.usage.completion_tokens == 8 and c.usage.prompt_tokens_details.cached_tokens == 3
    assert c.usage.total_tokens == c.usage.prompt_tokens + 8
    up = upstream_request(mock, t)
    assert up["path"] == "/messages"
    assert up["body"] == {
        "model": "claude-haiku-4-5", "system": "Be brief.", "max_tokens": 1234, "temperature": 0.5,
        "stop_sequences": ["\n\n"], "metadata": {"user_id": "u-42"},
        "messages": [{"role": "user", "content": "Say hello"}],
    }, "seed is in translation.drop_fields"
    assert dict(up["headers"])["anthropic-version"] == "2023-06-01"
    rec = tgw.record(raw.headers["x-request-id"])
    assert rec["upstream"] == "mock-anthropic" and rec["finish_reason"] == "stop", "in the client's terms"
    assert rec["provider"] == "anthropic" and rec["family"] == "openai"
    metrics = urllib.request.urlopen(tgw.url + "/metrics", timeout=5).read().decode()
    assert 'weir_translated_requests_total{endpoint="chat.completions",provider="anthropic"}' in metrics
    assert rec["input_tokens"] == c.usage.prompt_tokens and rec["cached_tokens"] == 3 and rec["output_tokens"] == 8


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_sdk_stream_from_anthropic(tgw, toai, mock, include_usage):
    t = tag()
    opts = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = toai.chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "Say hello"}], stream=True,
        max_completion_tokens=50, extra_headers={"x-mock-tag": t, "x-mock-chunks": "5"}, **opts,
    )
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == expected_text(5)
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = [ch.usage for ch in chunks if ch.usage]
    if include_usage:
        assert len(usage) == 1 and usage[0].completion_tokens == 5 and usage[0].prompt_tokens > 0
        assert chunks[-1].choices == []
    else:
        assert usage == [], "the usage chunk is the client's only when it asked"
    up = upstream_request(mock, t)
    assert up["path"] == "/messages" and up["stream"] is True and up["body"]["max_tokens"] == 50
    assert "stream_options" not in up["body"]


def test_openai_sdk_streamed_parallel_tool_calls_from_anthropic(tgw, toai, mock):
    """The SDK's own stream helper accumulates the translated deltas into valid calls, finish reason `tool_calls`."""
    t = tag()
    with toai.chat.completions.stream(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "Weather and time in Paris?"}],
        tools=OA_TOOLS, tool_choice="required",
        extra_headers={"x-mock-tag": t, "x-mock-tool-calls": "2"},
    ) as s:
        events = [e.type for e in s]
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    valid_weather(json.loads(calls[0].function.arguments))
    assert set(json.loads(calls[1].function.arguments)) == {"zone"}
    assert calls[0].id.startswith("toolu_") and calls[0].id != calls[1].id
    assert "tool_calls.function.arguments.delta" in events and "tool_calls.function.arguments.done" in events
    up = upstream_request(mock, t)
    assert up["body"]["tool_choice"] == {"type": "any"}
    assert up["body"]["tools"][0] == {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER}


def test_openai_sdk_two_turn_tool_loop_through_anthropic(tgw, toai, mock):
    t1, t2 = tag(), tag()
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = toai.chat.completions.create(
        model="claude-haiku-4-5", messages=messages, tools=OA_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, parallel_tool_calls=False,
        extra_headers={"x-mock-tag": t1},
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    valid_weather(json.loads(call.function.arguments))
    assert upstream_request(mock, t1)["body"]["tool_choice"] == {
        "type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"}]
    second = toai.chat.completions.create(
        model="claude-haiku-4-5", messages=messages, tools=OA_TOOLS, stream=True, extra_headers={"x-mock-tag": t2})
    text = "".join(ch.choices[0].delta.content or "" for ch in second if ch.choices)
    assert text == expected_text()
    sent = upstream_request(mock, t2)["body"]["messages"]
    assert sent[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": call.id, "name": "get_weather", "input": json.loads(call.function.arguments)}]}
    assert sent[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees, sunny"}]}


def test_images_and_cache_control_reach_anthropic(tgw, toai, mock):
    t = tag()
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    toai.chat.completions.create(
        model="claude-haiku-4-5",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "A long shared preamble", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        ]}],
        extra_headers={"x-mock-tag": t},
    )
    content = upstream_request(mock, t)["body"]["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "A long shared preamble", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_fields_without_equivalent_are_refused_by_name(tgw, toai, tant, mock):
    t = tag()
    for extra, name in [({"frequency_penalty": 0.5}, "frequency_penalty"), ({"n": 2}, "n"),
                        ({"logit_bias": {"50256": -100}}, "logit_bias")]:
        with pytest.raises(openai.BadRequestError) as e:
            toai.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}],
                                         extra_headers={"x-mock-tag": t}, **extra)
        assert f"`{name}`" in e.value.message and "Anthropic" in e.value.message, e.value.message
        assert e.value.response.headers["x-weir-error-source"] == "client"
    with pytest.raises(anthropic.BadRequestError) as e:
        tant.messages.create(model="gpt-4o-mini", max_tokens=10, extra_body={"top_k": 5}, messages=[{"role": "user", "content": "hi"}],
                             extra_headers={"x-mock-tag": t})
    assert "`top_k`" in e.value.message and "OpenAI" in e.value.message
    assert mock.requests(t) == [], "nothing reached an upstream"


def test_upstream_errors_come_back_in_the_clients_shape(tgw, toai, tant):
    with pytest.raises(openai.BadRequestError) as e:
        toai.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}],
                                     extra_headers={"x-mock-status": "400"})
    assert e.value.body["message"] == "the mock upstream was asked to fail this request"
    assert e.value.body["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError) as e:
        tant.messages.create(model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                             extra_headers={"x-mock-status": "404"})
    assert e.value.body == {"type": "error", "error": {
        "type": "not_found_error", "message": "the mock upstream was asked to fail this request"}}


def test_a_translated_stream_cut_by_the_upstream_is_an_error_for_the_sdk(tgw, toai):
    stream = toai.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}],
                                          stream=True, extra_headers={"x-mock-reset-after": "4"})
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


# ---- the Anthropic SDK, an OpenAI upstream ----------------------------------------------------------------------


def test_anthropic_sdk_whole_answer_from_openai(tgw, tant, mock):
    t = tag()
    raw = tant.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=64, system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": "Say hello"}], stop_sequences=["END"], metadata={"user_id": "u-7"},
        extra_headers={"x-mock-tag": t, "x-mock-cached-tokens": "2"},
    )
    m = raw.parse()
    assert raw.headers["x-weir-upstream"] == "mock-openai"
    assert m.type == "message" and m.role == "assistant" and m.stop_reason == "end_turn"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == expected_text()
    # Anthropic's input_tokens exclude the cache reads OpenAI counts in prompt_tokens.
    assert m.usage.output_tokens == 8 and m.usage.cache_read_input_tokens == 2
    up = upstream_request(mock, t)
    assert up["path"] == "/chat/completions"
    assert up["body"] == {
        "model": "gpt-4o-mini", "max_completion_tokens": 64, "stop": ["END"], "user": "u-7",
        "messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                     {"role": "user", "content": "Say hello"}],
    }
    rec = tgw.record(raw.headers["x-request-id"])
    assert rec["input_tokens"] == m.usage.input_tokens + 2 and rec["cached_tokens"] == 2


def test_anthropic_sdk_stream_from_openai(tgw, tant, mock):
    t = tag()
    with tant.messages.stream(model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}],
                              extra_headers={"x-mock-tag": t, "x-mock-chunks": "6"}) as s:
        text = "".join(s.text_stream)
        m = s.get_final_message()
    assert text == expected_text(6) and m.content[0].text == text
    assert m.stop_reason == "end_turn" and m.usage.output_tokens == 6 and m.usage.input_tokens > 0
    up = upstream_request(mock, t)
    assert up["body"]["stream"] is True and up["body"]["stream_options"] == {"include_usage": True}
    assert up["include_usage"] is True


def test_anthropic_sdk_streamed_tool_use_from_openai(tgw, tant, mock):
    t = tag()
    with tant.messages.stream(model="gpt-4o-mini", max_tokens=200, tools=AN_TOOLS, tool_choice={"type": "any"},
                              messages=[{"role": "user", "content": "Weather and time in Paris?"}],
                              extra_headers={"x-mock-tag": t, "x-mock-tool-calls": "2"}) as s:
        kinds = [e.type for e in s]
        m = s.get_final_message()
    assert m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["tool_use", "tool_use"]
    assert [b.name for b in m.content] == ["get_weather", "get_time"]
    valid_weather(m.content[0].input)
    assert set(m.content[1].input) == {"zone"} and m.content[0].id.startswith("call_")
    assert "input_json" in kinds and kinds.count("content_block_stop") == 2
    up = upstream_request(mock, t)
    assert up["body"]["tool_choice"] == "required"
    assert up["body"]["tools"][1] == {"type": "function", "function": {"name": "get_time", "parameters": TIME}}


def test_anthropic_sdk_two_turn_tool_loop_through_openai(tgw, tant, mock):
    t1, t2 = tag(), tag()
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = tant.messages.create(model="gpt-4o-mini", max_tokens=200, tools=AN_TOOLS, messages=messages,
                                 tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
                                 extra_headers={"x-mock-tag": t1})
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    valid_weather(use.input)
    b1 = upstream_request(mock, t1)["body"]
    assert b1["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert b1["parallel_tool_calls"] is False
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [
                     {"type": "tool_result", "tool_use_id": use.id, "content": "18 degrees, sunny"},
                     {"type": "text", "text": "And should I take an umbrella?"}]}]
    with tant.messages.stream(model="gpt-4o-mini", max_tokens=200, tools=AN_TOOLS, messages=messages,
                              extra_headers={"x-mock-tag": t2}) as s:
        final = s.get_final_message()
    assert final.stop_reason == "end_turn" and final.content[0].text == expected_text()
    sent = upstream_request(mock, t2)["body"]["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["content"] is None
    assert sent[1]["tool_calls"] == [{"id": use.id, "type": "function", "function": {
        "name": "get_weather", "arguments": json.dumps(use.input, separators=(",", ":"))}}]
    assert sent[2] == {"role": "tool", "tool_call_id": use.id, "content": "18 degrees, sunny"}
    assert sent[3] == {"role": "user", "content": [{"type": "text", "text": "And should I take an umbrella?"}]}


# ---- Responses API → Anthropic ------------------------------------------------------------------------------------


def test_responses_api_served_by_anthropic(tgw, toai, mock):
    t = tag()
    r = toai.responses.create(model="claude-haiku-4-5", instructions="Be brief.", input="Say hello",
                              max_output_tokens=77, extra_headers={"x-mock-tag": t})
    assert r.output_text == expected_text() and r.status == "completed" and r.usage.output_tokens == 8
    body = upstream_request(mock, t)["body"]
    assert body["system"] == "Be brief." and body["max_tokens"] == 77
    with toai.responses.stream(model="claude-haiku-4-5", input=[{"role": "user", "content": "Say hello"}],
                               extra_headers={"x-mock-chunks": "4"}) as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == expected_text(4) == final.output_text and final.usage.output_tokens == 4


def test_responses_api_tool_call_through_anthropic(tgw, toai, mock):
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    with toai.responses.stream(model="claude-haiku-4-5", input="Weather in Paris?", tools=tools,
                               tool_choice="required") as s:
        final = s.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    valid_weather(json.loads(calls[0].arguments))
    # The loop's second turn: the call and its output go back as input items.
    r = toai.responses.create(model="claude-haiku-4-5", tools=tools, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 degrees"},
    ])
    assert r.output_text == expected_text()
    with pytest.raises(openai.BadRequestError) as e:
        toai.responses.create(model="claude-haiku-4-5", input="hi", previous_response_id="resp_123")
    assert "`previous_response_id`" in e.value.message


# ---- routes across families ---------------------------------------------------------------------------------------


def test_streamed_failover_from_openai_to_anthropic_and_back(tgw, toai, tant):
    raw = toai.chat.completions.with_raw_response.create(
        model="cross-openai-first", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert raw.headers["x-weir-upstream"] == "mock-anthropic"
    text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
    assert text == expected_text()
    rec = tgw.record(raw.headers["x-request-id"])
    assert rec["attempts"] == 2 and rec["attempt_outcomes"].startswith("dead-openai:")
    assert rec["upstream"] == "mock-anthropic" and rec["output_tokens"] == 8
    with tant.messages.stream(model="cross-anthropic-first", max_tokens=20,
                              messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == expected_text()
        assert s.response.headers["x-weir-upstream"] == "mock-openai"


def test_translation_can_be_turned_off(session_tmp, mock):
    g = Gateway(session_tmp, mock, name="no-translation", tail="\n[translation]\nenabled = false\n")
    try:
        with pytest.raises(openai.BadRequestError) as e:
            openai_client(g).chat.completions.create(model="claude-haiku-4-5",
                                                     messages=[{"role": "user", "content": "hi"}])
        assert "translation.enabled = false" in e.value.message
    finally:
        g.stop()


# ---- the mock's forced tool calls, natively (the reference the translated answers are held to) --------------------


def test_mock_forced_tool_calls_natively_through_each_sdk_helper(tgw, toai, tant):
    with toai.chat.completions.stream(model="gpt-4o-mini", messages=[{"role": "user", "content": "Paris?"}],
                                      tools=OA_TOOLS, tool_choice="required",
                                      extra_headers={"x-mock-tool-calls": "2"}) as s:
        c = s.get_final_completion().choices[0]
    assert c.finish_reason == "tool_calls" and [t.function.name for t in c.message.tool_calls] == ["get_weather", "get_time"]
    valid_weather(json.loads(c.message.tool_calls[0].function.arguments))
    with tant.messages.stream(model="claude-haiku-4-5", max_tokens=100, tools=AN_TOOLS,
                              tool_choice={"type": "tool", "name": "get_time"},
                              messages=[{"role": "user", "content": "Time?"}]) as s:
        m = s.get_final_message()
    assert m.stop_reason == "tool_use" and m.content[0].name == "get_time" and set(m.content[0].input) == {"zone"}
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    with toai.responses.stream(model="gpt-4o-mini", input="Weather in Paris?", tools=tools,
                               tool_choice={"type": "function", "name": "get_weather"}) as s:
        r = s.get_final_response()
    (call,) = [o for o in r.output if o.type == "function_call"]
    valid_weather(json.loads(call.arguments))
    # Without a forced choice the answer is text, as providers usually answer.
    r = toai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=OA_TOOLS)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == expected_text()
