"""The driver's voice: real synthesised speech (espeak-ng) -> VAD -> Praat measures -> voice_quality.

voice_quality must move with the speech's rate and pitch range against the driver's own baseline, and be
NaN (with a reason), never 0, for silence, cabin noise and audio that cannot be measured.
"""

from __future__ import annotations

import math
import wave

import numpy as np
import pytest

from fatigue_llm.audio import synth
from fatigue_llm.audio.analyzer import VoiceAnalyzer, analyse, chunked
from fatigue_llm.audio.config import AudioConfig
from fatigue_llm.audio.pcm import decode_pcm, to_analysis_rate
from fatigue_llm.audio.quality import VoiceBaseline, sleepy_deviation
from fatigue_llm.audio.sources import AudioSourceError, DeviceSource, WavSource
from fatigue_llm.audio.types import AudioError, VoiceMeasure
from fatigue_llm.config import ConfigError
from fatigue_llm.features.config import FeatureConfig
from fatigue_llm.features.window import FeatureWindow, FeatureWindowError

needs_espeak = pytest.mark.skipif(not synth.espeak_available(),
                                  reason="espeak-ng is not installed (scripts/install_system_deps.sh)")
BASELINE, OTHER = synth.SENTENCES[:4], synth.SENTENCES[4:]


class Speech:
    """espeak-ng recordings of a few sentences, cached per speaking style, 0.4 s pauses between sentences."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self._cache: dict = {}

    def __call__(self, sentences=OTHER, **style) -> tuple[np.ndarray, int]:
        key = (tuple(sentences), tuple(sorted(style.items())))
        if key not in self._cache:
            parts, rate = [], 22050
            for i, text in enumerate(sentences):
                name = f"{abs(hash(key))}_{i}.wav"
                samples, rate = synth.read_wav(synth.speak(self.folder / name, text, **style))
                parts += [samples, synth.pause(0.4, rate)]
            self._cache[key] = (np.concatenate(parts), rate)
        return self._cache[key]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Speech:
    if not synth.espeak_available():
        pytest.skip("espeak-ng is not installed (scripts/install_system_deps.sh)")
    return Speech(tmp_path_factory.mktemp("speech"))


def run(analyzer: VoiceAnalyzer, samples: np.ndarray, rate: int, at: float = 0.0) -> list[VoiceMeasure]:
    return analyse(chunked(samples, rate), analyzer=analyzer, offset_s=at)


def scored(measures: list[VoiceMeasure]) -> list[float]:
    return [m.voice_quality for m in measures if math.isfinite(m.voice_quality)]


@pytest.fixture(scope="module")
def trained(speech) -> tuple[VoiceAnalyzer, float]:
    """An analyzer whose baseline is the driver's normal speech (160 wpm, medium pitch range)."""
    analyzer = VoiceAnalyzer(AudioConfig(baseline_voiced=10.0))
    samples, rate = speech(BASELINE)
    run(analyzer, samples, rate)
    assert analyzer.baseline.ready
    return analyzer, len(samples) / rate + 1.0


def quality_of(trained, speech, **style) -> tuple[float, list[VoiceMeasure]]:
    """Mean voice_quality of the other sentences spoken in ``style``, against the trained baseline (a copy)."""
    analyzer, at = trained
    probe = VoiceAnalyzer(analyzer.config)
    probe.baseline = VoiceBaseline(analyzer.baseline.required_voiced, analyzer.baseline.voiced,
                                   dict(analyzer.baseline._sums), dict(analyzer.baseline._weights))
    measures = run(probe, *speech(OTHER, **style), at=at)
    values = scored(measures)
    assert len(values) >= 3, [m.reason for m in measures]
    return float(np.mean(values)), measures


# --- measures on real synthesised speech ---------------------------------------------------------------------
@needs_espeak
def test_speech_rate_follows_the_speaking_rate(speech):
    rates = {}
    for wpm in (110, 160, 220):
        measures = run(VoiceAnalyzer(), *speech(OTHER, words_per_minute=wpm))
        rates[wpm] = np.nanmean([m.speech_rate for m in measures])
    assert rates[110] < rates[160] < rates[220]
    assert rates[220] / rates[110] > 1.4, rates  # espeak's 2x in words per minute, less its fixed pauses
    assert 2.5 < rates[160] < 7.0  # syllables per second of conversational speech: ~3-6


