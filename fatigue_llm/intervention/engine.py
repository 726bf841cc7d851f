"""The on-device intervention engine: rule level in, explained LLM advice out.

For one rule decision (from ``policy.AlertPolicy``) the engine

1. embeds the features (``projector.retrieval_key``) and retrieves the k most similar past cases;
2. builds the prompt (fixed system prompt, cached KV; features, rule level and cases as the user turn;
   with a trained feature projector its virtual tokens replace the feature text, see ``_projector``);
3. generates a JSON answer under the schema (levels below the rule level are not even expressible)
   within ``generation_deadline``; on timeout, backend failure or an invalid answer the rule's own
   catalogue message stands (source "rule");
4. turns the model's token log-probabilities of its level and action into a confidence, and triage
   combines it with the agreement of the retrieved cases; low confidence or CRITICAL escalates the case
   to the cloud (non-blocking outbox) when the cloud is enabled;
5. stores the decision as a new case and watches the next ``effectiveness_window`` seconds of features
   to score how well it worked (``observe``), which re-ranks future retrievals.

``load`` does the heavy work (model, index, outbox) and is called from the lifecycle node's
``on_configure``; ``advise`` blocks and is called from a worker thread; ``observe`` and
``poll_followups`` come from the executor thread. One lock serialises the case memory.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.backends import Backend, create_backend
from fatigue_llm.intervention.backends.base import BackendError, Generation, GenerationTimeout
from fatigue_llm.intervention.config import InterventionConfig
from fatigue_llm.intervention.projector import FEATURE_NAMES, FeatureProjector, key_deviations, retrieval_key
from fatigue_llm.intervention.prompt import (
    FEATURE_FORMAT,
    USER_BUDGET_TOKENS,
    AnswerError,
    ParsedAnswer,
    answer_schema,
    build_messages,
    complete_truncated,
    parse_answer,
    partial_message,
    speaks_to_driver,
    system_prompt,
    trim_message,
    value_spans,
)
from fatigue_llm.intervention.types import ACTIONS, InterventionDecision, Level, Source
from fatigue_llm.llm.config import LlmConfig

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("models")
PROJECTOR_FILE = "projector.safetensors"
SEED_CSV = Path(__file__).parent / "data" / "seed_cases.csv"
PROMPT_MARGIN_TOKENS = 16
NEW_CASE_EFFECTIVENESS = 0.5  # prior of a new case until its effect is measured
LABELS = {name: label for name, label, _, _ in FEATURE_FORMAT}


def _message_listener(on_message: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Turns the backend's growing JSON answer into growing driver-message text (each change once)."""
    if on_message is None:
        return None
    last = [""]

    def on_text(answer_so_far: str) -> None:
        message = partial_message(answer_so_far)
        if message and message != last[0]:
            last[0] = message
            on_message(message)

    return on_text


class EngineError(RuntimeError):
    """The engine is not loaded or was closed."""


def decision_confidence(generation: Generation) -> float:
    """Model confidence from the log-probabilities of the tokens spelling the level and action values
    (the decision itself; format tokens forced by the grammar carry no information). Template
    decoding reports each choice's probability among the allowed values (1.0 when the rule left no
    choice); otherwise the tokens inside the values are located in the text, and all generated
    tokens are used when that fails."""
    from fatigue_llm.intervention.triage import token_confidence

    if generation.choice_logprobs is not None:
        return token_confidence(list(generation.choice_logprobs)) if generation.choice_logprobs else 1.0
    spans = value_spans(generation.text)
    chosen, offset = [], 0
    for piece, logprob in zip(generation.token_pieces, generation.token_logprobs, strict=False):
        start, offset = offset, offset + len(piece)
        if any(start < end and offset > begin for begin, end in spans):
            chosen.append(logprob)
    return token_confidence(chosen or list(generation.token_logprobs))


@dataclass
class _Parts:
    backend: Backend
    store: object
    tracker: object
    escalator: object | None
    projector: FeatureProjector | None


