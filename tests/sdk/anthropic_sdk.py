"""The official Anthropic Python SDK against the gateway, asking for a model
served by an OpenAI-dialect provider (the project's mock): `POST /v1/messages`
translated to a chat completion and back, plain, streamed and with a tool.

Usage: python anthropic_sdk.py BASE_URL   (the gateway's root, e.g. http://127.0.0.1:8080)
Prints one line per check and a final 'anthropic: N passed, M failed'; exits 1 on failure.
"""
import sys

import anthropic

client = anthropic.Anthropic(base_url=sys.argv[1], api_key="sk-not-needed-for-the-mock", max_retries=0)
MODEL = "gpt-4o-mini"
passed, failed = 0, 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")


def plain():
    m = client.messages.create(model=MODEL, max_tokens=64, system="Be brief.",
                               messages=[{"role": "user", "content": "Hello there"}])
    assert m.type == "message" and m.role == "assistant", m
    assert m.content[0].type == "text" and m.content[0].text, m.content
    assert m.stop_reason == "end_turn", m.stop_reason
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage


def streamed():
    with client.messages.stream(model=MODEL, max_tokens=64,
                                messages=[{"role": "user", "content": "Hello there"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.content[0].text == text, (text, final)
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens > 0, final.usage


def tools():
    tool = {"name": "get_weather", "description": "Current weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    m = client.messages.create(model=MODEL, max_tokens=64, tools=[tool],
                               messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert m.stop_reason == "tool_use", m
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input, use
    m2 = client.messages.create(model=MODEL, max_tokens=64, tools=[tool], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12 C"}]},
    ])
    assert m2.stop_reason == "end_turn" and m2.content[0].text, m2


def refused():
    try:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                               extra_body={"top_k": 5})
    except anthropic.BadRequestError as e:
        assert "top_k" in str(e), e
        return
    raise AssertionError("top_k was not refused")


for name, fn in [("plain", plain), ("streamed", streamed), ("tool use and result", tools),
                 ("unsupported field refused", refused)]:
    check(f"{MODEL} via /v1/messages: {name}", fn)

print(f"anthropic: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