@needs_espeak
def test_f0_variability_follows_the_pitch_range_and_f0_the_pitch(speech):
    spread = {r: np.nanmean([m.f0_std for m in run(VoiceAnalyzer(), *speech(OTHER, pitch_range=r))])
              for r in ("x-low", "medium", "x-high")}
    assert spread["x-low"] < 0.6 * spread["medium"] and spread["x-high"] > 1.4 * spread["medium"], spread
    low = np.nanmean([m.f0_mean for m in run(VoiceAnalyzer(), *speech(OTHER, pitch=20))])
    high = np.nanmean([m.f0_mean for m in run(VoiceAnalyzer(), *speech(OTHER, pitch=80))])
    assert high > 1.2 * low


@needs_espeak
def test_measures_are_in_physiological_ranges(speech):
    measures = run(VoiceAnalyzer(), *speech())
    for m in measures[:-1]:  # full blocks
        assert m.reason.startswith("learning") and not math.isfinite(m.voice_quality)
        assert 0.7 < m.speech_fraction <= 1.0
        assert 60 < m.f0_mean < 200 and 0.0 < m.jitter < 0.05 and 0.0 < m.shimmer < 0.4 and 3 < m.hnr < 30


# --- voice_quality against the driver's baseline -------------------------------------------------------------
@needs_espeak
def test_voice_quality_is_high_for_the_drivers_usual_speech(trained, speech):
    quality, _ = quality_of(trained, speech)
    assert quality > 0.8


@needs_espeak
def test_voice_quality_drops_with_slower_speech(trained, speech):
    normal, _ = quality_of(trained, speech)
    slow, measures = quality_of(trained, speech, words_per_minute=110)
    assert slow < normal - 0.3, (normal, slow)
    assert all(0.0 <= m.voice_quality <= 1.0 for m in measures if math.isfinite(m.voice_quality))


@needs_espeak
def test_voice_quality_drops_with_a_flatter_pitch_range_in_steps(trained, speech):
    normal, _ = quality_of(trained, speech)
    low, _ = quality_of(trained, speech, pitch_range="low")
    flat, _ = quality_of(trained, speech, pitch_range="x-low")
    assert normal > low > flat, (normal, low, flat)
    assert flat < 0.2


@needs_espeak
def test_slow_and_monotone_is_lowest_and_livelier_or_faster_is_not_sleepy(trained, speech):
    slow_flat, _ = quality_of(trained, speech, words_per_minute=110, pitch_range="x-low")
    slow, _ = quality_of(trained, speech, words_per_minute=110)
    lively, _ = quality_of(trained, speech, pitch_range="x-high")
    fast, _ = quality_of(trained, speech, words_per_minute=220)
    assert slow_flat < slow and slow_flat < 0.2
    assert lively > 0.8 and fast > 0.7  # only the sleepy direction counts


@needs_espeak
def test_speech_in_cabin_noise_is_still_measured(trained, speech):
    samples, rate = speech()
    x = to_analysis_rate(samples, rate)
    noisy = x + synth.cabin_noise(len(x) / 16000, 16000, level=0.01)  # ~15 dB SNR
    analyzer, at = trained
    probe = VoiceAnalyzer(analyzer.config)
    probe.baseline = analyzer.baseline
    values = scored(run(probe, noisy, 16000, at=at + 100.0))
    assert len(values) >= 3 and np.mean(values) > 0.7


# --- no speech: NaN with a reason, never 0 -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["digital_silence", "quiet_room", "cabin_noise", "loud_cabin_noise"])
def test_no_speech_gives_nan_with_a_reason(kind):
    rng = np.random.default_rng(1)
    n = 12 * 16000
    samples = {
        "digital_silence": np.zeros(n, np.float32),
        "quiet_room": (0.001 * rng.standard_normal(n)).astype(np.float32),
        "cabin_noise": synth.cabin_noise(12.0, 16000, level=0.05),
        "loud_cabin_noise": synth.cabin_noise(12.0, 16000, level=0.3, seed=2),
    }[kind]
    measures = run(VoiceAnalyzer(), samples, 16000)
    assert len(measures) >= 2
    for m in measures:
        assert math.isnan(m.voice_quality) and m.reason
        assert math.isnan(m.f0_mean) and math.isnan(m.speech_rate)
    if kind == "digital_silence":
        assert "all zero" in measures[0].reason
    else:
        assert measures[0].reason in ("no speech",) or measures[0].reason.startswith("too little voiced")


