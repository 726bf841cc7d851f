"""Cloud escalation over an OpenAI-compatible ``POST {base_url}/chat/completions``.

- What leaves the vehicle is ``build_escalation_payload``: the numeric feature vector and the local
  decision — never pixels, images or landmarks.
- ``CloudClient`` sends one request with retries: exponential backoff with jitter on 5xx/429, timeouts
  and connection errors. TLS is verified; plain ``http`` is accepted for loopback hosts only. The bearer
  token is read from the environment variable named by ``api_key_env`` at each call and is never
  logged, never put in an exception and never stored.
- ``Escalator`` never blocks its caller (the safety path): ``submit`` writes the request to the
  persistent ``Outbox`` and returns; a worker thread delivers it (again after a restart or an outage)
  and ``poll`` hands out the answers as follow-up ``InterventionDecision``s.

Structured output: the client asks for JSON in the first form the server accepts, remembering it:
OpenAI ``json_schema`` → ``json_object`` with a ``schema`` (llama.cpp servers) → plain ``json_object``
→ no ``response_format``. A 400/422/500 answer that mentions ``response_format`` moves to the next form.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.outbox import Outbox, OutboxItem, redact
from fatigue_llm.intervention.types import ACTIONS, MAX_MESSAGE_CHARS, InterventionDecision, Level, Source
from fatigue_llm.llm.config import LlmConfig

log = logging.getLogger(__name__)

PAYLOAD_SCHEMA = "fatigue_llm.escalation/1"
ESCALATION_KIND = "escalation"
DEFAULT_CLOUD_CONFIDENCE = 0.8  # used when the cloud answer carries no usable confidence
MAX_EXPLANATION_CHARS = 300
LOCAL_FIELDS = ("id", "level", "action", "message", "confidence", "source", "explanation", "timestamp_s")

DECISION_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "level": {"type": "string", "enum": [level.name for level in Level]},
        "action": {"type": "string", "enum": list(ACTIONS)},
        "message": {"type": "string", "minLength": 1, "maxLength": MAX_MESSAGE_CHARS},
        "explanation": {"type": "string", "maxLength": 200},
        "confidence": {"type": "number"},
    },
    "required": ["level", "action", "message", "explanation", "confidence"],
    "additionalProperties": False,
}
RESPONSE_FORMATS: tuple[dict | None, ...] = (
    {"type": "json_schema",
     "json_schema": {"name": "intervention", "strict": True, "schema": DECISION_SCHEMA}},
    {"type": "json_object", "schema": DECISION_SCHEMA},
    {"type": "json_object"},
    None,
)
RESPONSE_FORMAT_NAMES = ("json_schema", "json_object+schema", "json_object", "none")
SYSTEM_PROMPT = (
    "You are a driver-fatigue safety assistant reviewing an in-car decision. The user message is JSON: "
    "'features' are the driver's fatigue measurements over the last window (eye_closure_ratio = PERCLOS, "
    "blink_frequency per min, head_nod per min, time_awake in h, microsleep_count...), 'local' is the "
    "decision the car made. Answer with one JSON object: level (INFO, ADVISORY, WARNING or CRITICAL), "
    f"action (one of {', '.join(ACTIONS)}), message (what to tell the driver, at most {MAX_MESSAGE_CHARS} "
    "characters), explanation (one short sentence), confidence (0 to 1)."
)


class CloudError(RuntimeError):
    """A cloud request failed; ``retryable`` says whether trying again later may help.

    The message names the URL and the cause, never the token.
    """

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# --------------------------------------------------------------------------------------------- payload
def build_escalation_payload(features: FatigueFeatures, local: InterventionDecision) -> dict:
    """The only data sent to the cloud: finite feature values and the local decision's fields."""
    values = {
        name: value
        for name, value in features.to_dict().items()
        if isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value))
    }
    decision = local.to_json_dict()
    return {
        "schema": PAYLOAD_SCHEMA,
        "features": values,
        "local": {name: decision[name] for name in LOCAL_FIELDS},
    }


