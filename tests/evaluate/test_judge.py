"""The optional LLM judge against a local fake OpenAI-compatible server (http.server on 127.0.0.1):
good verdicts, malformed replies, HTTP errors, timeouts, retries and the on-disk cache."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.evaluate import judge
from pipeline.riq.llm_client import LLMClient
from pipeline.riq.schema import RiqRecord


def _ans(rid: str, span=(2.0, 6.0)) -> RiqRecord:
    return RiqRecord(id=rid, video="v", video_path="v.mp4", duration=20.0, problem=f"query {rid}", task_type="answerable",
                     kind="answerable", gt_answers=[{"answer": list(span)}], reference_answer="2.00 to 6.00",
                     contrast_answer="No segment is relevant: x.", difficulty="original", source="t")


def _ref(rid: str, cats) -> RiqRecord:
    return RiqRecord(id=rid, video="v", video_path="v.mp4", duration=20.0, problem=f"query {rid}", task_type="refusable",
                     kind="hard_irrelevant", gt_answers=[{"answer": [-1, -1]}],
                     refusable_queries=[{"problem": "true query", "gt_answers": [{"answer": [2, 6]}]}],
                     explanation="No segment is relevant: it is red.", reference_answer="No segment is relevant: it is red.",
                     contrast_answer="2.00 to 6.00", categories=cats, difficulty="hard", source="t")


def _chat(content: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


# What the fake server answers, keyed by the query named in the user message.
VERDICTS = {
    # answerable, judge reads span [3, 6] -> IoU 3/4
    "query A1": [_chat(json.dumps({"relevant": True, "span": [3, 6], "categories": [], "reasoning_score": 4}))],
    # refusable, refused, categories partly right (one unknown label dropped) -> Jaccard 1/2
    "query R1": [_chat("```json\n" + json.dumps({"relevant": False, "span": None, "reasoning_score": 5,
                                                 "categories": ["AttributeValue", "Object/ObjectMoving", "Colourfulness"]}) + "\n```")],
    # malformed: not JSON at all
    "query X1": [_chat("I think the model is right.")],
    # malformed: JSON but a score out of range
    "query X2": [_chat(json.dumps({"relevant": True, "span": None, "reasoning_score": 9}))],
    # not an OpenAI chat completion
    "query X3": [b'{"error": "overloaded"}'],
    # HTTP 500 once, then a good verdict (retried)
    "query F1": [500, _chat(json.dumps({"relevant": False, "categories": [], "reasoning_score": 2}))],
    # slower than the client timeout every time
    "query T1": ["sleep"],
}


class FakeServer:
    def __init__(self):
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][1]["content"]
                key = user.split('"')[1]
                with server.lock:
                    n = server.calls.get(key, 0)
                    server.calls[key] = n + 1
                script = VERDICTS[key]
                reply = script[min(n, len(script) - 1)]
                if reply == "sleep":
                    time.sleep(1.0)
                    reply = _chat("{}")
                if isinstance(reply, int):
                    self.send_response(reply)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    with FakeServer() as s:
        yield s


def _client(server, tmp_path, timeout=0.3) -> LLMClient:
    env = {"RARFT_JUDGE_BASE_URL": server.url, "RARFT_JUDGE_MODEL": "fake-judge", "RARFT_JUDGE_API_KEY": "sk-test",
           "RARFT_JUDGE_CACHE": str(tmp_path / "cache"), "RARFT_JUDGE_TIMEOUT": str(timeout)}
    return judge.client_from_env(env)


def test_client_from_env_only():
    assert judge.client_from_env({}) is None
    c = judge.client_from_env({"RARFT_JUDGE_BASE_URL": "http://127.0.0.1:1/v1/", "RARFT_JUDGE_MODEL": "m"})
    assert c.base_url == "http://127.0.0.1:1/v1" and str(c.cache_dir) == judge.DEFAULT_CACHE and c.api_key is None


def test_judge_verdicts_failures_and_metrics(server, tmp_path):
    records = [_ans("A1"), _ref("R1", ["Attribute/AttributeValue"]), _ans("X1"), _ans("X2"), _ans("X3"),
               _ref("F1", ["Attribute/Counting"]), _ans("T1")]
    completions = ["<answer>3 to 6</answer>"] * len(records)
    client = _client(server, tmp_path)
    verdicts = judge.judge_all(client, records, completions, workers=3, retries=1, backoff_s=0.0)
    by_id = {v["id"]: v for v in verdicts}
    assert [v["id"] for v in verdicts] == [r.id for r in records]
    assert by_id["A1"] == {"id": "A1", "relevant": True, "span": (3.0, 6.0), "categories": [], "reasoning_score": 4.0}
    assert by_id["R1"]["categories"] == ["Attribute/AttributeValue", "Object/ObjectMoving"]
    assert by_id["X1"]["error"] == "invalid_reply" and by_id["X2"]["error"] == "invalid_reply"
    assert by_id["X3"]["error"] == "bad_response"
    assert by_id["F1"]["relevant"] is False and server.calls["query F1"] == 2  # HTTP 500, retried once
    assert by_id["T1"]["error"] == "timeout" and server.calls["query T1"] == 2  # 1 try + 1 retry, then given up
    assert server.calls["query X1"] == 1  # a reply that does not parse is not retried

    m = judge.judge_metrics(records, verdicts, thresholds=(0.5, 0.8))
    # judged: A1 (answerable, IoU 3/4), R1 (refused), F1 (refused); failed: X1 X2 (invalid_reply), X3, T1
    assert (m["n_judged"], m["n_failed"]) == (3, 4)
    assert m["failed_by_reason"] == {"invalid_reply": 2, "bad_response": 1, "timeout": 1}
    assert m["relevance"]["accuracy"] == 1.0
    assert m["ra_iou"] == pytest.approx({"mean": (0.75 + 1 + 1) / 3, "r@0.5": 1.0, "r@0.8": 2 / 3})
    assert m["grounding"] == pytest.approx({"miou": 0.75, "r@0.5": 1.0, "r@0.8": 0.0})
    # R1: {AttrValue, ObjMoving} vs {AttrValue} = 1/2; F1: {} vs {Counting} = 0
    assert m["rt_iou"] == pytest.approx({"mean": 0.25, "mean_correct_refusals": 0.25})
    assert m["reasoning_score"] == pytest.approx({"mean": 11 / 3, "answerable": 4.0, "refusable": 3.5})
    json.dumps(m)

    # Second run: every well-formed chat completion comes from the cache; only the failures hit the server.
    before = dict(server.calls)
    again = judge.judge_all(client, records, completions, workers=2, retries=0, backoff_s=0.0)
    assert [v for v in again if "error" not in v] == [v for v in verdicts if "error" not in v]
    assert {k for k in server.calls if server.calls[k] != before[k]} == {"query X3", "query T1"}


def test_endpoint_down_is_a_failure_not_a_crash(tmp_path):
    client = judge.client_from_env({"RARFT_JUDGE_BASE_URL": "http://127.0.0.1:9/v1", "RARFT_JUDGE_MODEL": "m",
                                    "RARFT_JUDGE_CACHE": str(tmp_path), "RARFT_JUDGE_TIMEOUT": "1"})
    (v,) = judge.judge_all(client, [_ans("A1")], ["x"], retries=1, backoff_s=0.0)
    assert v["error"] == "unreachable"
    m = judge.judge_metrics([_ans("A1")], [v])
    assert m["n_judged"] == 0 and m["relevance"]["accuracy"] == 0.0


def test_judge_in_evaluation_block(server, tmp_path, monkeypatch):
    """evaluate.judge adds <model>.judge.*; the endpoint comes from the environment, never from params."""
    from pipeline.core.params import Params
    from pipeline.evaluate.run import run_judge

    records = [_ans("A1"), _ref("R1", ["Attribute/AttributeValue"])]
    for k, v in {"RARFT_JUDGE_BASE_URL": server.url, "RARFT_JUDGE_MODEL": "fake", "RARFT_JUDGE_CACHE": str(tmp_path / "c")}.items():
        monkeypatch.setenv(k, v)
    results = {"base": {"n_items": 2}}
    run_judge(records, {"base": ["a", "b"]}, results, tmp_path, Params.model_validate({"evaluate": {"judge": True}}))
    assert results["base"]["judge"]["n_judged"] == 2
    lines = (tmp_path / "judge_base.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["A1", "R1"]
    assert server.url not in json.dumps(results)
    monkeypatch.delenv("RARFT_JUDGE_BASE_URL")
    from pipeline.core.io import InputError

    with pytest.raises(InputError, match="RARFT_JUDGE_BASE_URL"):
        run_judge(records, {"base": ["a", "b"]}, results, tmp_path, Params())
