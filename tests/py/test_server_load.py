"""Load on loopback: 32 concurrent streaming clients, a quarter of them
leaving mid-stream, in several rounds against one ds4 serve (8 slots, the rest
queued): no errors, every finished stream well-formed, /health answering
throughout, nothing left busy, and the server's memory flat from round to
round once the first has warmed it up. Bounded: a fixed number of rounds of
short replies."""
import json
import threading
import time

import requests

CLIENTS, ROUNDS = 32, 5


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def one_round(url, rnd, errors, finished):
    def client_run(i):
        try:
            r = requests.post(url + "/v1/chat/completions", stream=True, timeout=300, json={
                "messages": [{"role": "user", "content": f"round {rnd} client {i}"}],
                "max_tokens": 24 if i % 4 else 2000, "stream": True, "think": False,
                "stream_options": {"include_usage": True}})
            assert r.status_code == 200, r.text
            events = []
            for line in r.iter_lines():
                if not line or line.startswith(b": "):
                    continue
                assert line.startswith(b"data: "), line
                events.append(line[6:])
                if i % 4 == 0 and len(events) >= 4:
                    r.close()  # leaves mid-stream
                    return
            assert events[-1] == b"[DONE]", events[-3:]
            chunks = [json.loads(e) for e in events[:-1]]
            assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            assert all(c["id"] == chunks[0]["id"] for c in chunks)
            finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
            assert finals in (["stop"], ["length"]), finals
            assert chunks[-1]["usage"]["completion_tokens"] >= 1
            finished.append((rnd, i))
        except Exception as e:  # noqa: BLE001
            errors.append(f"round {rnd} client {i}: {e!r}")

    threads = [threading.Thread(target=client_run, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)


def test_32_clients_rounds_memory_flat(start_server):
    s = start_server(parallel=8, ctx=2048)
    errors, finished, health_worst = [], [], [0.0]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                assert requests.get(s.url + "/health", timeout=5).status_code == 200
            except Exception as e:  # noqa: BLE001
                errors.append("health: " + repr(e))
            health_worst[0] = max(health_worst[0], time.monotonic() - t0)
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    rss = []
    try:
        for rnd in range(ROUNDS):
            one_round(s.url, rnd, errors, finished)
            deadline = time.time() + 20
            while time.time() < deadline and requests.get(s.url + "/health", timeout=5).json()["active"]:
                time.sleep(0.1)
            rss.append(rss_mib(s.proc.pid))
    finally:
        stop.set()
        poller.join()
    print(f"32 clients x {ROUNDS} rounds: server RSS after each round {[round(x, 1) for x in rss]} MiB, "
          f"slowest /health {health_worst[0]:.3f} s")
    assert not errors, errors[:5]
    assert sorted(finished) == sorted((r, i) for r in range(ROUNDS) for i in range(CLIENTS) if i % 4)
    assert health_worst[0] < 2.0
    h = requests.get(s.url + "/health", timeout=5).json()
    assert h["active"] == 0 and h["queue"] == 0
    # Slots' sessions touch more of their reserved pages as they are reused,
    # so the first rounds grow; measured here it levels off (169.6, 185.5,
    # 195.5, 201.2, 204.2, 206.2, 207.0 MiB over 7 rounds). A leak of even a
    # few hundred KiB per request would break both bounds.
    assert rss[-1] <= rss[2] * 1.08 + 8, rss
    assert rss[-1] - rss[-2] < rss[1] - rss[0], rss
    assert s.alive()
