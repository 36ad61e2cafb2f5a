"""The official OpenAI Python SDK against the default gateway (in-process mock).

Usage: python openai_sdk.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Prints one line per check and a final 'sdk: N passed, M failed'; exits 1 on failure.
"""
import sys

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key="sk-not-needed-for-the-mock", max_retries=0)
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


def models():
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids, ids


def completion():
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content, r
    assert r.choices[0].finish_reason == "stop", r
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def stream_with_usage():
    chunks = list(client.chat.completions.create(
        model="fast", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream please"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip(), chunks
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    assert last.usage.completion_tokens == len(text.split()), (last.usage, text)


def embeddings():
    r = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(r.data) == 2 and len(r.data[0].embedding) > 0, r
    assert r.usage.prompt_tokens > 0


def unknown_model_is_404():
    try:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError as e:
        assert e.status_code == 404 and e.body["code"] == "model_not_found", e.body
        return
    raise AssertionError("expected NotFoundError")


def bad_request_is_400():
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[], n="two")
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        return
    raise AssertionError("expected BadRequestError")


for name, fn in [("models.list", models), ("chat completion with usage", completion),
                 ("stream with final usage chunk", stream_with_usage), ("embeddings", embeddings),
                 ("unknown model -> 404", unknown_model_is_404), ("malformed request -> 400", bad_request_is_400)]:
    check(name, fn)
print(f"sdk: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