def build_messages(payload: dict) -> list[dict]:
    """The chat messages for one escalation payload."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": json.dumps(payload, separators=(",", ":"))},
    ]


def _extract_json_object(text: str) -> dict:
    """The JSON object in a model reply (also when wrapped in prose or a code fence).

    Raises:
        ValueError: no JSON object in ``text``.
    """
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    value = json.loads(text[start:end + 1])
    if not isinstance(value, dict):
        raise ValueError("the reply is not a JSON object")
    return value


def parse_reply(reply: dict) -> dict:
    """Validate a decoded model reply into ``{level, action, message, explanation, confidence}``.

    Raises:
        CloudError: a required field is missing or invalid (retryable: another sample may be valid).
    """
    def bad(why: str) -> CloudError:
        return CloudError(f"cloud reply {why}", retryable=True)

    level = reply.get("level")
    if isinstance(level, str) and level.strip().upper() in Level.__members__:
        level_name = level.strip().upper()
    elif isinstance(level, int) and not isinstance(level, bool) and 0 <= level <= Level.CRITICAL:
        level_name = Level(level).name
    else:
        raise bad(f"has no valid 'level' (got {level!r})")
    action = reply.get("action")
    if action not in ACTIONS:
        raise bad(f"has no valid 'action' (got {action!r}; catalogue: {', '.join(ACTIONS)})")
    message = reply.get("message")
    if not isinstance(message, str) or not message.strip():
        raise bad("has no 'message'")
    message = message.strip()
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1].rstrip() + "…"
    confidence = reply.get("confidence")
    if not _is_number(confidence):
        confidence = DEFAULT_CLOUD_CONFIDENCE
    explanation = reply.get("explanation")
    explanation = explanation.strip()[:MAX_EXPLANATION_CHARS] if isinstance(explanation, str) else ""
    return {"level": level_name, "action": action, "message": message, "explanation": explanation,
            "confidence": min(max(float(confidence), 0.0), 1.0)}


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def follow_up_decision(answer: dict, payload: dict, latency_ms: float = 0.0) -> InterventionDecision:
    """The cloud answer (``parse_reply`` output) as a follow-up to the payload's local decision."""
    local = payload["local"]
    return InterventionDecision(
        level=Level[answer["level"]], action=answer["action"], message=answer["message"], source=Source.CLOUD,
        confidence=answer["confidence"], escalated=True, explanation=answer["explanation"],
        latency_ms=latency_ms, follows_id=local["id"], timestamp_s=local["timestamp_s"],
    )


# --------------------------------------------------------------------------------------------- client
def check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash.

    Raises:
        ValueError: empty, not http(s), or plain http to a host that is not loopback.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"cloud_url must be an https URL, got {base_url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"cloud_url {base_url!r}: plain http is allowed for loopback hosts only, use https")
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class CloudReply:
    """A validated answer and what the outbox keeps of it."""

    answer: dict
    model: str
    response_format: str


