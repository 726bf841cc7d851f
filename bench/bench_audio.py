"""Voice features on one CPU core: how many times faster than real time, and what voice_quality reads.

Real synthesised speech (espeak-ng, 8 sentences, ~38 s per style) is fed in 0.1 s chunks to VoiceAnalyzer,
the very code the audio node runs (resampling, webrtcvad, Praat pitch / point process / jitter / shimmer,
HNR, syllable nuclei, scoring). Conditions: speech at espeak's 22.05 kHz, the same resampled to 48 kHz
(a USB microphone), speech in cabin noise (~15 dB SNR), cabin noise alone and digital silence. Each is
timed over --rounds rounds (the best round is reported: the least disturbed by other load). Then
voice_quality against a baseline of the driver's usual speech, for slower / flatter / livelier speech.

    .venv/bin/python bench/bench_audio.py [--rounds 3] [--out bench/results/audio.json]

Prints a table and writes the JSON. Needs espeak-ng (scripts/install_system_deps.sh). About a minute.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fatigue_llm.audio import synth  # noqa: E402
from fatigue_llm.audio.analyzer import VoiceAnalyzer, analyse, chunked  # noqa: E402
from fatigue_llm.audio.config import AudioConfig  # noqa: E402
from fatigue_llm.audio.pcm import to_analysis_rate  # noqa: E402

STYLES = {  # name -> espeak-ng settings; "usual" is also the baseline's style (other sentences)
    "usual (160 wpm, medium range)": {},
    "slower (110 wpm)": {"words_per_minute": 110},
    "faster (220 wpm)": {"words_per_minute": 220},
    "flatter (low range)": {"pitch_range": "low"},
    "monotone (x-low range)": {"pitch_range": "x-low"},
    "slower and monotone": {"words_per_minute": 110, "pitch_range": "x-low"},
    "livelier (x-high range)": {"pitch_range": "x-high"},
}


def talk(folder: Path, sentences, **style) -> tuple[np.ndarray, int]:
    parts, rate = [], 22050
    for i, text in enumerate(sentences):
        samples, rate = synth.read_wav(synth.speak(folder / f"{abs(hash((text, str(style))))}_{i}.wav", text, **style))
        parts += [samples, synth.pause(0.4, rate)]
    return np.concatenate(parts), rate


def real_time_factor(samples: np.ndarray, rate: int, rounds: int) -> dict:
    best = math.inf
    for _ in range(rounds):
        analyzer = VoiceAnalyzer()
        start = time.perf_counter()
        measures = analyse(chunked(samples, rate), analyzer=analyzer)
        best = min(best, time.perf_counter() - start)
    seconds = len(samples) / rate
    return {"audio_s": round(seconds, 2), "sample_rate": rate, "best_s": round(best, 4),
            "x_real_time": round(seconds / best, 1), "blocks": len(measures),
            "reasons": sorted({m.reason for m in measures if m.reason})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "audio.json"))
    args = parser.parse_args()
    if not synth.espeak_available():
        print("espeak-ng is not installed (scripts/install_system_deps.sh)", file=sys.stderr)
        return 1
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory(prefix="bench_audio_") as tmp:
        folder = Path(tmp)
        baseline_speech, rate = talk(folder, synth.SENTENCES[:4])
        usual, _ = talk(folder, synth.SENTENCES)
        speech16 = to_analysis_rate(usual, rate)
        seconds = len(speech16) / 16000
        conditions = {
            "speech, 22.05 kHz": (usual, rate),
            "speech, 48 kHz": (resample_poly(usual, 320, 147).astype(np.float32), 48000),
            "speech in cabin noise, 16 kHz": (speech16 + synth.cabin_noise(seconds, level=0.01), 16000),
            "cabin noise only, 16 kHz": (synth.cabin_noise(seconds, level=0.05, seed=1), 16000),
            "digital silence, 16 kHz": (np.zeros_like(speech16), 16000),
        }
        VoiceAnalyzer().measure_block(speech16[:16000 * 5], 16000, 0.0)  # imports and Praat warm-up, untimed
        speed = {name: real_time_factor(x, r, args.rounds) for name, (x, r) in conditions.items()}

        quality = {}
        for name, style in STYLES.items():
            analyzer = VoiceAnalyzer(AudioConfig(baseline_voiced=10.0))
            analyse(chunked(baseline_speech, rate), analyzer=analyzer)
            samples, r = talk(folder, synth.SENTENCES[4:], **style)
            measures = analyse(chunked(samples, r), analyzer=analyzer, offset_s=100.0)
            full = [m for m in measures if math.isfinite(m.voice_quality)]
            quality[name] = {
                "voice_quality": round(float(np.mean([m.voice_quality for m in full])), 3),
                "blocks": len(full),
                "speech_rate": round(float(np.mean([m.speech_rate for m in full])), 2),
                "f0_std_st": round(float(np.mean([m.f0_std for m in full])), 2),
                "hnr_db": round(float(np.mean([m.hnr for m in full])), 1),
                "jitter": round(float(np.mean([m.jitter for m in full])), 4),
                "shimmer": round(float(np.mean([m.shimmer for m in full])), 3),
            }
            baseline = {k: round(v, 4) for k, v in analyzer.baseline.values().items()}

    print(f"{'condition':32s} {'audio s':>8s} {'best s':>8s} {'x real time':>12s}  no-score reasons")
    for name, row in speed.items():
        print(f"{name:32s} {row['audio_s']:8.1f} {row['best_s']:8.3f} {row['x_real_time']:12.1f}  "
              f"{'; '.join(row['reasons'])[:60]}")
    print(f"\n{'style vs baseline':32s} {'quality':>8s} {'syl/s':>6s} {'F0 sd':>6s} {'HNR':>5s} {'jitter':>7s} "
          f"{'shimmer':>7s}")
    for name, row in quality.items():
        print(f"{name:32s} {row['voice_quality']:8.2f} {row['speech_rate']:6.2f} {row['f0_std_st']:6.2f} "
              f"{row['hnr_db']:5.1f} {row['jitter']:7.4f} {row['shimmer']:7.3f}")
    result = {
        "benchmark": "voice features (fatigue_llm.audio.VoiceAnalyzer)",
        "rounds": args.rounds,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "numpy": np.__version__},
        "loadavg": list(os.getloadavg()),
        "speed": speed,
        "baseline": baseline,
        "quality": quality,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
