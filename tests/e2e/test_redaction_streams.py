"""Redaction without holes, end to end: answers with several streams of text — OpenAI `n` > 1 choices interleaved
and a streamed tool call, Anthropic thinking + two text blocks + a tool-use block, Responses output items with their
summary events — scripted at the mock (`x-mock-events`), cut at random points, sent through the real gateway and the
real `redact` component, and read by the official SDKs.

Properties: no PII substring reaches the client anywhere in the raw stream (deltas, flushed text, summary events);
each stream's text is the same however it was cut (equal to the answer sent in one piece per stream, which is the
whole-text redaction); and the SDKs accumulate valid answers (tool arguments still parse as JSON).
"""

import json
import random
import urllib.request

import pytest

from conftest import GUESTS, Gateway, anthropic_client, openai_client

PII = [
    "Sure: write to jane.doe+billing@mail.example.co.uk today.",
    "Call +1 (415) 555-0132, or the card 4111 1111 1111 1111.",
    "Wire it to DE89 3704 0044 0532 0130 00; the server is 192.168.100.254.",
    "The key is sk-proj-AbCdEfGhIjKlMnOpQrStUv0123456789 — keep it safe.",
]
SECRETS = ["jane.doe+billing@mail.example.co.uk", "555-0132", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00",
           "192.168.100.254", "sk-proj-AbCdEfGhIjKlMnOpQrStUv0123456789"]
ARGS = json.dumps({"to": "ops@example.org", "note": "card 5500-0000-0000-0004 from 10.0.0.1"})
ARG_SECRETS = ["ops@example.org", "5500-0000-0000-0004", "10.0.0.1"]


@pytest.fixture(scope="module")
def rg(session_tmp, mock):
    tail = f"""
[[plugins]]
name = "redact"
file = "{GUESTS / 'redact.wasm'}"
capabilities = ["trace"]
config = {{ default = "mask" }}
"""
    g = Gateway(session_tmp, mock, name="redact-streams", tail=tail)
    yield g
    g.stop()


def cut(text, rnd, whole=False):
    if whole:
        return [text]
    points = sorted({rnd.randrange(1, len(text)) for _ in range(rnd.randrange(0, 10))})
    return [text[a:b] for a, b in zip([0] + points, points + [len(text)])]


def interleave(queues, rnd):
    """Pops the pieces of several streams in a random interleaving: [(stream key, piece, is_last)]."""
    queues = {k: list(v) for k, v in queues.items()}
    out = []
    while any(queues.values()):
        k = rnd.choice([k for k, v in queues.items() if v])
        piece = queues[k].pop(0)
        out.append((k, piece, not queues[k]))
    return out


def raw_stream(g, path, body, events, headers):
    """The raw SSE bytes the gateway sends for this scripted answer."""
    h = {"content-type": "application/json", "x-mock-events": json.dumps(events), **headers}
    req = urllib.request.Request(g.url + path, data=json.dumps(body).encode(), headers=h, method="POST")
    with urllib.request.urlopen(req, timeout=20) as r:
        assert r.status == 200
        return r.read().decode()


def no_leak(raw, secrets):
    for s in secrets:
        assert s not in raw, f"{s!r} reached the client"


# ---- OpenAI chat: two choices interleaved, and a tool call on the first ----