class CloudClient:
    """OpenAI-compatible chat-completions client with retries (see the module docstring)."""

    def __init__(self, base_url: str, model: str, api_key_env: str, timeout: float, max_retries: int,
                 *, backoff_s: float = 0.5, max_backoff_s: float = 8.0, max_tokens: int = 200) -> None:
        """Raises: ValueError: a bad ``base_url`` (see ``check_base_url``), timeout or retry count."""
        if not timeout > 0 or max_retries < 0:
            raise ValueError(f"timeout must be > 0 and max_retries >= 0, got {timeout}, {max_retries}")
        self.base_url, self.model, self.api_key_env = check_base_url(base_url), model, api_key_env
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff_s, self.max_backoff_s, self.max_tokens = backoff_s, max_backoff_s, max_tokens
        self._format = 0  # index into RESPONSE_FORMATS of the first form the server accepted
        self._closed = threading.Event()
        self._http = httpx.Client(verify=True, timeout=httpx.Timeout(timeout), follow_redirects=False)

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def close(self) -> None:
        """Stop waiting between retries and close the connection pool."""
        self._closed.set()
        self._http.close()

    def abort(self) -> None:
        """Cut short any backoff wait (a request in flight ends at its timeout)."""
        self._closed.set()

    def decide(self, payload: dict) -> CloudReply:
        """Ask the cloud model about one escalation payload.

        Raises:
            CloudError: the request failed after the retries, or the reply is malformed.
        """
        body = self._request(build_messages(payload))
        try:
            content = body["choices"][0]["message"]["content"]
            reply = _extract_json_object(content)
        except (KeyError, IndexError, TypeError) as error:
            message = f"{self.url}: response has no choices[0].message.content ({error!r})"
            raise CloudError(message, retryable=True) from None
        except ValueError as error:
            message = f"{self.url}: model reply is not a JSON object ({error})"
            raise CloudError(message, retryable=True) from None
        answer = parse_reply(reply)
        return CloudReply(answer, str(body.get("model", self.model)), RESPONSE_FORMAT_NAMES[self._format])

    def _request(self, messages: list[dict]) -> dict:
        token = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        attempt = 0
        while True:
            body = {"model": self.model, "messages": messages, "temperature": 0.0,
                    "max_tokens": self.max_tokens}
            if RESPONSE_FORMATS[self._format] is not None:
                body["response_format"] = RESPONSE_FORMATS[self._format]
            try:
                response = self._http.post(self.url, json=body, headers=headers)
            except httpx.TimeoutException as error:
                why = f"timed out after {self.timeout:g} s ({type(error).__name__})"
                failure = CloudError(f"{self.url}: {why}", retryable=True)
            except httpx.HTTPError as error:
                failure = CloudError(f"{self.url}: connection failed ({_safe(error, token)})", retryable=True)
            else:
                if self._format_rejected(response):
                    continue
                if response.status_code == 200:
                    return self._json(response, token)
                failure = self._status_error(response, token)
            if not failure.retryable or attempt >= self.max_retries or self._closed.is_set():
                raise failure
            delay = self._backoff(attempt)
            log.info("%s; retry %d/%d in %.2f s", failure, attempt + 1, self.max_retries, delay)
            attempt += 1
            if self._closed.wait(delay):
                raise failure

    def _format_rejected(self, response: httpx.Response) -> bool:
        """Move to the next response_format when the server rejected the current one."""
        # llama-cpp-python answers a request validation error with HTTP 500, OpenAI with 400
        if response.status_code not in (400, 422, 500) or self._format >= len(RESPONSE_FORMATS) - 1:
            return False
        if "response_format" not in response.text.lower():
            return False
        self._format += 1
        log.info("%s rejected the response_format, now using %s", self.url,
                 RESPONSE_FORMAT_NAMES[self._format])
        return True

    def _json(self, response: httpx.Response, token: str) -> dict:
        try:
            body = response.json()
        except ValueError:
            raise CloudError(f"{self.url}: HTTP 200 with a body that is not JSON: "
                             f"{_safe(response.text, token, 120)!r}", True) from None
        if not isinstance(body, dict):
            raise CloudError(f"{self.url}: HTTP 200 with a JSON body that is not an object", True)
        return body

    def _status_error(self, response: httpx.Response, token: str) -> CloudError:
        status = response.status_code
        detail = _safe(response.text, token)
        if status in (401, 403):
            hint = f"; check the token in ${self.api_key_env}" if self.api_key_env else ""
            return CloudError(f"{self.url}: HTTP {status} (not authorised{hint})", False)
        return CloudError(f"{self.url}: HTTP {status}: {detail}", status >= 500 or status in (408, 429))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random, capped."""
        base = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return base / 2 + random.uniform(0.0, base / 2)


def _safe(value: object, token: str, limit: int = 200) -> str:
    """``value`` as text with the token and any bearer credential masked, then cut to ``limit``."""
    text = str(value).replace(token, "***") if token else str(value)
    return redact(text)[:limit]


# --------------------------------------------------------------------------------------------- escalator
class Escalator:
    """Non-blocking escalation: persist first, send from a worker thread, hand out answers by ``poll``.

    Outbox retries after a failed request: ``min(retry_max_s, retry_base_s * 2**(attempts - 1))`` with
    jitter; an item is given up after ``max_attempts`` failures, on a non-retryable error (e.g. HTTP 401),
    or when older than ``expire_after_s`` (advice about a state long past is no longer useful).
    Items still pending when an Escalator starts are sent at once.
    """

    def __init__(self, config: LlmConfig, outbox_path: Path | str, *,
                 client: CloudClient | None = None, retry_base_s: float = 2.0, retry_max_s: float = 60.0,
                 max_attempts: int = 10,
                 expire_after_s: float = 900.0, idle_poll_s: float = 1.0) -> None:
        """Raises: ValueError: bad cloud settings (see ``CloudClient``); OutboxError: unusable outbox file."""
        self._client = client or CloudClient(config.cloud_url, config.cloud_model, config.cloud_api_key_env,
                                             config.cloud_timeout, config.cloud_max_retries)
        self._outbox = Outbox(Path(outbox_path))
        self.retry_base_s, self.retry_max_s, self.max_attempts = retry_base_s, retry_max_s, max_attempts
        self.expire_after_s, self.idle_poll_s = expire_after_s, idle_poll_s
        self._answers: queue.SimpleQueue[InterventionDecision] = queue.SimpleQueue()
        self._wake, self._stop, self._force = threading.Event(), threading.Event(), threading.Event()
        self._force.set()  # resend everything pending from an earlier run at once
        self._busy = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cloud-escalation", daemon=True)
        self._thread.start()

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    def submit(self, features: FatigueFeatures, local: InterventionDecision) -> str:
        """Persist an escalation and return its outbox id at once (the network is never waited for).

        Raises:
            OutboxError: the outbox could not be written.
        """
        item_id = self._outbox.enqueue(ESCALATION_KIND, build_escalation_payload(features, local))
        self._wake.set()
        return item_id

    def poll(self) -> list[InterventionDecision]:
        """Cloud follow-up decisions that arrived since the last call."""
        answers = []
        while True:
            try:
                answers.append(self._answers.get_nowait())
            except queue.Empty:
                return answers

    def flush(self, timeout: float) -> bool:
        """Try to deliver everything pending now (backoff waits are skipped once); True when none is left."""
        deadline = time.monotonic() + timeout
        self._force.set()
        self._wake.set()
        while time.monotonic() < deadline:
            with self._busy:
                if self._outbox.pending_count() == 0:
                    return True
            time.sleep(0.02)
        with self._busy:
            return self._outbox.pending_count() == 0

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker (pending items stay in the outbox for the next start) and close everything."""
        self._stop.set()
        self._wake.set()
        self._client.abort()
        self._thread.join(self._client.timeout + 1.0 if timeout is None else timeout)
        if self._thread.is_alive():
            log.warning("cloud worker still busy at close; its request is abandoned (kept in the outbox)")
        self._client.close()
        with self._busy:
            self._outbox.close()

    # ----------------------------------------------------------------------------------------- worker
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._deliver_due()
                next_due = self._outbox.next_due_s()
            except Exception:  # noqa: BLE001 - the worker must survive a bad item or a full disk
                log.exception("cloud escalation worker error")
                next_due = None
            wait = self.idle_poll_s if next_due is None else next_due - time.time()
            self._wake.wait(min(max(wait, 0.0), self.idle_poll_s))

    def _deliver_due(self) -> None:
        force = self._force.is_set()
        self._force.clear()
        for item in self._outbox.due(math.inf if force else time.time()):
            if self._stop.is_set():
                return
            self._deliver(item)

    def _deliver(self, item: OutboxItem) -> None:
        age = time.time() - item.created_s
        if item.kind != ESCALATION_KIND:
            self._outbox.mark_dead(item.id, f"unknown outbox kind {item.kind!r}")
            return
        if age > self.expire_after_s:
            log.warning("escalation %s expired after %.0f s without an answer", item.id, age)
            self._outbox.mark_dead(item.id, f"expired after {age:.0f} s")
            return
        try:
            reply = self._client.decide(item.payload)
            decision = follow_up_decision(reply.answer, item.payload, (time.time() - item.created_s) * 1000.0)
        except CloudError as error:
            self._failed(item, error)
            return
        except Exception as error:  # noqa: BLE001 - e.g. a payload from an older version: retry, then give up
            self._failed(item, CloudError(f"unexpected error: {error!r}", retryable=True))
            return
        with self._busy:  # flush() sees the item sent only once its answer is in the queue
            self._outbox.mark_sent(item.id, {**reply.answer, "model": reply.model,
                                             "response_format": reply.response_format})
            self._answers.put(decision)
        log.info("cloud follow-up for decision %s: %s/%s", decision.follows_id, decision.level.name,
                 decision.action)

    def _failed(self, item: OutboxItem, error: CloudError) -> None:
        attempts = item.attempts + 1
        if not error.retryable or attempts >= self.max_attempts:
            log.warning("escalation %s given up after %d attempt(s): %s", item.id, attempts, error)
            self._outbox.mark_dead(item.id, str(error))
            return
        delay = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
        delay = delay / 2 + random.uniform(0.0, delay / 2)
        log.info("escalation %s not delivered (%s); next try in %.1f s", item.id, error, delay)
        self._outbox.mark_failed(item.id, str(error), retry_at=time.time() + delay)