def test_no_speech_leaves_the_feature_windows_voice_quality_nan_not_zero():
    window = FeatureWindow(FeatureConfig())
    for m in run(VoiceAnalyzer(), synth.cabin_noise(20.0, 16000), 16000):
        window.add_voice(m)
    assert math.isnan(window.compute().voice_quality)


# --- bad input -----------------------------------------------------------------------------------------------
@needs_espeak
@pytest.mark.parametrize("rate", [8000, 11025, 44100, 48000])
def test_other_sample_rates_are_resampled_to_the_same_measures(speech, rate):
    from scipy.signal import resample_poly

    samples, native = speech()
    reference = run(VoiceAnalyzer(), samples, native)
    other = run(VoiceAnalyzer(), resample_poly(samples, rate, native).astype(np.float32), rate)
    assert len(other) == len(reference)
    for a, b in zip(reference[:-1], other[:-1], strict=True):
        assert b.f0_mean == pytest.approx(a.f0_mean, rel=0.03)
        assert b.f0_std == pytest.approx(a.f0_std, rel=0.15)
        assert b.speech_rate == pytest.approx(a.speech_rate, rel=0.15)


@pytest.mark.parametrize("rate", [4000, 1000, 0, 500_000])
def test_unusable_sample_rate_is_refused_with_a_clear_message(rate):
    with pytest.raises(AudioError, match=r"sample rate .* Hz .*at least 8000 Hz"):
        VoiceAnalyzer().add(np.zeros(1000, np.float32), rate, 0.0)


def test_wav_with_an_unusable_sample_rate_is_refused_naming_the_file(tmp_path):
    path = synth.write_wav(tmp_path / "phone.wav", np.zeros(4000, np.float32), 4000)
    with pytest.raises(AudioSourceError, match=r"phone.wav.*4000 Hz"):
        WavSource(path)


@needs_espeak
def test_clipped_speech_gives_nan_with_a_reason(speech):
    samples, rate = speech()
    measures = run(VoiceAnalyzer(), np.clip(samples * 30.0, -1.0, 1.0), rate)
    assert measures and all(math.isnan(m.voice_quality) and m.reason.startswith("clipped") for m in measures)
    assert "% of samples at full scale" in measures[0].reason


def test_non_finite_samples_give_nan_with_a_reason():
    samples = synth.cabin_noise(6.0)
    samples[1000] = np.nan
    first = run(VoiceAnalyzer(), samples, 16000)[0]
    assert math.isnan(first.voice_quality) and "non-finite" in first.reason


def test_timestamps_drive_the_blocks_gaps_close_one_and_going_back_is_refused():
    analyzer = VoiceAnalyzer(AudioConfig(block_duration=2.0, min_voiced=0.5))
    chunk = np.zeros(1600, np.float32)
    done = []
    for i in range(25):  # 2.5 s
        done += analyzer.add(chunk, 16000, 100.0 + 0.1 * i)
    assert [m.timestamp_s for m in done] == [pytest.approx(102.0)]
    done = analyzer.add(chunk, 16000, 110.0)  # a dropout: the 0.5 s begun is closed (and measured)
    assert [m.timestamp_s for m in done] == [pytest.approx(102.5)] and done[0].block_duration == pytest.approx(0.5)
    with pytest.raises(AudioError, match="before the end of the previous audio"):
        analyzer.add(chunk, 16000, 105.0)
    with pytest.raises(AudioError, match="not finite"):
        analyzer.add(chunk, 16000, math.nan)


def test_pcm_decoding_and_refused_formats():
    stereo = np.array([[1000, -1000], [32767, 32767]], "<i2").tobytes()
    np.testing.assert_allclose(decode_pcm(stereo, "S16LE", 2), [0.0, 32767 / 32768], atol=1e-6)
    np.testing.assert_allclose(decode_pcm(np.array([0.5], "<f4").tobytes(), "F32LE", 1), [0.5])
    np.testing.assert_allclose(decode_pcm(bytes([128, 255]), "U8", 1), [0.0, 127 / 128])
    with pytest.raises(AudioError, match="not PCM"):
        decode_pcm(b"\x00\x00", "S16LE", 1, "mp3")
    with pytest.raises(AudioError, match="not supported"):
        decode_pcm(b"\x00\x00", "S24BE", 1)
    with pytest.raises(AudioError, match="whole number"):
        decode_pcm(b"\x00\x00\x00", "S16LE", 1)


