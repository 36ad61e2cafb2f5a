"""The official OpenAI Python SDK against the gateway serving Anthropic- and
Gemini-dialect providers (the project's mock speaking Messages and
generateContent on loopback): plain, streamed with usage, and tool-calling
answers, each in OpenAI's shape.

Usage: python dialects_sdk.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Prints one line per check and a final 'dialects: N passed, M failed'; exits 1 on failure.
"""
import json
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-not-needed-for-the-mock", max_retries=0)
passed, failed = 0, 0

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the weather in Paris?"}]


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")


def plain(model):
    r = client.chat.completions.create(model=model, messages=ASK)
    assert r.object == "chat.completion", r
    assert r.model == model, r.model
    assert r.choices[0].message.content, r
    assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage


def streamed(model):
    chunks = list(client.chat.completions.create(
        model=model, messages=ASK, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, "no text"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0, chunks[-1]


def tools(model):
    r = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS)
    assert r.choices[0].finish_reason == "tool_calls", r
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather", call
    args = json.loads(call.function.arguments)
    assert "city" in args, args
    # The result goes back; the answer is text.
    follow = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "12 C, rain"},
    ]
    r2 = client.chat.completions.create(model=model, messages=follow, tools=TOOLS)
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content, r2


def streamed_tools(model):
    stream = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, stream=True)
    calls = {}
    finish = None
    for c in stream:
        if not c.choices:
            continue
        for d in c.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
            entry["id"] = entry["id"] or d.id
            if d.function and d.function.name:
                entry["name"] = d.function.name
            if d.function and d.function.arguments:
                entry["arguments"] += d.function.arguments
        finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls", finish
    assert list(calls) == [0], calls
    assert calls[0]["id"] and calls[0]["name"] == "get_weather", calls
    assert "city" in json.loads(calls[0]["arguments"]), calls


def refused(model):
    try:
        client.chat.completions.create(model=model, messages=ASK, logprobs=True)
    except openai.BadRequestError as e:
        assert e.body.get("param") == "logprobs", e.body
        return
    raise AssertionError("logprobs was not refused")


for model in ["claude-3-5-haiku-latest", "gemini-2.0-flash"]:
    for name, fn in [("plain", plain), ("streamed with usage", streamed), ("tool call and result", tools),
                     ("streamed tool call", streamed_tools), ("unsupported field refused", refused)]:
        check(f"{model}: {name}", lambda fn=fn: fn(model))

print(f"dialects: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
