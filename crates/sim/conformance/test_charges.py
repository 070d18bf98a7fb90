"""The charge log, read over HTTP, agrees with what the SDKs were told."""

import anthropic
import openai

from conftest import wait_for


def charges(sim, **q):
    return sim.get("/sim/charges", params=q).json()["data"]


def test_request_ids_and_users_are_recorded(sim):
    a = anthropic.Anthropic(max_retries=0)
    m = a.messages.create(model="claude-haiku-5-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
                          metadata={"user_id": "user-42"})
    o = openai.OpenAI(max_retries=0)
    c = o.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}],
                                  user="user-7", metadata={"order": "A-1"})
    log = charges(sim)
    by_req = {x["request_id"]: x for x in log}
    ca = by_req[m._request_id]
    assert ca["user_id"] == "user-42" and ca["response_id"] == m.id and ca["tier"] == "standard"
    assert ca["input_tokens"] == m.usage.input_tokens and ca["output_tokens"] == m.usage.output_tokens
    co = by_req[c._request_id]
    assert co["user"] == "user-7" and co["metadata"] == {"order": "A-1"} and co["response_id"] == c.id
    assert len(by_req) == len(log), "request ids are unique"


def test_faults_are_not_billed(sim):
    o = openai.OpenAI(max_retries=0)
    refused = []
    for f in ("429", "500", "529"):
        try:
            o.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}],
                                      extra_headers={"x-sim-fault": f})
        except openai.APIStatusError as e:
            refused.append(e.response.headers["x-request-id"])
    assert len(refused) == 3
    billed = {x["request_id"] for x in charges(sim)}
    assert not billed & set(refused)


def test_flex_and_batch_cost_half(sim):
    o = openai.OpenAI(max_retries=0)
    msgs = [{"role": "user", "content": "price me"}]
    std = o.chat.completions.create(model="gpt-5.4-mini", messages=msgs)
    flex = o.chat.completions.create(model="gpt-5.4-mini", messages=msgs, service_tier="flex")
    by_req = {x["request_id"]: x for x in charges(sim)}
    s, f = by_req[std._request_id], by_req[flex._request_id]
    assert f["tier"] == "flex" and s["output_tokens"] == f["output_tokens"]
    assert s["total_pico_usd"] == 2 * f["total_pico_usd"]

    a = anthropic.Anthropic(max_retries=0)
    p = {"model": "claude-sonnet-5-5", "max_tokens": 100, "messages": msgs}
    real = a.messages.create(**p)
    b = a.messages.batches.create(requests=[{"custom_id": "half-1", "params": p}])
    wait_for(lambda: a.messages.batches.retrieve(b.id).processing_status == "ended")
    line = charges(sim, batch_id=b.id)
    assert len(line) == 1 and line[0]["custom_id"] == "half-1" and line[0]["tier"] == "batch"
    std_charge = {x["request_id"]: x for x in charges(sim)}[real._request_id]
    assert std_charge["total_pico_usd"] == 2 * line[0]["total_pico_usd"]


def test_summary_adds_up(sim):
    # A request stalled by an earlier test may still be billed between two reads: retry until the
    # log and the summary are read at the same state.
    def snapshot():
        s = sim.get("/sim/charges/summary").json()
        log = charges(sim)
        return (s, log) if s["requests"] == len(log) else None

    s, log = wait_for(snapshot)
    assert s["requests"] == len(log)
    assert s["total_pico_usd"] == sum(x["total_pico_usd"] for x in log)
    assert sum(line["requests"] for line in s["by_model"]) == len(log)
