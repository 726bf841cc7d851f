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


def test_a_projector_with_a_base_starts_as_those_tokens_whatever_the_features_then_learns_them():
    base = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    projector = FeatureProjector(3, 16, seed=0, embed_norm=2.0, base=base)
    start = base / base.norm(dim=-1, keepdim=True) * 2.0
    for features in (ALERT, TIRED, NOISY_ROAD):
        assert torch.allclose(projector.soft_prompt(features), start, atol=1e-6)
    # the zeroed output layer still gets gradients (as LoRA's B does), and one step makes the features count
    inputs = torch.from_numpy(np.stack([projector.input_vector(TIRED), projector.input_vector(NOISY_ROAD)]))
    target = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(1))
    ((projector.embed(inputs) - target) ** 2).sum().backward()
    assert projector.mlp[2].weight.grad.abs().sum() > 0 and projector.base.grad.abs().sum() > 0
    torch.optim.SGD(projector.parameters(), lr=0.1).step()
    assert not torch.allclose(projector.soft_prompt(TIRED), projector.soft_prompt(NOISY_ROAD), atol=1e-4)


def test_the_base_is_saved_and_files_without_one_load_as_before(tmp_path):
    from safetensors.torch import save_file

    projector = FeatureProjector(2, 16, seed=1, embed_norm=0.5, base=torch.randn(2, 16))
    with torch.no_grad():
        projector.mlp[2].weight.normal_()  # a trained one: base and features both in the soft prompt
    projector.save(tmp_path / "with_base.safetensors")
    loaded = FeatureProjector.load(tmp_path / "with_base.safetensors")
    assert torch.equal(loaded.base, projector.base)
    assert torch.equal(loaded.soft_prompt(TIRED), projector.soft_prompt(TIRED))
    # a file of a projector from before the base existed: its MLP weights alone
    old = FeatureProjector(2, 16, seed=2, embed_norm=0.5)
    meta = {"n_tokens": "2", "hidden_size": "16", "seed": "2", "embed_norm": "0.5", "mlp_hidden": "64"}
    save_file({k: v.contiguous() for k, v in old.mlp.state_dict().items()}, str(tmp_path / "old.safetensors"), meta)
    loaded_old = FeatureProjector.load(tmp_path / "old.safetensors")
    assert torch.equal(loaded_old.base, torch.zeros(2, 16))
    assert torch.equal(loaded_old.soft_prompt(TIRED), old.soft_prompt(TIRED))


def test_a_base_of_another_shape_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"base must be 2x16, got \(3, 16\)"):
        FeatureProjector(2, 16, base=torch.zeros(3, 16))
    from safetensors.torch import save_file

    good = FeatureProjector(2, 16)
    tensors = {**{k: v.contiguous() for k, v in good.mlp.state_dict().items()}, "base": torch.zeros(3, 16)}
    meta = {"n_tokens": "2", "hidden_size": "16", "seed": "0", "embed_norm": "1.0", "mlp_hidden": "64"}
    save_file(tensors, str(tmp_path / "bad.safetensors"), meta)
    with pytest.raises(ValueError, match=r"bad.safetensors: base is \(3, 16\), the sizes say \(2, 16\)"):
        FeatureProjector.load(tmp_path / "bad.safetensors")
