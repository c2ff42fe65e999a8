"""Select and freeze the parameters of the image and text towers of an open_clip model.

open_clip has two model classes with different layouts: ``CLIP`` keeps the text tower's
modules at the top level (``transformer``, ``token_embedding``, ``positional_embedding``,
``ln_final``, ``text_projection``) while ``CustomTextCLIP`` nests them under ``.text``.
Both keep the image tower (including its projection) under ``.visual``. The stages only
talk about *what* to train; this module turns that into parameter names for either class.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

TEXT_TOP_LEVEL = ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection")
"""Attribute names of the text tower (on the model for ``CLIP``, on ``model.text`` otherwise)."""


def text_prefix(model: nn.Module) -> str:
    """The parameter-name prefix of the text tower: ``""`` for ``CLIP``, ``"text."`` otherwise."""
    text = getattr(model, "text", None)
    if text is None:
        return ""
    if not hasattr(text, "transformer") or not hasattr(text.transformer, "resblocks"):
        raise NotImplementedError(
            f"text tower {type(text).__name__} is not an open_clip TextTransformer "
            "(Hugging Face text towers are not supported for realignment)"
        )
    return "text."


def text_root(model: nn.Module) -> nn.Module:
    """The module that owns the text tower's attributes (the model itself, or ``model.text``)."""
    return model.text if text_prefix(model) else model


def image_parameter_names(model: nn.Module) -> list[str]:
    """All parameters of the image tower, its projection included."""
    return [name for name, _ in model.named_parameters() if name.startswith("visual.")]


def text_parameter_names(model: nn.Module) -> list[str]:
    """All parameters of the text tower (not ``logit_scale``)."""
    prefix = text_prefix(model)
    heads = tuple(prefix + part for part in TEXT_TOP_LEVEL)
    return [
        name
        for name, _ in model.named_parameters()
        if any(name == head or name.startswith(head + ".") for head in heads)
        or (prefix and name.startswith(prefix))
    ]


def realign_parameter_names(
    model: nn.Module,
    *,
    last_blocks: int = 2,
    final_norm: bool = True,
    projection: bool = True,
    logit_scale: bool = True,
) -> list[str]:
    """The text parameters realignment trains: the last ``last_blocks`` transformer blocks,
    optionally the final LayerNorm, the text projection and the temperature.

    ``last_blocks`` larger than the tower's depth means every block.
    """
    if last_blocks < 0:
        raise ValueError("last_blocks must be >= 0")
    prefix = text_prefix(model)
    depth = len(text_root(model).transformer.resblocks)
    heads = [f"{prefix}transformer.resblocks.{i}." for i in range(max(0, depth - last_blocks), depth)]
    if final_norm:
        heads.append(f"{prefix}ln_final.")
    names = [name for name, _ in model.named_parameters() if any(name.startswith(h) for h in heads)]
    if projection:
        names += [
            name
            for name, _ in model.named_parameters()
            if name == f"{prefix}text_projection" or name.startswith(f"{prefix}text_projection.")
        ]
    if logit_scale and hasattr(model, "logit_scale"):
        names.append("logit_scale")
    return names


def set_trainable(model: nn.Module, names: Iterable[str]) -> list[nn.Parameter]:
    """Freeze every parameter of ``model`` except ``names``; return the trainable ones in order.

    Raises ``KeyError`` for a name the model does not have, so a typo cannot silently
    freeze everything.
    """
    wanted = set(names)
    params = dict(model.named_parameters())
    unknown = wanted - params.keys()
    if unknown:
        raise KeyError(f"model has no parameters named {sorted(unknown)}")
    for name, param in params.items():
        param.requires_grad_(name in wanted)
        if name not in wanted:
            param.grad = None
    return [param for name, param in params.items() if name in wanted]
