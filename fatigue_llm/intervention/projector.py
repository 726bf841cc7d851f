"""Numeric fatigue features -> (a) a retrieval key for the case store, (b) a soft prompt.

Both start from the same normalised input: each feature is centred on a reference value for an
alert driver and divided by a robust scale (roughly the spread between alert and clearly fatigued
drivers), then clipped to +-CLIP, so one extreme value cannot dominate. Missing (NaN) features
become 0 (the reference value) and are flagged in a presence mask.

Reference (centre, scale) per feature, from the ranges the alert policy and the literature use:
  eye_closure_ratio    0.05, 0.10   PERCLOS P80: alert < 0.08, fatigued >= 0.15, danger >= 0.30
  blink_frequency      17, 8 /min   alert 12-20 /min; > 25 /min is an early sign
  mean_blink_duration  0.15, 0.10 s alert 0.1-0.2 s; slow blinks > 0.5 s
  longest_eye_closure  0.3, 0.5 s   >= 1 s is a microsleep
  slow_blink_count     0, 3         per window
  microsleep_count     0, 1         per window
  yawn_count           0, 2         per window
  head_nod             0.2, 1 /min
  voice_quality        0.8, 0.2     [0, 1]
  steering_reversal_rate   8, 6 /min    steering reversals per minute
  sdlp                 0.25, 0.15 m standard deviation of lane position (~0.2 m alert)
  speed_variance       2, 4 (m/s)^2
  yaw_rate             0.03, 0.03 rad/s
  time_awake           8, 6 h       > 16 h awake is impairing
  time_driving         3600, 3600 s > 2 h without a break

The retrieval key is the normalised vector (centred: 0 = alert reference) plus one constant
baseline component, scaled to unit norm, so cosine similarity compares *how* a state deviates from
alert and an all-reference state has a well-defined key. It is plain numpy (fast, no model) and is
deliberately not taken from the LLM's hidden states: in a causal model the first positions of
prompts with a shared prefix are identical whatever the features.

The soft prompt is ``n_tokens`` virtual token embeddings of the model's hidden size: a learned base
(one vector per token) plus a small 2-layer MLP of the features (input = normalised values +
presence mask), each token scaled to a typical embedding norm. Built with ``base`` (training's
default, ``projector.init: text``) the base holds real token embeddings and the MLP's output layer
starts at zero, so an untrained soft prompt reads as those tokens, not as noise, and the features
enter as the MLP learns; without it the base is zero and the MLP a fixed random projection.
``fatigue-llm train`` with ``projector.enabled`` trains both with the LoRA adapter
(``training/softprompt.py``), and the engine then puts the tokens in place of the feature text
(``prompt.build_messages(soft_prompt=True)``). Weights are saved and loaded as safetensors (files
without a base, from before it existed, load with a zero base: the same soft prompts).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fatigue_llm.features.types import FatigueFeatures

REFERENCE: dict[str, tuple[float, float]] = {
    "eye_closure_ratio": (0.05, 0.10),
    "blink_frequency": (17.0, 8.0),
    "mean_blink_duration": (0.15, 0.10),
    "longest_eye_closure": (0.3, 0.5),
    "slow_blink_count": (0.0, 3.0),
    "microsleep_count": (0.0, 1.0),
    "yawn_count": (0.0, 2.0),
    "head_nod": (0.2, 1.0),
    "voice_quality": (0.8, 0.2),
    "steering_reversal_rate": (8.0, 6.0),
    "sdlp": (0.25, 0.15),
    "speed_variance": (2.0, 4.0),
    "yaw_rate": (0.03, 0.03),
    "time_awake": (8.0, 6.0),
    "time_driving": (3600.0, 3600.0),
}
FEATURE_NAMES = tuple(REFERENCE)
CLIP = 5.0
BASELINE = 0.5  # the constant key component; smaller = deviations weigh more
MLP_HIDDEN = 64
BASE_KEY = "base"  # the safetensors name of the base tokens (not an MLP weight)
# Where the prompt holds the virtual tokens (``backends.base.soft_prompt_slot``), saved with the weights: a
# projector trained with them elsewhere must not be used. Files without it put them at the start of the user
# turn, before the rule line (the layout until 2026-12-02).
SLOT_LAYOUT = "before-answer"
OLD_SLOT_LAYOUT = "user-turn-start"


def _values(features: FatigueFeatures | dict) -> dict:
    return features.to_dict() if isinstance(features, FatigueFeatures) else dict(features)


def normalise(features: FatigueFeatures | dict) -> tuple[np.ndarray, np.ndarray]:
    """(normalised values, presence mask), both float32 of len(FEATURE_NAMES); NaN -> 0, mask 0."""
    data = _values(features)
    values = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    mask = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    for index, name in enumerate(FEATURE_NAMES):
        raw = data.get(name)
        if raw is None:
            continue
        value = float(raw)
        if math.isnan(value) or math.isinf(value):
            continue
        centre, scale = REFERENCE[name]
        values[index] = float(np.clip((value - centre) / scale, -CLIP, CLIP))
        mask[index] = 1.0
    return values, mask


def retrieval_key(features: FatigueFeatures | dict) -> np.ndarray:
    """Unit-norm float32 key (len(FEATURE_NAMES) + 1) for cosine / inner-product search."""
    values, _ = normalise(features)
    key = np.append(values, np.float32(BASELINE))
    return (key / np.linalg.norm(key)).astype(np.float32)


KEY_DIM = len(FEATURE_NAMES) + 1


def key_deviations(features: FatigueFeatures | dict, top: int = 3) -> list[tuple[str, float]]:
    """The ``top`` features furthest from the alert reference, as (name, normalised value), for
    explanations; only deviations of at least one scale unit are listed."""
    values, _ = normalise(features)
    order = np.argsort(-np.abs(values))[:top]
    return [(FEATURE_NAMES[i], float(values[i])) for i in order if abs(values[i]) >= 1.0]


class FeatureProjector:
    """Features -> soft prompt (torch) and retrieval key (numpy). Deterministic given ``seed``."""

    def __init__(self, n_tokens: int, hidden_size: int, seed: int = 0, embed_norm: float = 1.0,
                 mlp_hidden: int = MLP_HIDDEN, base=None) -> None:
        """``embed_norm`` is the L2 norm each virtual token is scaled to (match the model's token
        embeddings: the vectors go into the model where token embeddings would, unscaled);
        ``mlp_hidden`` the width of the MLP's hidden layer; ``base`` (``n_tokens x hidden_size``, e.g.
        token embeddings) the tokens the soft prompt starts as, with the MLP's output layer at zero.
        Raises ValueError for non-positive sizes or a base of another shape."""
        import torch

        if n_tokens <= 0 or hidden_size <= 0 or mlp_hidden <= 0:
            raise ValueError(f"n_tokens, hidden_size and mlp_hidden must be positive, got {n_tokens}, "
                             f"{hidden_size}, {mlp_hidden}")
        if base is not None and tuple(base.shape) != (n_tokens, hidden_size):
            raise ValueError(f"base must be {n_tokens}x{hidden_size}, got {tuple(base.shape)}")
        self.n_tokens, self.hidden_size, self.seed = n_tokens, hidden_size, seed
        self.slot_layout = SLOT_LAYOUT
        self.embed_norm = float(embed_norm)
        self.mlp_hidden = int(mlp_hidden)
        generator = torch.Generator().manual_seed(seed)
        in_dim = 2 * len(FEATURE_NAMES)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(in_dim, mlp_hidden),
            torch.nn.GELU(),
            torch.nn.Linear(mlp_hidden, n_tokens * hidden_size),
        )
        with torch.no_grad():
            for layer in (self.mlp[0], self.mlp[2]):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
            if base is not None:  # like LoRA's B: the features start at no effect, and gradients still reach it
                self.mlp[2].weight.zero_()
                self.mlp[2].bias.zero_()
        initial = torch.zeros(n_tokens, hidden_size) if base is None else base.detach().float().clone()
        self.base = torch.nn.Parameter(initial)
        self.mlp.eval()

    def parameters(self) -> list:
        """What training optimizes: the MLP's weights and the base."""
        return [*self.mlp.parameters(), self.base]

    def to(self, device) -> FeatureProjector:
        self.mlp.to(device)
        self.base.data = self.base.data.to(device)
        return self

    def layout_error(self, path: str | Path) -> str | None:
        """Why the projector file ``path`` (this projector) must not be used here: its virtual tokens were
        trained at another place in the prompt than ``SLOT_LAYOUT``; None when it fits."""
        if self.slot_layout == SLOT_LAYOUT:
            return None
        return (f"{path}: projector trained with its virtual tokens at '{self.slot_layout}' of the prompt; the "
                f"engine and training put them at '{SLOT_LAYOUT}' (the end of the prompt): retrain it with "
                f"`fatigue-llm train`")

    key_dim = KEY_DIM

    @staticmethod
    def retrieval_key(features: FatigueFeatures | dict) -> np.ndarray:
        """See module ``retrieval_key``."""
        return retrieval_key(features)

    def input_vector(self, features: FatigueFeatures | dict) -> np.ndarray:
        """MLP input: normalised values followed by the presence mask."""
        values, mask = normalise(features)
        return np.concatenate([values, mask])

    def embed(self, inputs):
        """Differentiable soft prompts for a batch of ``input_vector`` rows (torch, B x 2F):
        B x n_tokens x hidden_size, each virtual token scaled to ``embed_norm`` (what training calls)."""
        raw = self.mlp(inputs)
        tokens = raw.reshape(*inputs.shape[:-1], self.n_tokens, self.hidden_size) + self.base
        norms = tokens.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return tokens / norms * self.embed_norm

    def soft_prompt(self, features: FatigueFeatures | dict):
        """``n_tokens x hidden_size`` float32 torch tensor of virtual token embeddings."""
        import torch

        with torch.no_grad():
            return self.embed(torch.from_numpy(self.input_vector(features)))

    def save(self, path: str | Path) -> None:
        """Write the weights and sizes to a safetensors file."""
        from safetensors.torch import save_file

        tensors = {name: tensor.detach().contiguous() for name, tensor in self.mlp.state_dict().items()}
        tensors[BASE_KEY] = self.base.detach().contiguous()
        meta = {"n_tokens": str(self.n_tokens), "hidden_size": str(self.hidden_size),
                "seed": str(self.seed), "embed_norm": repr(self.embed_norm), "mlp_hidden": str(self.mlp_hidden),
                "slot_layout": self.slot_layout}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> FeatureProjector:
        """Read a projector written by ``save``. Raises ValueError when the file does not fit."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            try:
                projector = cls(int(meta["n_tokens"]), int(meta["hidden_size"]), int(meta.get("seed", 0)),
                                float(meta.get("embed_norm", 1.0)), int(meta.get("mlp_hidden", MLP_HIDDEN)))
            except (KeyError, ValueError) as error:
                raise ValueError(f"{path}: not a FeatureProjector file ({error})") from None
            state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        projector.slot_layout = meta.get("slot_layout", OLD_SLOT_LAYOUT)
        base = state.pop(BASE_KEY, None)
        try:
            projector.mlp.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"{path}: weights do not fit ({error})") from None
        if base is not None:
            if tuple(base.shape) != tuple(projector.base.shape):
                raise ValueError(f"{path}: base is {tuple(base.shape)}, the sizes say {tuple(projector.base.shape)}")
            projector.base.data = base.float()
        return projector
