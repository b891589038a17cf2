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

[[routes]]
model = "gpt-5-mini"
candidates = [{ upstream = "mock-openai", model = "gpt-5-mini" }]

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


# ---- structured outputs and reasoning across families --------------------------------------------------------------

CITY = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "population": {"type": "integer", "minimum": 1},
                   "capital": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "population", "capital", "tags"],
    "additionalProperties": False,
}


def valid_city(v):
    assert set(v) == {"name", "population", "capital", "tags"}, v
    assert isinstance(v["name"], str) and isinstance(v["population"], int) and v["population"] >= 1
    assert isinstance(v["capital"], bool) and all(isinstance(t, str) for t in v["tags"])


def test_openai_structured_outputs_from_anthropic_whole_and_streamed(tgw, toai, mock):
    t = tag()
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    r = toai.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "Paris?"}],
                                     response_format=fmt, extra_headers={"x-mock-tag": t})
    valid_city(json.loads(r.choices[0].message.content))
    assert upstream_request(mock, t)["body"]["output_config"] == {"format": {"type": "json_schema", "schema": CITY}}
    stream = toai.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "Paris?"}],
                                          response_format=fmt, stream=True)
    valid_city(json.loads("".join(c.choices[0].delta.content or "" for c in stream if c.choices)))
    # The Responses API's text.format, through the SDK's own parse helper.
    r = toai.responses.create(model="claude-haiku-4-5", input="Paris?",
                              text={"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}})
    valid_city(json.loads(r.output_text))
    with pytest.raises(openai.BadRequestError) as e:
        toai.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}],
                                     response_format={"type": "json_object"})
    assert "json_object" in e.value.message and "json_schema" in e.value.message


def test_anthropic_structured_outputs_from_openai_whole_and_streamed(tgw, tant, mock):
    t = tag()
    cfg = {"format": {"type": "json_schema", "schema": CITY}}
    m = tant.messages.create(model="gpt-4o-mini", max_tokens=200, messages=[{"role": "user", "content": "Paris?"}],
                             output_config=cfg, extra_headers={"x-mock-tag": t})
    valid_city(json.loads(m.content[0].text))
    rf = upstream_request(mock, t)["body"]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == CITY and rf["json_schema"]["strict"] is True
    with tant.messages.stream(model="gpt-4o-mini", max_tokens=200, messages=[{"role": "user", "content": "Paris?"}],
                              output_config=cfg) as s:
        valid_city(json.loads(s.get_final_text()))


def test_thinking_becomes_reasoning_effort_only_where_the_model_takes_it(tgw, tant, mock):
    for model, effort in [("gpt-5-mini", "low"), ("gpt-4o-mini", None)]:
        t = tag()
        m = tant.messages.create(model=model, max_tokens=4000, messages=[{"role": "user", "content": "hi"}],
                                 thinking={"type": "enabled", "budget_tokens": 2048}, extra_headers={"x-mock-tag": t})
        assert m.content[-1].text == expected_text()
        body = upstream_request(mock, t)["body"]
        assert body.get("reasoning_effort") == effort and body["max_completion_tokens"] == 4000, body
    t = tag()
    tant.messages.create(model="gpt-5-mini", max_tokens=100, messages=[{"role": "user", "content": "hi"}],
                         output_config={"effort": "high"}, thinking={"type": "adaptive"},
                         extra_headers={"x-mock-tag": t})
    assert upstream_request(mock, t)["body"]["reasoning_effort"] == "high"


def test_reasoning_effort_becomes_thinking_and_comes_back(tgw, toai, mock):
    t = tag()
    r = toai.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}],
                                     reasoning_effort="medium", extra_headers={"x-mock-tag": t})
    body = upstream_request(mock, t)["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192} and body["max_tokens"] == 1234 + 8192
    assert r.choices[0].message.content == expected_text()
    assert r.choices[0].message.model_extra["reasoning_content"]  # the thinking, as OpenAI-compatible servers give it
    # A client's own limit is kept, and the budget fits inside it.
    t = tag()
    toai.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}],
                                 reasoning_effort="high", max_completion_tokens=3000, extra_headers={"x-mock-tag": t})
    body = upstream_request(mock, t)["body"]
    assert body["max_tokens"] == 3000 and body["thinking"]["budget_tokens"] == 2999


