"""FeatureProjector: normalisation, retrieval keys and the soft prompt."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fatigue_llm.features.types import FatigueFeatures
from fatigue_llm.intervention.projector import (
    CLIP,
    FEATURE_NAMES,
    KEY_DIM,
    REFERENCE,
    FeatureProjector,
    key_deviations,
    normalise,
    retrieval_key,
)

ALERT = FatigueFeatures(**{name: REFERENCE[name][0] for name in FEATURE_NAMES})
TIRED = FatigueFeatures(eye_closure_ratio=0.25, blink_frequency=30.0, slow_blink_count=4, time_awake=18.0)
TIRED_TOO = FatigueFeatures(eye_closure_ratio=0.27, blink_frequency=28.0, slow_blink_count=5, time_awake=17.0)
NOISY_ROAD = FatigueFeatures(eye_closure_ratio=0.04, steering_reversal_rate=25.0, sdlp=0.6, speed_variance=12.0)


def test_normalise_centres_scales_clips_and_masks_missing():
    features = FatigueFeatures(eye_closure_ratio=0.15, blink_frequency=math.nan, time_awake=1e6)
    values, mask = normalise(features)
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    assert values[index["eye_closure_ratio"]] == pytest.approx((0.15 - 0.05) / 0.10)
    assert values[index["blink_frequency"]] == 0.0 and mask[index["blink_frequency"]] == 0.0
    assert values[index["time_awake"]] == CLIP
    assert mask[index["eye_closure_ratio"]] == 1.0
    assert values.dtype == np.float32 and len(values) == len(FEATURE_NAMES)


def test_retrieval_key_is_unit_norm_deterministic_and_centred():
    key = retrieval_key(TIRED)
    assert key.shape == (KEY_DIM,) and key.dtype == np.float32
    assert np.linalg.norm(key) == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(key, retrieval_key(TIRED))
    alert = retrieval_key(ALERT)  # the alert reference maps onto the baseline axis alone
    assert alert[-1] == pytest.approx(1.0) and np.allclose(alert[:-1], 0.0)
    assert retrieval_key({"eye_closure_ratio": 0.25}).shape == (KEY_DIM,)  # a plain dict works too


def test_similar_states_have_closer_keys_than_different_ones():
    tired, tired_too, road = retrieval_key(TIRED), retrieval_key(TIRED_TOO), retrieval_key(NOISY_ROAD)
    assert float(tired @ tired_too) > 0.95
    assert float(tired @ tired_too) > float(tired @ road) + 0.3


def test_key_deviations_name_the_most_unusual_features():
    names = [name for name, _ in key_deviations(TIRED)]
    assert names[0] == "eye_closure_ratio" and "time_awake" in names
    assert key_deviations(ALERT) == []


def test_soft_prompt_shape_norm_and_determinism():
    projector = FeatureProjector(n_tokens=4, hidden_size=32, seed=3, embed_norm=2.0)
    soft = projector.soft_prompt(TIRED)
    assert soft.shape == (4, 32) and soft.dtype == torch.float32
    assert torch.allclose(soft.norm(dim=-1), torch.full((4,), 2.0), atol=1e-5)
    assert torch.equal(soft, FeatureProjector(4, 32, seed=3, embed_norm=2.0).soft_prompt(TIRED))
    assert not torch.equal(soft, FeatureProjector(4, 32, seed=4, embed_norm=2.0).soft_prompt(TIRED))
    assert not torch.allclose(soft, projector.soft_prompt(NOISY_ROAD))


def test_save_and_load_round_trip(tmp_path):
    projector = FeatureProjector(n_tokens=2, hidden_size=16, seed=1, embed_norm=0.5)
    path = tmp_path / "projector.safetensors"
    projector.save(path)
    loaded = FeatureProjector.load(path)
    assert (loaded.n_tokens, loaded.hidden_size, loaded.embed_norm) == (2, 16, 0.5)
    assert torch.equal(loaded.soft_prompt(TIRED), projector.soft_prompt(TIRED))


def test_load_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a FeatureProjector file"):
        FeatureProjector.load(path)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        FeatureProjector(0, 16)
