"""The voice node with real rclpy: a WAV of real synthesised speech played by the audio node in its own
process, the feature processor filling voice_quality from driver/voice; the topic source; bad chunks."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fatigue_msgs.msg import AudioChunk, FatigueFeatures, VoiceFeatures
from rclpy.qos import QoSProfile, ReliabilityPolicy

from fatigue_llm.audio import synth
from fatigue_llm.audio.messages import samples_to_chunk
from fatigue_llm.audio.node import AUDIO_QOS, AudioNode
from fatigue_llm.audio.pcm import to_analysis_rate
from fatigue_llm.features.node import FeatureProcessorNode
from fatigue_llm.ros.runner import autostart

from .helpers import wait_for, wait_for_subscribers

NO_ESPEAK = "espeak-ng is not installed (scripts/install_system_deps.sh)"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not synth.espeak_available(), reason=NO_ESPEAK)]
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def drive_speech(tmp_path_factory) -> tuple[np.ndarray, int]:
    """The driver's usual speech: eight sentences at 160 words per minute (~38 s), 16 kHz."""
    folder = tmp_path_factory.mktemp("speech")
    parts = []
    for i, text in enumerate(synth.SENTENCES):
        samples, rate = synth.read_wav(synth.speak(folder / f"s{i}.wav", text))
        parts += [samples, synth.pause(0.4, rate)]
    return to_analysis_rate(np.concatenate(parts), rate), 16000


def test_audio_process_plays_a_wav_and_the_feature_processor_fills_voice_quality(graph, drive_speech, tmp_path):
    samples, rate = drive_speech
    wav = synth.write_wav(tmp_path / "cabin.wav", samples, rate)
    graph.add(FeatureProcessorNode, publish_period=0.2)
    probe = graph.probe()
    voices: list[VoiceFeatures] = []
    features: list[FatigueFeatures] = []
    probe.create_subscription(VoiceFeatures, "driver/voice", voices.append, RELIABLE)
    probe.create_subscription(FatigueFeatures, "fatigue/features", features.append, RELIABLE)
    process = subprocess.Popen([sys.executable, "-m", "fatigue_llm.audio.node", "--ros-args",
                                "-p", "source:=file", "-p", f"wav_path:={wav}", "-p", "playback_rate:=4.0",
                                "-p", "loop:=true", "-p", "baseline_voiced:=10.0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # ~38 s of audio at 4x, looped: a 5 s block every 1.25 s; the first ones learn the baseline (blocks
        # published before discovery matched the probe are not seen: the stream is volatile)
        def scored_blocks() -> int:
            return sum(math.isfinite(v.voice_quality) for v in voices)

        assert wait_for(lambda: scored_blocks() >= 3, timeout=40.0), ([v.reason for v in voices], process.poll())
        assert wait_for(lambda: any(math.isfinite(f.voice_quality) for f in features), timeout=5.0)
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=15)[0]
    assert process.returncode == 0, output
    scored = [v for v in voices if math.isfinite(v.voice_quality)]
    assert all(v.reason.startswith("learning") for v in voices[:voices.index(scored[0])])
    assert all(v.baseline_ready and 0.7 < v.voice_quality <= 1.0 for v in scored)  # the same voice as the baseline
    assert all(0.7 < v.speech_fraction <= 1.0 and 60 < v.f0_mean < 200 for v in scored)
    latest = [f.voice_quality for f in features if math.isfinite(f.voice_quality)][-1]
    assert 0.7 < latest <= 1.0


def test_topic_source_measures_good_chunks_and_survives_bad_ones(graph, drive_speech):
    samples, rate = drive_speech
    node = graph.add(AudioNode, autostart=False, source="topic", audio_topic="audio/cabin", baseline_voiced=5.0)
    assert autostart(node)
    probe = graph.probe()
    voices: list[VoiceFeatures] = []
    probe.create_subscription(VoiceFeatures, "driver/voice", voices.append, RELIABLE)
    publisher = probe.create_publisher(AudioChunk, "audio/cabin", AUDIO_QOS)
    wait_for_subscribers(publisher)
    bad = samples_to_chunk(samples[:1600], rate, 0.0)
    bad.info.coding_format = "mp3"
    publisher.publish(bad)
    low = samples_to_chunk(samples[:400], 4000, 0.0)  # a telephone-band microphone below 8 kHz
    publisher.publish(low)
    assert wait_for(lambda: node.counters.get("chunks_rejected") == 2, timeout=5.0)
    step = 1600
    for i, start in enumerate(range(0, 16 * rate, step)):  # 16 s, stamped from 1000 s
        publisher.publish(samples_to_chunk(samples[start:start + step], rate, 1000.0 + i * 0.1))
        time.sleep(0.01)  # 10x real time
    assert wait_for(lambda: len(voices) >= 3, timeout=20.0), (len(voices), node.counters.snapshot())
    assert voices[0].header.stamp.sec == 1005  # block end, from the chunks' own stamps
    assert any(math.isfinite(v.voice_quality) for v in voices), [v.reason for v in voices]
    health = node.health()
    assert health.values["chunks_rejected"] == 2 and health.values["baseline_ready"] is True


def test_idle_audio_node_publishes_nothing_and_reports_idle(graph):
    node = graph.add(AudioNode, autostart=False)
    assert autostart(node)
    probe = graph.probe()
    voices: list[VoiceFeatures] = []
    probe.create_subscription(VoiceFeatures, "driver/voice", voices.append, RELIABLE)
    assert not wait_for(lambda: bool(voices), timeout=1.0)
    health = node.health()
    assert health.level == "OK" and health.message == "idle: no audio source"