def test_responses_reasoning_items_carry_signed_thinking_through_a_tool_loop(tgw, toai, mock):
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    script = json.dumps({"get_weather": {"city": "Paris", "unit": "celsius"}})
    with toai.responses.stream(model="claude-haiku-4-5", input="Weather in Paris?", tools=tools,
                               reasoning={"effort": "low", "summary": "auto"}, include=["reasoning.encrypted_content"],
                               extra_headers={"x-mock-agent": script}) as s:
        summary = "".join(e.delta for e in s if e.type == "response.reasoning_summary_text.delta")
        first = s.get_final_response()
    kinds = [o.type for o in first.output]
    assert kinds == ["reasoning", "function_call"], kinds
    reasoning, call = first.output
    assert summary and reasoning.summary[0].text == summary and reasoning.encrypted_content
    # The second turn sends the output back as input (as Codex does, store=false); the mock refuses a tool-use turn
    # whose thinking is missing or altered.
    t = tag()
    history = [{"role": "user", "content": "Weather in Paris?"}, *[o.model_dump(exclude_none=True) for o in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees"}]
    r = toai.responses.create(model="claude-haiku-4-5", input=history, tools=tools, reasoning={"effort": "low"},
                              include=["reasoning.encrypted_content"],
                              extra_headers={"x-mock-agent": script, "x-mock-tag": t})
    assert r.output_text == "The tool returned: 18 degrees"
    turn = upstream_request(mock, t)["body"]["messages"][1]
    assert [b["type"] for b in turn["content"]] == ["thinking", "tool_use"]
    altered = [dict(o) for o in history]
    altered[1]["encrypted_content"] = altered[1]["encrypted_content"][:-4] + "AAAA"
    with pytest.raises(openai.BadRequestError):
        toai.responses.create(model="claude-haiku-4-5", input=altered, tools=tools, reasoning={"effort": "low"},
                              extra_headers={"x-mock-agent": script})


PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def test_anthropic_sdk_long_tool_loop_with_images_and_errors_through_openai(tgw, tant, mock):
    """Three tool turns as an agent makes them: a result with an image (chat tool messages take text only, so the
    image follows in a user message), an error result, a parallel pair; stop reasons in Anthropic's terms."""
    script = json.dumps({"get_weather": {"city": "Paris", "unit": "celsius"}})
    messages = [{"role": "user", "content": "Weather in Paris, with a chart?"}]
    results = [
        [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}},
         {"type": "text", "text": "chart attached"}],
        "upstream weather service timed out",
        "18 degrees",
    ]
    for turn, result in enumerate(results):
        m = tant.messages.create(model="gpt-4o-mini", max_tokens=300, tools=AN_TOOLS, messages=messages,
                                 extra_headers={"x-mock-agent": script})
        assert m.stop_reason == "tool_use", (turn, m)
        call = next(b for b in m.content if b.type == "tool_use")
        assert call.name == "get_weather" and call.input == {"city": "Paris", "unit": "celsius"}
        messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result,
                                                   "is_error": turn == 1}]}]
        # The mock answers a tool result with text; the agent asks again as agents do, until the last result.
        t = tag()
        m = tant.messages.create(model="gpt-4o-mini", max_tokens=300, tools=AN_TOOLS, messages=messages,
                                 extra_headers={"x-mock-agent": script, "x-mock-tag": t})
        assert m.stop_reason == "end_turn" and m.content[0].text.startswith("The tool returned: ")
        sent = upstream_request(mock, t)["body"]["messages"]
        if turn == 0:
            tool_msg, images = sent[-2], sent[-1]
            assert tool_msg["role"] == "tool" and "image 1" in json.dumps(tool_msg["content"])
            assert images["role"] == "user" and images["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
        else:
            assert sent[-1]["role"] == "tool" and sent[-1]["content"] == result
        messages += [{"role": "assistant", "content": m.content[0].text}, {"role": "user", "content": "And again?"}]
    assert len(messages) == 13


def test_namespaced_tools_are_flattened_and_restored(tgw, toai, mock):
    t = tag()
    tools = [{"type": "namespace", "name": "weather_v2", "description": "Weather tools",
              "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER}]},
             {"type": "web_search", "external_web_access": False}]
    r = toai.responses.create(model="claude-haiku-4-5", input="Weather?", tools=tools,
                              extra_headers={"x-mock-tag": t,
                                             "x-mock-agent": json.dumps({"weather_v2__get_weather": {"city": "Oslo", "unit": "celsius"}})})
    body = upstream_request(mock, t)["body"]
    assert [x["name"] for x in body["tools"]] == ["weather_v2__get_weather"]
    call = r.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.namespace == "weather_v2"  # the SDK knows the field: the shape OpenAI gives


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
