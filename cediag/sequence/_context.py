"""The batch context: what a language-model batch says around its (logits, labels) pair.

`build_context` reads a collated batch (a mapping with `input_ids`, `attention_mask`, `labels`,
...), and the ids it needs from, in order of precedence: explicit arguments, the tokenizer, the
model's config. Nothing here imports transformers: a model and a tokenizer are read through
the attributes they expose (`config.pad_token_id`, `get_input_embeddings()`, `len(tokenizer)`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch

Shift = Literal["model", "caller", "none"]
LabelSpace = Literal["tokens", "classes"]
SHIFTS = ("model", "caller", "none")

# Model heads by class-name suffix: who shifts the labels, and what the labels index.
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_UNSHIFTED_TOKEN_SUFFIXES = ("ForMaskedLM",)
_CLASS_SUFFIXES = ("ForTokenClassification",)
_SEQUENCE_CLASS_SUFFIXES = ("ForSequenceClassification", "ForMultipleChoice")
# `model.loss_type` as transformers names its loss functions.
_LOSS_TYPES = {
    "ForCausalLM": ("model", "tokens"),
    "ForMaskedLM": ("none", "tokens"),
    "ForTokenClassification": ("none", "classes"),
}


@dataclass
class BatchContext:
    """One collated batch and the ids around it. `None` means unknown.

    shift: who moves the labels one position left before the loss. "model" (a causal LM's own
        loss shifts: labels hold input_ids), "caller" (the caller shifts for a loss it computes
        on the logits: labels[t] is the token after input_ids[t]), "none" (nobody shifts:
        masked LM, token classification), None (unknown).
    label_space: "tokens" (labels are vocabulary ids), "classes" (labels are classes of a
        classification head with `num_labels` outputs), None (unknown).
    """

    input_ids: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    shift_labels: torch.Tensor | None = None  # a collator's pre-shifted labels, used as given
    pad_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    ignore_index: int = -100
    shift: Shift | None = None
    label_space: LabelSpace | None = None
    num_labels: int | None = None
    num_items_in_batch: float | None = None
    window_supervised: int | None = None  # supervised labels of the other batches of the window
    window_supervised_unshifted: int | None = None  # the same, counted before the shift
    window_supervised_if_shifted: int | None = None  # the same, had they been shifted
    vocab_size: int | None = None
    embedding_rows: int | None = None
    tokenizer_size: int | None = None
    encoder_decoder: bool = False
    # `model.loss_type` is None though the model's loss shifts (GPT2LMHeadModel): transformers'
    # Trainer then counts `num_items_in_batch` before the shift.
    loss_type_unset: bool = False
    origin: dict[str, str] = field(default_factory=dict)  # id name -> where it was read
    notes: list[str] = field(default_factory=list)
    stats: Any = None  # the BatchStats of one reduction pass, set before the rules run
    found: list[Any] = field(default_factory=list)  # Diagnostics of rules that ran before

    # ------------------------------------------------------------------ derived views
    @cached_property
    def labels_2d(self) -> torch.Tensor | None:
        """The labels as (B, T) aligned with input_ids: flattened (B*T,) labels are viewed back.
        None when the labels do not line up with input_ids (or either is missing)."""
        labels, ids = self.labels, self.input_ids
        if labels is None or ids is None or ids.dim() != 2 or self.encoder_decoder:
            return None
        if tuple(labels.shape) == tuple(ids.shape):
            return labels
        if labels.dim() == 1 and labels.numel() == ids.numel() and ids.numel() > 0:
            return labels.reshape(ids.shape)
        return None

    @property
    def eos_token_id(self) -> int | None:
        return self.eos_token_ids[0] if self.eos_token_ids else None

    @property
    def pad_is_eos(self) -> bool:
        return self.pad_token_id is not None and self.pad_token_id in self.eos_token_ids

    @property
    def label_bound(self) -> tuple[int, str] | None:
        """The exclusive upper bound of a label id, and what it is, when known."""
        if self.label_space == "classes":
            return (self.num_labels, "num_labels") if self.num_labels else None
        if self.embedding_rows is not None:
            return self.embedding_rows, "embedding rows"
        if self.vocab_size is not None and self.label_space == "tokens":
            return self.vocab_size, "vocab_size"
        if self.tokenizer_size is not None and self.label_space != "classes":
            return self.tokenizer_size, "len(tokenizer)"
        return None

    def where(self, name: str) -> str:
        """`pad_token_id=0 (from the tokenizer)`, for messages."""
        source = self.origin.get(name)
        return f" (from {source})" if source else ""


# ---------------------------------------------------------------------- building one


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_floating_point or value.is_meta:
            return None
        return int(value.item())
    try:
        return int(value) if int(value) == value else None
    except (TypeError, ValueError, OverflowError):
        return None


def _ids(value: Any) -> tuple[int, ...]:
    """An id, or a list of ids (some configs list several EOS ids)."""
    if isinstance(value, (list, tuple)):
        return tuple(i for i in (_int_or_none(v) for v in value) if i is not None)
    single = _int_or_none(value)
    return () if single is None else (single,)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_meta:
            return None
        return float(value.reshape(()).item())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _as_tensor(value: Any) -> torch.Tensor | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value
    try:  # lists of lists from a dataset before collation
        return torch.as_tensor(value)
    except Exception:
        return None


def model_facts(model: Any) -> dict[str, Any]:
    """What a model says about its batches: ids from its config, embedding rows, who shifts."""
    facts: dict[str, Any] = {}
    config = getattr(model, "config", None)
    if config is not None:
        for name in ("pad_token_id", "vocab_size", "num_labels"):
            try:
                value = getattr(config, name, None)
            except Exception:
                value = None
            if _int_or_none(value) is not None:
                facts[name] = _int_or_none(value)
        try:
            eos = _ids(getattr(config, "eos_token_id", None))
        except Exception:
            eos = ()
        if eos:
            facts["eos_token_ids"] = eos
        with contextlib.suppress(Exception):
            facts["encoder_decoder"] = bool(getattr(config, "is_encoder_decoder", False))
    rows = embedding_rows(model)
    if rows is not None:
        facts["embedding_rows"] = rows
    shift, space = _head(model, config)
    if shift is not None:
        facts["shift"] = shift
    if shift == "model" and _loss_type_unset(model):
        facts["loss_type_unset"] = True
    if space is not None:
        facts["label_space"] = space
    return facts


def embedding_rows(model: Any) -> int | None:
    getter = getattr(model, "get_input_embeddings", None)
    if getter is None:
        return None
    try:
        embedding = getter()
        rows = getattr(embedding, "num_embeddings", None)
        if rows is None:
            rows = embedding.weight.shape[0]
        return int(rows)
    except Exception:
        return None


def _head(model: Any, config: Any) -> tuple[Shift | None, LabelSpace | None]:
    """Who shifts the labels and what they index, from the model's loss type or class name."""
    if config is not None and getattr(config, "is_encoder_decoder", False) is True:
        return "none", "tokens"  # labels are the decoder's, aligned with unshifted targets
    try:
        loss_type = getattr(model, "loss_type", None)
    except Exception:
        loss_type = None
    if isinstance(loss_type, str) and loss_type in _LOSS_TYPES:
        return _LOSS_TYPES[loss_type]  # type: ignore[return-value]
    name = type(model).__name__
    if name.endswith(_CAUSAL_SUFFIXES):
        return "model", "tokens"
    if name.endswith(_UNSHIFTED_TOKEN_SUFFIXES):
        return "none", "tokens"
    if name.endswith(_CLASS_SUFFIXES + _SEQUENCE_CLASS_SUFFIXES):
        return "none", "classes"
    if config is not None and getattr(config, "is_decoder", False) is True:
        return "model", "tokens"
    return None, None


