"""Voice node: cabin audio (WAV file, input device or fatigue_msgs/AudioChunk topic) -> fatigue_msgs/VoiceFeatures.

Its own process, so the voice measures never take time from the camera path. Audio stays in this process:
only the per-block measures are published (on ``driver/voice``). ``source: ""`` (the default) is idle.
Thin: parameters -> AudioConfig, messages <-> dataclasses, the core (VoiceAnalyzer) does the work.
"""

from __future__ import annotations

import threading
import time

from fatigue_msgs.msg import AudioChunk, VoiceFeatures
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm.audio.analyzer import VoiceAnalyzer
from fatigue_llm.audio.config import VOICE_TOPIC, AudioConfig
from fatigue_llm.audio.messages import chunk_to_samples, voice_to_msg
from fatigue_llm.audio.sources import AudioSourceError, DeviceSource, WavSource
from fatigue_llm.audio.types import AudioError, VoiceMeasure
from fatigue_llm.diagnostics import ERROR, WARN, Counters, HealthReport, changes, summarize
from fatigue_llm.ros.diagnostics import DiagnosticsPublisher
from fatigue_llm.ros.params import declare_config
from fatigue_llm.ros.runner import run_node

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# A stream, best effort like a camera (matches reliable and best-effort publishers), but deep: 10 s of 0.1 s
# chunks queue up while a block is being measured; a chunk lost all the same is a gap that closes a block.
AUDIO_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
NO_AUDIO_WARN_S = 2.0  # audio arrives every chunk_duration (0.1 s): 2 s of none is a stalled microphone