class InterventionEngine:
    """See the module docstring. ``backend``, ``store`` and ``escalator`` may be injected (tests)."""

    def __init__(self, config: LlmConfig, *, backend: Backend | None = None, store=None,
                 escalator=None, state_dir: Path | None = None) -> None:
        config.validate()
        self.config = config
        self.state_dir = Path(state_dir) if state_dir is not None else DEFAULT_STATE_DIR
        self._injected = (backend, store, escalator)
        self._parts: _Parts | None = None
        self._lock = threading.Lock()
        self.max_message_chars = config.max_message_chars
        self.system = system_prompt(self.max_message_chars)
        self.prefix_tokens_cached = 0
        self.last_failure = ""  # why the last advise fell back to the rule message ("" = it did not)

    # --- lifecycle ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model, open (and seed) the case store and the cloud outbox, cache the prompt prefix.

        Raises ModelError / BackendError (model), CaseStoreError / SeedFormatError (case store),
        ValueError / OutboxError (cloud settings or outbox).
        """
        from fatigue_llm.intervention.effectiveness import EffectivenessTracker

        backend, store, escalator = self._injected
        opened: list = []  # closed again, newest first, when a later step fails
        try:
            backend = backend or create_backend(self.config)
            opened.append(backend)
            store = store or self._open_store()
            opened.append(store)
            if escalator is None and self.config.cloud_enabled:
                from fatigue_llm.intervention.cloud import Escalator

                escalator = Escalator(self.config, self._path(self.config.outbox_path, "outbox.sqlite3"))
                opened.append(escalator)
            projector = self._projector(backend)
            self.prefix_tokens_cached = backend.cache_prefix([{"role": "system", "content": self.system}])
        except BaseException:
            for part in reversed(opened):
                part.close()
            raise
        tracker = EffectivenessTracker(self.config.effectiveness_window)
        self._parts = _Parts(backend, store, tracker, escalator, projector)

    def _path(self, configured: str, default_name: str) -> Path:
        return Path(configured) if configured else self.state_dir / default_name

    def _open_store(self):
        from fatigue_llm.intervention.casestore import CaseStore

        folder = self._path(self.config.case_store_path, "case_store")
        store = CaseStore.open(folder, dim=len(FEATURE_NAMES) + 1, hnsw_threshold=self.config.hnsw_threshold)
        try:
            if len(store) == 0:
                seed = Path(self.config.seed_cases_csv) if self.config.seed_cases_csv else SEED_CSV
                added = store.seed_from_csv(seed, embed=retrieval_key)
                store.save()
                log.info("case store seeded with %d cases from %s", added, seed)
        except BaseException:
            store.close(save=False)
            raise
        return store

    def projector_file(self, backend: Backend | None = None) -> Path | None:
        """The trained projector the engine uses: ``projector_path`` when set (BackendError when missing),
        else ``projector.safetensors`` beside the LoRA adapter the backend applies (``lora_path``: in its
        folder, or beside the GGUF LoRA file), else beside the model. None when there is none."""
        from fatigue_llm.intervention.models import NO_ADAPTER, resolve_model

        if self.config.projector_path:
            weights = Path(self.config.projector_path)
            if not weights.is_file():
                raise BackendError(f"projector_path {weights} does not exist")
            return weights
        folders = []
        lora = getattr(backend, "lora_path", None) or (
            self.config.lora_path if self.config.lora_path not in ("", NO_ADAPTER) else None)
        if lora:
            lora = Path(lora)
            folders.append(lora if lora.is_dir() else lora.parent)
        source = resolve_model(self.config.model_path)
        folders.append(source.path if source.path.is_dir() else source.path.parent)
        for folder in folders:
            if (folder / PROJECTOR_FILE).is_file():
                return folder / PROJECTOR_FILE
        return None

    def _projector(self, backend: Backend) -> FeatureProjector | None:
        """The trained soft-prompt projector (``projector_file``), for backends that take a soft prompt.

        With it, the prompt is built in soft-prompt mode: the feature text is left out and the
        projector's ``prefix_tokens`` virtual tokens stand in its place (as in training with
        ``projector.enabled``). An untrained projector would only add noise to the prompt, so without
        a trained ``projector.safetensors`` the soft prompt is off and the feature text is used.
        """
        if not backend.supports_soft_prompt or self.config.prefix_tokens <= 0:
            return None
        weights = self.projector_file(backend)
        if weights is None:
            log.info("no trained projector beside the adapter or the model: soft prompt off")
            return None
        projector = FeatureProjector.load(weights)
        if (error := projector.layout_error(weights)) is not None:
            raise BackendError(error)
        if projector.hidden_size != backend.hidden_size or projector.n_tokens != self.config.prefix_tokens:
            raise BackendError(f"{weights}: projector {projector.n_tokens}x{projector.hidden_size} does not "
                               f"fit prefix_tokens={self.config.prefix_tokens}, hidden={backend.hidden_size}")
        return projector

    def close(self) -> None:
        """Close the model, the case store (saved) and the outbox. Safe to call twice."""
        parts, self._parts = self._parts, None
        if parts is None:
            return
        if parts.escalator is not None:
            parts.escalator.close()
        with self._lock:
            parts.store.close()
        parts.backend.close()

    @property
    def escalator(self):
        """The cloud escalator (its ``outbox``), or None when the cloud is off or not loaded."""
        return self._parts.escalator if self._parts is not None else None

    @property
    def loaded(self) -> bool:
        return self._parts is not None

    def _require(self) -> _Parts:
        if self._parts is None:
            raise EngineError("the intervention engine is not loaded (call load())")
        return self._parts

    # --- advice ------------------------------------------------------------------------------------
    def advise(self, features: FatigueFeatures, rule: InterventionDecision,
               on_message: Callable[[str], None] | None = None) -> InterventionDecision:
        """The engine's decision for ``rule`` (blocking; at most about ``generation_deadline`` s).

        ``on_message`` receives the driver message as the model writes it (each time it grows).
        Never raises for model problems: those give the rule's catalogue message (source "rule");
        the returned decision's explanation says why. Raises EngineError when not loaded.
        """
        parts = self._require()
        started = time.perf_counter()
        key = retrieval_key(features)
        with self._lock:
            k = self.config.retrieval_k
            retrieved = parts.store.search(key, k) if k > 0 else []
        answer, generation, failure = self._generate(parts, features, rule, retrieved, on_message)
        self.last_failure = failure
        self.last_generation = generation  # how it was produced (tokens/s for replay evaluation); None on failure
        if answer is None:
            decision = self._fallback(rule, failure, started)
        else:
            decision = self._llm_decision(parts, features, rule, retrieved, answer, generation, started)
        with self._lock:
            case_id = parts.store.add(self._case(features, key, decision))
            parts.store.save()
            parts.tracker.start(case_id, decision, features)
        return decision

    def request_messages(self, features: FatigueFeatures, rule: InterventionDecision, retrieved: list
                         ) -> list[dict[str, str]]:
        """The chat messages the model gets for one request (what fine-tuning renders its examples with)."""
        parts = self._require()
        config = self.config
        room = config.n_ctx - config.max_new_tokens - self.prefix_tokens_cached - PROMPT_MARGIN_TOKENS
        budget = min(USER_BUDGET_TOKENS, room)  # the user message is evaluated on every request
        return build_messages(features, rule, retrieved, system=self.system,
                              count_tokens=parts.backend.count_tokens, budget_tokens=budget,
                              soft_prompt=parts.projector is not None)

    def _generate(self, parts: _Parts, features: FatigueFeatures, rule: InterventionDecision, retrieved: list,
                  on_message: Callable[[str], None] | None = None
                  ) -> tuple[ParsedAnswer | None, Generation | None, str]:
        messages = self.request_messages(features, rule, retrieved)
        soft = parts.projector.soft_prompt(features) if parts.projector is not None else None
        try:
            generation = parts.backend.generate(
                messages, self.config.max_new_tokens, self.config.generation_deadline,
                json_schema=answer_schema(rule.level, self.max_message_chars), prefix_embeds=soft,
                on_text=_message_listener(on_message))
            text = generation.text
            if generation.finish_reason == "length":
                text = complete_truncated(text)
            answer = parse_answer(text, min_level=rule.level, max_message_chars=self.max_message_chars)
        except GenerationTimeout as error:
            return None, None, f"timeout: {error}"
        except BackendError as error:
            log.warning("on-device model failed: %s", error)
            return None, None, f"model error: {error}"
        except AnswerError as error:
            return None, generation, f"invalid answer: {error}"
        return answer, generation, ""

    def _fallback(self, rule: InterventionDecision, failure: str, started: float) -> InterventionDecision:
        return InterventionDecision(
            level=rule.level, action=rule.action, message=ACTIONS[rule.action], source=Source.RULE,
            confidence=rule.confidence, escalated=False,
            explanation=(f"on-device model unavailable ({failure[:160]}); rule decision stands. "
                         f"{rule.explanation}"),
            latency_ms=(time.perf_counter() - started) * 1000.0, follows_id=rule.id,
            timestamp_s=rule.timestamp_s,
        )

    def _llm_decision(self, parts: _Parts, features: FatigueFeatures, rule: InterventionDecision,
                      retrieved: list, answer: ParsedAnswer, generation: Generation,
                      started: float) -> InterventionDecision:
        from fatigue_llm.intervention.triage import triage

        message = answer.message
        if generation.finish_reason in ("length", "repeat") or len(message) >= self.max_message_chars - 1:
            message = trim_message(message)  # cut by a budget: end it at a sentence or word
        replaced = not speaks_to_driver(message)
        if replaced:  # keep the model's level/action, say it in words the driver understands
            message = ACTIONS[answer.action]
        token_conf = decision_confidence(generation)
        threshold = self.config.escalation_confidence
        verdict = triage(token_conf, retrieved, answer.level, answer.action, threshold)
        draft = InterventionDecision(
            level=answer.level, action=answer.action, message=message, source=Source.LOCAL_LLM,
            confidence=round(verdict.confidence, 4), follows_id=rule.id, timestamp_s=rule.timestamp_s,
        )
        escalated = False
        if verdict.escalate and parts.escalator is not None:
            parts.escalator.submit(features, draft)
            escalated = True
        explanation = self._explain(features, rule, retrieved, token_conf, verdict, escalated)
        if replaced:
            explanation += ". model message echoed codes or measurements: catalogue text for its action used"
        return InterventionDecision(
            level=draft.level, action=draft.action, message=draft.message, source=draft.source,
            confidence=draft.confidence, escalated=escalated, explanation=explanation,
            latency_ms=(time.perf_counter() - started) * 1000.0, id=draft.id, follows_id=draft.follows_id,
            timestamp_s=draft.timestamp_s,
        )

    def _explain(self, features: FatigueFeatures, rule: InterventionDecision, retrieved: list,
                 token_conf: float, verdict, escalated: bool) -> str:
        data = features.to_dict()
        keys = [f"{LABELS.get(name, name)} {data[name]:.3g}" for name, _ in key_deviations(features)]
        cases = [f"#{hit.case.case_id} ({hit.similarity:.2f}, {hit.case.action})" for hit in retrieved]
        parts = [
            f"key features: {', '.join(keys) or 'none far from alert'}",
            f"rule level {rule.level.name}",
            f"similar cases: {', '.join(cases) or 'none'}",
            f"confidence {verdict.confidence:.2f} (decision tokens {token_conf:.2f})",
        ]
        if verdict.reasons:
            parts.append("triage: " + "; ".join(verdict.reasons))
        if verdict.escalate:
            parts.append("escalated to the cloud" if escalated else "escalation wanted, cloud disabled")
        if self._parts is not None:
            parts.append(f"model {self._parts.backend.label}")
        return ". ".join(parts)

    @staticmethod
    def _case(features: FatigueFeatures, key, decision: InterventionDecision):
        from fatigue_llm.intervention.casestore import Case

        values = {name: float(value) for name, value in features.to_dict().items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
        timestamp = decision.timestamp_s if math.isfinite(decision.timestamp_s) else time.time()
        return Case(features=values, embedding=key, intervention=decision.message, action=decision.action,
                    level=int(decision.level), effectiveness=NEW_CASE_EFFECTIVENESS, driver_id="",
                    timestamp_s=timestamp)

    # --- closed loop -------------------------------------------------------------------------------
    def observe(self, features: FatigueFeatures) -> list[tuple[int, float]]:
        """Feed every new feature vector; scores interventions whose window has passed and records
        their effectiveness in the case store. Returns the (case_id, effectiveness) recorded."""
        parts = self._parts
        if parts is None:
            return []
        with self._lock:
            scored = parts.tracker.observe(features)
            for case_id, value in scored:
                parts.store.record_effectiveness(case_id, value)
            if scored:
                parts.store.save()
        return scored

    def poll_followups(self) -> list[InterventionDecision]:
        """Cloud answers to earlier escalations (source "cloud", ``follows_id`` set)."""
        parts = self._parts
        if parts is None or parts.escalator is None:
            return []
        return parts.escalator.poll()


def rule_decision_for(features: FatigueFeatures, config: InterventionConfig, now_s: float | None = None
                      ) -> InterventionDecision:
    """The rule decision for one feature vector without cooldown; INFO / "none" when no rule fires."""
    from fatigue_llm.intervention.policy import AlertPolicy, assess

    now = features.timestamp_s if now_s is None else now_s
    now = now if math.isfinite(now) else time.time()
    decision = AlertPolicy(config).evaluate(features, now)
    if decision is not None:
        return decision
    _, reasons = assess(features, config)
    return InterventionDecision(level=Level.INFO, action="none", message=ACTIONS["none"], source=Source.RULE,
                                confidence=1.0, timestamp_s=now,
                                explanation="rule: " + ("; ".join(reasons) or "no sign of fatigue"))
