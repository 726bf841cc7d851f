"""Soft-prompt training: the feature projector trained together with the LoRA adapter (``projector.enabled``).

The prompt is the engine's soft-prompt mode (``prompt.build_messages(soft_prompt=True)``): the feature
text is left out and the projector's ``n_tokens`` virtual tokens go in at the soft-prompt slot, the end of the
prompt right before the answer (``backends.base.soft_prompt_slot``), as both backends put them at inference.
Each training example holds

- ``input_ids`` / ``labels``: the engine's prompt tokens with ``n_tokens`` placeholder ids at the slot
  (their labels masked), then the answer (labelled) as in ``data.tokenize_conversation``;
- ``prefix_len``: the fixed prefix's length (system turn + user header, the same in every example),
  ``soft_start``: the slot's position, ``soft_input``: the projector's input (normalised features + mask).

``prompt_trainer`` (a subclass of whatever Trainer class the run uses) replaces the placeholder embeddings
with the projector's output before the model's forward (``splice``), so the loss reaches the projector;
its parameters are one more optimizer group with ``projector.learning_rate`` (scheduled like the rest).

``training.frozen_prefix`` (text or soft prompt): the fixed prefix, identical in every example, is run once
per batch without gradient and its KV cache shared by the batch's rows; only the rest of each example (user
turn, virtual tokens, answer: ~60 of ~420 tokens) is run with gradient. The forward is the same as the full
one (the adapter acts on the prefix too); the adapter's gradient through the prefix's keys and values is
dropped. On 2 CPU cores a step of 8 examples then costs about what 2 full examples did.
``projector.safetensors`` is written into every checkpoint (a resumed run continues from it), into the run
folder and beside the adapter (``OUTPUT/adapter/``: the engine looks there, and export copies it).
"""

from __future__ import annotations

from pathlib import Path

from fatigue_llm.intervention.backends.base import fixed_prefix_tokens, soft_prompt_slot
from fatigue_llm.intervention.projector import REFERENCE, FeatureProjector
from fatigue_llm.intervention.prompt import feature_line
from fatigue_llm.training.data import IGNORE_INDEX, Conversation, DataError, tokenize_conversation

PROJECTOR_FILE = "projector.safetensors"
PREFIX_KEYS = ("prefix_len", "soft_start", "soft_input")


def render_ids(tokenizer):
    """``render_tokens`` of the HF tokenizer: messages -> prompt ids with the generation prompt (as the engine)."""

    def render(messages) -> list[int]:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    return render


def encode_soft(tokenizer, conversation: Conversation, max_length: int, projector: FeatureProjector) -> dict:
    """``tokenize_conversation`` with ``projector.n_tokens`` placeholders at the soft-prompt slot (labels masked)
    and the projector input of the case's features. Raises DataError for an example without features (plain
    chat data has nothing for the projector) or too long."""
    if conversation.features is None:
        raise DataError("projector.enabled needs case data (cases CSV) whose rows carry features; this example "
                        "has none (Alpaca / messages data)")
    encoded = tokenize_conversation(tokenizer, conversation, max_length - projector.n_tokens)
    render = render_ids(tokenizer)
    slot = soft_prompt_slot(render(conversation.prompt))
    ids, labels = encoded["input_ids"], encoded["labels"]
    if any(label != IGNORE_INDEX for label in labels[:slot]):
        raise DataError("the soft-prompt slot falls inside the answer")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n = projector.n_tokens
    return {"input_ids": [*ids[:slot], *([pad] * n), *ids[slot:]],
            "labels": [*labels[:slot], *([IGNORE_INDEX] * n), *labels[slot:]],
            "prefix_len": fixed_prefix_len(render, conversation), "soft_start": slot,
            "soft_input": [float(x) for x in projector.input_vector(conversation.features)]}


def fixed_prefix_len(render, conversation: Conversation) -> int:
    """Tokens of the prompt that depend only on the turns before the last one (what ``frozen_prefix`` shares)."""
    return len(fixed_prefix_tokens(render, conversation.prompt[:-1]))


def encode_text(tokenizer, conversation: Conversation, max_length: int) -> dict:
    """``tokenize_conversation`` plus ``prefix_len`` (for ``training.frozen_prefix`` without a projector)."""
    encoded = tokenize_conversation(tokenizer, conversation, max_length)
    return {**encoded, "prefix_len": fixed_prefix_len(render_ids(tokenizer), conversation)}


def init_token_ids(tokenizer, n_tokens: int) -> list[int]:
    """The ``n_tokens`` tokens a ``projector.init: text`` soft prompt starts as: the first tokens of the
    feature line it replaces, as the text prompt renders it for a driver at the alert reference values
    ("Now: PERCLOS .05, ..."), repeated if that line were shorter."""
    line = feature_line({name: centre for name, (centre, _) in REFERENCE.items()})
    ids = list(tokenizer(line, add_special_tokens=False).input_ids)
    return [ids[i % len(ids)] for i in range(n_tokens)]


def make_projector(model, n_tokens: int, hidden: int, seed: int, init_ids: list[int] | None = None) -> FeatureProjector:
    """A fresh projector for ``model``: its hidden size, each virtual token scaled to the mean norm of the
    model's token embeddings (the vectors enter where token embeddings do), trainable. With ``init_ids``
    (``init_token_ids``) the soft prompt starts as those tokens' embeddings, the features at no effect;
    without, as a random projection of the features."""
    import torch

    embeddings = model.get_input_embeddings().weight
    with torch.no_grad():
        norm = float(embeddings.float().norm(dim=-1).mean())
        base = None if init_ids is None else embeddings[torch.tensor(init_ids, device=embeddings.device)].float().cpu()
    projector = FeatureProjector(n_tokens, int(embeddings.shape[1]), seed=seed, embed_norm=norm, mlp_hidden=hidden,
                                 base=base)
    projector.to(embeddings.device)
    projector.mlp.train()
    return projector