def test_wav_source_reads_stereo_8_and_24_bit_and_says_when_a_file_is_cut(tmp_path):
    tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(8000) / 16000)
    path = synth.write_wav(tmp_path / "stereo.wav", np.stack([tone, tone], axis=1), 16000, channels=2)
    with WavSource(path) as source:
        samples = np.concatenate([c for _, c, _ in source])
    np.testing.assert_allclose(samples, tone, atol=1e-3)
    for width, encode in ((1, lambda x: (x * 127 + 128).astype("u1").tobytes()),
                          (3, lambda x: b"".join(int(v * 8388607).to_bytes(3, "little", signed=True) for v in x))):
        with wave.open(str(tmp_path / f"w{width}.wav"), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(width)
            wav.setframerate(16000)
            wav.writeframes(encode(tone[:1600]))
        with WavSource(tmp_path / f"w{width}.wav") as source:
            np.testing.assert_allclose(np.concatenate([c for _, c, _ in source]), tone[:1600], atol=0.01)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:20000])
    with WavSource(cut) as source:
        list(source)
        assert source.truncated and source.read_frames < source.frames
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(AudioSourceError, match="bad.wav: not a PCM WAV"):
        WavSource(tmp_path / "bad.wav")
    with pytest.raises(AudioSourceError, match="no such WAV"):
        WavSource(tmp_path / "missing.wav")


def test_device_source_fails_with_a_clear_error_not_a_crash(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_portaudio(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    with pytest.raises(AudioSourceError, match="libportaudio2"):
        DeviceSource()
    monkeypatch.setattr(builtins, "__import__", real_import)
    try:
        import sounddevice  # noqa: F401
    except OSError:
        return
    with pytest.raises(AudioSourceError, match="no_such_microphone"):  # this machine has no such input
        DeviceSource("no_such_microphone")


def test_config_is_validated():
    AudioConfig().validate()
    with pytest.raises(ConfigError, match="'source'"):
        AudioConfig(source="usb").validate()
    with pytest.raises(ConfigError, match="'wav_path'"):
        AudioConfig(source="file").validate()
    with pytest.raises(ConfigError, match="'min_voiced'"):
        AudioConfig(min_voiced=10.0, block_duration=5.0).validate()


# --- scoring and the feature window --------------------------------------------------------------------------
def test_sleepy_deviation_counts_only_the_sleepy_direction():
    assert sleepy_deviation("speech_rate", 4.0, 5.0) == pytest.approx(1.0)   # 20 % slower = one tolerance
    assert sleepy_deviation("speech_rate", 6.0, 5.0) == 0.0
    assert sleepy_deviation("jitter", 0.015, 0.01) == pytest.approx(1.0)     # 50 % more
    assert sleepy_deviation("hnr", 6.0, 9.0) == pytest.approx(1.0)           # 3 dB less
    assert math.isnan(sleepy_deviation("hnr", math.nan, 9.0))


def voice(t: float, quality: float, speech: float = 4.0) -> VoiceMeasure:
    return VoiceMeasure(timestamp_s=t, block_duration=5.0, speech_duration=speech, voiced_duration=speech,
                        voice_quality=quality, baseline_ready=True, reason="" if math.isfinite(quality) else "x")


def test_feature_window_voice_quality_is_the_speech_weighted_mean_of_its_blocks():
    window = FeatureWindow(FeatureConfig(voice_window=30.0))
    assert math.isnan(window.compute().voice_quality)
    window.add_voice(voice(5.0, 1.0, speech=1.0))
    window.add_voice(voice(10.0, 0.4, speech=3.0))
    window.add_voice(voice(15.0, math.nan, speech=0.0))  # silence: no weight
    assert window.compute().voice_quality == pytest.approx((1.0 + 1.2) / 4.0)
    assert window.compute(now_s=38.0).voice_quality == pytest.approx(0.4)  # the 5 s block left the window
    assert math.isnan(window.compute(now_s=50.0).voice_quality)            # not spoken for 30 s: absent
    with pytest.raises(FeatureWindowError, match="not after"):
        window.add_voice(voice(12.0, 0.5))
    with pytest.raises(FeatureWindowError, match="outside"):
        window.add_voice(voice(60.0, 1.5))