def _loss_type_unset(model: Any) -> bool:
    """A transformers model that has `loss_type` and leaves it None: its loss falls back to the
    causal-LM loss, but `Trainer` reads `loss_type` to decide whether to count after the shift."""
    try:
        return hasattr(model, "loss_type") and model.loss_type is None
    except Exception:
        return False


def tokenizer_facts(tokenizer: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name in ("pad_token_id", "eos_token_id"):
        try:
            value = getattr(tokenizer, name, None)
        except Exception:
            value = None
        if name == "eos_token_id":
            if _ids(value):
                facts["eos_token_ids"] = _ids(value)
        elif _int_or_none(value) is not None:
            facts[name] = _int_or_none(value)
    with contextlib.suppress(Exception):
        facts["tokenizer_size"] = len(tokenizer)
    return facts


def build_context(
    batch: Mapping[str, Any],
    *,
    model: Any = None,
    tokenizer: Any = None,
    model_info: dict[str, Any] | None = None,
    pad_token_id: int | None = None,
    eos_token_id: int | list[int] | None = None,
    ignore_index: int = -100,
    shift: Shift | None = None,
    num_items_in_batch: Any = None,
    vocab_size: int | None = None,
    embedding_rows: int | None = None,
    num_labels: int | None = None,
) -> BatchContext:
    """A BatchContext from a collated batch. Explicit arguments win over the tokenizer, which
    wins over the model's config (a tokenizer given a pad token after the model was built is
    the newer truth). `model_info`: `model_facts(model)` computed once (the hook caches it)."""
    if shift is not None and shift not in SHIFTS:
        raise ValueError(f"Expected `shift` to be one of {SHIFTS} or None, but got {shift!r}")
    facts: dict[str, Any] = {}
    origin: dict[str, str] = {}
    layers: list[tuple[str, dict[str, Any]]] = []
    if model is not None or model_info is not None:
        info = dict(model_info if model_info is not None else model_facts(model))
        if model is not None and model_info is not None:
            rows = globals()["embedding_rows"](model)  # may change: resize_token_embeddings
            if rows is not None:
                info["embedding_rows"] = rows
        layers.append(("the model's config", info))
    if tokenizer is not None:
        layers.append(("the tokenizer", tokenizer_facts(tokenizer)))
    explicit = {
        "pad_token_id": _int_or_none(pad_token_id),
        "eos_token_ids": _ids(eos_token_id) or None,
        "shift": shift,
        "vocab_size": _int_or_none(vocab_size),
        "embedding_rows": _int_or_none(embedding_rows),
        "num_labels": _int_or_none(num_labels),
    }
    layers.append(("an argument", {k: v for k, v in explicit.items() if v is not None}))
    for source, values in layers:
        for key, value in values.items():
            facts[key] = value
            origin[key] = source
    if origin.get("embedding_rows") == "the model's config":
        origin["embedding_rows"] = "model.get_input_embeddings()"

    get = batch.get if isinstance(batch, Mapping) else (lambda key, default=None: default)
    items = num_items_in_batch if num_items_in_batch is not None else get("num_items_in_batch")
    ctx = BatchContext(
        input_ids=_as_tensor(get("input_ids")),
        labels=_as_tensor(get("labels")),
        attention_mask=_as_tensor(get("attention_mask")),
        shift_labels=_as_tensor(get("shift_labels")),
        pad_token_id=facts.get("pad_token_id"),
        eos_token_ids=tuple(facts.get("eos_token_ids") or ()),
        ignore_index=_int_or_none(ignore_index) if _int_or_none(ignore_index) is not None else -100,
        shift=facts.get("shift"),
        label_space=facts.get("label_space"),
        num_labels=facts.get("num_labels"),
        num_items_in_batch=_number(items),
        vocab_size=facts.get("vocab_size"),
        embedding_rows=facts.get("embedding_rows"),
        tokenizer_size=facts.get("tokenizer_size"),
        encoder_decoder=bool(facts.get("encoder_decoder", False)),
        loss_type_unset=bool(facts.get("loss_type_unset", False)) and facts.get("shift") == "model",
        origin=origin,
    )
    if ctx.label_space == "classes" and ctx.num_labels is None:
        ctx.label_space = None
    return ctx