def load_weights(projector: FeatureProjector, path: Path) -> None:
    """Copy the weights of the projector file ``path`` into ``projector`` (in place: the optimizer keeps them)."""
    import torch

    saved = FeatureProjector.load(path)
    if (saved.n_tokens, saved.hidden_size, saved.mlp_hidden) != (projector.n_tokens, projector.hidden_size,
                                                                  projector.mlp_hidden):
        raise DataError(f"{path}: projector {saved.n_tokens}x{saved.hidden_size} (hidden {saved.mlp_hidden}) does "
                        f"not fit the run's {projector.n_tokens}x{projector.hidden_size} "
                        f"(hidden {projector.mlp_hidden})")
    if (error := saved.layout_error(path)) is not None:
        raise DataError(error)
    with torch.no_grad():
        projector.mlp.load_state_dict(saved.mlp.state_dict())
        projector.base.copy_(saved.base)
    projector.embed_norm = saved.embed_norm


def splice(model, projector: FeatureProjector, input_ids, soft_start, soft_input):
    """inputs_embeds: the token embeddings of ``input_ids`` (B x T) with the ``n_tokens`` positions from each
    row's ``soft_start`` (B) replaced by the projector's output for that row's ``soft_input`` (differentiable)."""
    import torch

    embeds = model.get_input_embeddings()(input_ids)
    soft = projector.embed(soft_input.to(device=embeds.device, dtype=torch.float32)).to(embeds.dtype)
    n = projector.n_tokens
    rows = []
    for row in range(embeds.shape[0]):
        start = int(soft_start[row])
        rows.append(torch.cat([embeds[row, :start], soft[row], embeds[row, start + n:]], dim=0))
    return torch.stack(rows)


def model_inputs(model, inputs: dict, projector: FeatureProjector | None, frozen_prefix: bool) -> dict:
    """The keyword arguments of the model's forward for one collated batch (``prefix_len`` / ``soft_start`` /
    ``soft_input`` consumed): the spliced soft prompt, and with ``frozen_prefix`` the shared prefix as a no-grad
    KV cache with only the rest of the rows left to run."""
    import torch

    inputs = dict(inputs)
    prefix = inputs.pop("prefix_len", None)
    vector = inputs.pop("soft_input", None)
    ids = inputs.pop("input_ids")
    start = 0
    if frozen_prefix and prefix is not None:
        n = int(prefix[0])
        if bool((prefix == n).all()) and bool((ids[:, :n] == ids[:1, :n]).all()) and n > 0:
            with torch.no_grad():
                cache = model(input_ids=ids[:1, :n], use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_repeat_interleave(ids.shape[0])
            inputs["past_key_values"] = cache
            inputs["use_cache"] = True
            start = n
    soft_start = inputs.pop("soft_start", None)
    if projector is not None:
        inputs["inputs_embeds"] = splice(model, projector, ids[:, start:], soft_start - start, vector)
    else:
        inputs["input_ids"] = ids[:, start:]
    if start:
        inputs["labels"] = inputs["labels"][:, start:]  # the prefix holds prompt tokens only (no labels)
    return inputs


def collator(inner):
    """A data collator that pads as ``inner`` does (right padding: the slot positions stay put) and stacks
    ``prefix_len`` / ``soft_start`` / ``soft_input`` as tensors."""
    import torch

    if getattr(inner, "tokenizer", None) is not None:
        inner.tokenizer.padding_side = "right"

    def collate(features: list[dict]) -> dict:
        extra = {key: [item[key] for item in features] for key in PREFIX_KEYS if key in features[0]}
        batch = inner([{k: v for k, v in item.items() if k not in PREFIX_KEYS} for item in features])
        for key in ("prefix_len", "soft_start"):
            if key in extra:
                batch[key] = torch.tensor(extra[key], dtype=torch.long)
        if "soft_input" in extra:
            batch["soft_input"] = torch.tensor(extra["soft_input"], dtype=torch.float32)
        return batch

    return collate


def prompt_trainer(base: type, projector: FeatureProjector | None, learning_rate: float,
                   frozen_prefix: bool) -> type:
    """``base`` (a Trainer class) whose loss runs the model through ``model_inputs`` (the spliced soft prompt,
    the frozen shared prefix) and whose optimizer also trains the projector (its own param group at
    ``learning_rate``, no weight decay)."""

    class PromptTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return super().compute_loss(model, model_inputs(model, inputs, projector, frozen_prefix),
                                        return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

        def create_optimizer(self, model=None):
            fresh = self.optimizer is None
            optimizer = super().create_optimizer(model)
            if fresh and projector is not None:
                optimizer.add_param_group({"params": projector.parameters(), "lr": learning_rate,
                                           "weight_decay": 0.0})
            return optimizer

    return PromptTrainer


def checkpoint_callback(projector: FeatureProjector):
    """The projector's part of each optimizer step and checkpoint: its gradients clipped to
    ``max_grad_norm`` (Trainer clips the model's only) before the step and cleared after it (Trainer clears
    the model's only: they would add up across steps), and ``projector.safetensors`` written into each
    checkpoint the Trainer saves."""
    import torch
    from transformers import TrainerCallback

    class SaveProjector(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            if args.max_grad_norm and args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(projector.parameters(), args.max_grad_norm)

        def on_optimizer_step(self, args, state, control, **kwargs):
            projector.mlp.zero_grad(set_to_none=True)
            projector.base.grad = None

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                projector.save(folder / PROJECTOR_FILE)

    return SaveProjector()