class AudioNode(LifecycleNode):
    def __init__(self, **node_options) -> None:
        super().__init__("audio", **node_options)
        self.counters = Counters("chunks_received", "chunks_rejected", "blocks_published", "blocks_scored")
        self._last_counts = self.counters.snapshot()
        self._last_chunk: float | None = None
        self._active_since: float | None = None
        self._source_error: str | None = None
        self._input_ended = False
        self._last_reason = ""
        self._analyzer: VoiceAnalyzer | None = None
        self._lock = threading.Lock()  # the player thread and executor callbacks share the analyzer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._audio_sub = None
        self.declare_parameter("autostart", True)
        self.config: AudioConfig = declare_config(self, AudioConfig)
        self.diagnostics = DiagnosticsPublisher(self, self.health)

    # --- lifecycle -------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            if self.config.source == "file":
                WavSource(self.config.wav_path).close()  # fail now, naming the file
        except AudioSourceError as error:
            self.get_logger().error(f"cannot configure the voice node: {error}")
            self._source_error = str(error)
            return TransitionCallbackReturn.FAILURE
        self._source_error = None
        self._analyzer = VoiceAnalyzer(self.config)
        self._voice_pub = self.create_lifecycle_publisher(VoiceFeatures, VOICE_TOPIC, RELIABLE)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._stop.clear()
        self._active_since, self._input_ended = time.monotonic(), False
        source = self.config.source
        if source in ("file", "device"):
            target = self._play_file if source == "file" else self._read_device
            self._thread = threading.Thread(target=target, name=f"audio-{source}", daemon=True)
            self._thread.start()
        elif source == "topic":
            self._audio_sub = self.create_subscription(AudioChunk, self.config.audio_topic, self._on_chunk,
                                                       AUDIO_QOS)
            self.get_logger().info(f"listening for audio on {self._audio_sub.topic_name}")
        else:
            self.get_logger().info("no audio source (source: ''): idle, voice_quality stays NaN")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._active_since = None
        return super().on_deactivate(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._active_since = None
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        self._stop_inputs()
        super().destroy_node()

    def _stop_inputs(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._audio_sub is not None:
            self.destroy_subscription(self._audio_sub)
            self._audio_sub = None

    # --- inputs --------------------------------------------------------------------------------------------
    def _clock_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _play_file(self) -> None:
        """Play the WAV in (scaled) real time; stamps = clock at activation + media time."""
        rate = self.config.playback_rate
        wall_start, clock_start = time.monotonic(), self._clock_s()
        offset = 0.0
        while not self._stop.is_set():
            try:
                with WavSource(self.config.wav_path, self.config.chunk_duration) as source:
                    self._source_error = None
                    for media_t, samples, sample_rate in source:
                        t = offset + media_t
                        if rate > 0:
                            delay = wall_start + (t + len(samples) / sample_rate) / rate - time.monotonic()
                            if delay > 0 and self._stop.wait(delay):
                                return
                        elif self._stop.is_set():
                            return
                        self._add(samples, sample_rate, clock_start + t)
                    if source.truncated:
                        self.get_logger().warning(f"{source.path}: ended after {source.read_frames} of "
                                                  f"{source.frames} frames (file truncated)")
                    offset += source.read_frames / source.sample_rate
            except AudioSourceError as error:
                self.get_logger().error(str(error))
                self._source_error = str(error)
                return
            self._flush()
            if not self.config.loop:
                self.get_logger().info(f"end of {self.config.wav_path}")
                self._input_ended = True
                return
            offset += 0.5  # a gap between loops: the next pass starts a new block

    def _read_device(self) -> None:
        try:
            with DeviceSource(self.config.device, self.config.device_sample_rate,
                              self.config.chunk_duration) as source:
                self._source_error = None
                clock_start = self._clock_s()
                for media_t, samples, sample_rate in source:
                    if self._stop.is_set():
                        return
                    self._add(samples, sample_rate, clock_start + media_t)
        except AudioSourceError as error:
            self.get_logger().error(str(error))
            self._source_error = str(error)

    def _on_chunk(self, msg: AudioChunk) -> None:
        try:
            stamp, samples, sample_rate = chunk_to_samples(msg)
        except AudioError as error:
            self._reject(f"audio chunk from {self.config.audio_topic}: {error}")
            return
        self._add(samples, sample_rate, stamp)

    def _add(self, samples, sample_rate: int, stamp_s: float) -> None:
        self.counters.increment("chunks_received")
        self._last_chunk = time.monotonic()
        with self._lock:
            if self._analyzer is None:
                return
            try:
                measures = self._analyzer.add(samples, sample_rate, stamp_s)
            except AudioError as error:
                self._reject(str(error))
                return
            except Exception as error:  # noqa: BLE001 - a node never dies on one chunk
                self._reject(f"unexpected error measuring audio: {error!r}")
                return
        self._publish(measures)

    def _flush(self) -> None:
        with self._lock:
            measures = self._analyzer.flush() if self._analyzer is not None else []
        self._publish(measures)

    def _publish(self, measures: list[VoiceMeasure]) -> None:
        for measure in measures:
            self._voice_pub.publish(voice_to_msg(measure))
            self.counters.increment("blocks_published")
            if measure.reason:
                self._last_reason = measure.reason
            else:
                self.counters.increment("blocks_scored")

    def _reject(self, reason: str) -> None:
        count = self.counters.increment("chunks_rejected")
        self.get_logger().warning(f"rejected audio ({count} so far): {reason}", throttle_duration_sec=5.0)

    # --- health --------------------------------------------------------------------------------------------
    def health(self) -> HealthReport:
        """ERROR when the source failed; WARN for a stalled input or rejected chunks. Idle without a source."""
        counts = self.counters.snapshot()
        recent = changes(counts, self._last_counts)
        self._last_counts = counts
        now = time.monotonic()
        problems = []
        if self._source_error:
            problems.append((ERROR, f"audio {self.config.source} source failed: {self._source_error}"))
        elif self.config.source and self._active_since is not None and not self._input_ended:
            waiting_s = now - max(self._active_since, self._last_chunk or self._active_since)
            if waiting_s > NO_AUDIO_WARN_S:
                problems.append((WARN, f"no audio for {waiting_s:.1f} s"))
        if recent["chunks_rejected"]:
            problems.append((WARN, f"{recent['chunks_rejected']} audio chunks rejected in the last period"))
        baseline = self._analyzer.baseline if self._analyzer is not None else None
        values = {
            "source": self.config.source or "none",
            **counts,
            "baseline_ready": bool(baseline and baseline.ready),
            "baseline_voiced_s": baseline.voiced if baseline else 0.0,
            "last_reason": self._last_reason,
            "last_chunk_age_s": now - self._last_chunk if self._last_chunk is not None else float("nan"),
        }
        if not self.config.source:
            ok = "idle: no audio source"
        else:
            ok = "end of input" if self._input_ended else "listening" if self._active_since else "inactive"
        return summarize(problems, values, ok_message=ok)


def main(args: list[str] | None = None) -> int:
    return run_node(AudioNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