def chat_events(rnd, whole):
    chunk = lambda choice: {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0,
                            "model": "gpt-4o-mini", "choices": [choice]}
    events = [[None, chunk({"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})]
              for i in (0, 1)]
    queues = {("text", 0): cut(PII[0] + " " + PII[1], rnd, whole), ("text", 1): cut(PII[2] + " " + PII[3], rnd, whole),
              ("tool", 0): cut(ARGS, rnd, whole)}
    started_tool = False
    for (kind, i), piece, last in interleave(queues, rnd):
        if kind == "text":
            events.append([None, chunk({"index": i, "delta": {"content": piece}, "finish_reason": None})])
        else:
            call = {"index": 0, "function": {"arguments": piece}}
            if not started_tool:
                call |= {"id": "call_1", "type": "function", "function": {"name": "send", "arguments": piece}}
                started_tool = True
            events.append([None, chunk({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None})])
    events.append([None, chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"})])
    events.append([None, chunk({"index": 1, "delta": {}, "finish_reason": "stop"})])
    events.append([None, {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
                          "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 40, "total_tokens": 45}}])
    events.append([None, "[DONE]"])
    return events


def chat_result(rg, events):
    client = openai_client(rg)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", n=2, stream=True, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-events": json.dumps(events)})
    texts, args, finish = {0: "", 1: ""}, "", {}
    for c in stream:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
            for call in ch.delta.tool_calls or []:
                args += call.function.arguments or ""
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    return texts, args, finish


def test_chat_choices_and_tool_arguments(rg):
    reference = chat_result(rg, chat_events(random.Random(0), whole=True))
    assert "[EMAIL]" in reference[0][0] and "[CREDIT_CARD]" in reference[0][0], reference
    assert json.loads(reference[1])["to"] == "[EMAIL]", "tool arguments are redacted and stay valid JSON"
    assert reference[2] == {0: "tool_calls", 1: "stop"}
    for seed in range(6):
        events = chat_events(random.Random(seed), whole=False)
        assert chat_result(rg, events) == reference, f"seed {seed}"
        raw = raw_stream(rg, "/v1/chat/completions", {"model": "gpt-4o-mini", "n": 2, "stream": True,
                                                       "messages": [{"role": "user", "content": "hi"}]}, events, {})
        no_leak(raw, SECRETS + ARG_SECRETS)


# ---- Anthropic: thinking, two text blocks, a tool-use block ----

def messages_events(rnd, whole):
    ev = lambda name, data: [name, {"type": name, **data}]
    events = [ev("message_start", {"message": {
        "id": "msg_x", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}})]
    blocks = [("thinking", PII[3]), ("text", PII[0]), ("text", PII[1] + " " + PII[2]), ("tool_use", ARGS)]
    for i, (kind, text) in enumerate(blocks):
        start = {"thinking": {"type": "thinking", "thinking": "", "signature": ""},
                 "text": {"type": "text", "text": ""},
                 "tool_use": {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {}}}[kind]
        events.append(ev("content_block_start", {"index": i, "content_block": start}))
        for piece in cut(text, rnd, whole):
            delta = {"thinking": {"type": "thinking_delta", "thinking": piece},
                     "text": {"type": "text_delta", "text": piece},
                     "tool_use": {"type": "input_json_delta", "partial_json": piece}}[kind]
            events.append(ev("content_block_delta", {"index": i, "delta": delta}))
        events.append(ev("content_block_stop", {"index": i}))
    events.append(ev("message_delta", {"delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                       "usage": {"output_tokens": 60}}))
    events.append(ev("message_stop", {}))
    return events


def messages_result(rg, events):
    client = anthropic_client(rg)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=200,
                                messages=[{"role": "user", "content": "hi"}],
                                extra_headers={"x-mock-events": json.dumps(events)}) as s:
        m = s.get_final_message()
    return [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None) or b.input) for b in m.content], \
        m.stop_reason


def test_thinking_text_blocks_and_tool_input(rg):
    reference = messages_result(rg, messages_events(random.Random(0), whole=True))
    blocks, stop = reference
    assert [b[0] for b in blocks] == ["thinking", "text", "text", "tool_use"] and stop == "tool_use"
    assert "[SECRET]" in blocks[0][1], "thinking text is redacted"
    assert blocks[3][1]["to"] == "[EMAIL]"
    for seed in range(6):
        events = messages_events(random.Random(seed), whole=False)
        assert messages_result(rg, events) == reference, f"seed {seed}"
        raw = raw_stream(rg, "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 200, "stream": True,
                                               "messages": [{"role": "user", "content": "hi"}]}, events,
                         {"anthropic-version": "2023-06-01"})
        no_leak(raw, SECRETS + ARG_SECRETS)


# ---- Responses: an answer item with two parts' worth of text and a function call, with every summary event ----

def responses_events(rnd, whole):
    answer, args = PII[0] + " " + PII[2], ARGS
    seq = iter(range(1000))
    ev = lambda name, data: [name, {"type": name, "sequence_number": next(seq), **data}]
    message = lambda text: {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    call = lambda a: {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
                      "name": "send", "arguments": a}
    base = {"id": "resp_1", "object": "response", "created_at": 0, "model": "gpt-4o-mini", "status": "in_progress",
            "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    events = [ev("response.created", {"response": base}),
              ev("response.output_item.added", {"output_index": 0, "item": message("") | {"status": "in_progress",
                                                                                           "content": []}}),
              ev("response.content_part.added", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                 "part": {"type": "output_text", "text": "", "annotations": []}})]
    queues = {"text": cut(answer, rnd, whole), "args": cut(args, rnd, whole)}
    # The answer's deltas first, then the call's (items are sequential in this API).
    for piece in queues["text"]:
        events.append(ev("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                        "delta": piece, "logprobs": []}))
    events += [ev("response.output_text.done", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                "text": answer, "logprobs": []}),
               ev("response.content_part.done", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                 "part": {"type": "output_text", "text": answer, "annotations": []}}),
               ev("response.output_item.done", {"output_index": 0, "item": message(answer)}),
               ev("response.output_item.added", {"output_index": 1, "item": call("") | {"status": "in_progress"}})]
    for piece in queues["args"]:
        events.append(ev("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 1,
                                                                    "delta": piece}))
    events += [ev("response.function_call_arguments.done", {"item_id": "fc_1", "output_index": 1, "arguments": args}),
               ev("response.output_item.done", {"output_index": 1, "item": call(args)}),
               ev("response.completed", {"response": base | {"status": "completed",
                                                             "output": [message(answer), call(args)],
                                                             "usage": {"input_tokens": 5, "output_tokens": 50,
                                                                       "total_tokens": 55}}})]
    return events


def responses_result(rg, events):
    client = openai_client(rg)
    with client.responses.stream(model="gpt-4o-mini", input="hi",
                                 extra_headers={"x-mock-events": json.dumps(events)}) as s:
        deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    return deltas, final.output_text, final.output[1].arguments


def test_responses_items_and_summary_events(rg):
    reference = responses_result(rg, responses_events(random.Random(0), whole=True))
    deltas, final_text, final_args = reference
    assert deltas == final_text, "the summary events carry what was streamed"
    assert "[EMAIL]" in final_text and "[IBAN]" in final_text
    assert json.loads(final_args)["to"] == "[EMAIL]"
    for seed in range(6):
        events = responses_events(random.Random(seed), whole=False)
        assert responses_result(rg, events) == reference, f"seed {seed}"
        raw = raw_stream(rg, "/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "stream": True}, events, {})
        no_leak(raw, SECRETS + ARG_SECRETS)
