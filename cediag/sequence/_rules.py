"""CE5xx: the language-model mistakes that live around the (logits, labels) pair.

These rules read a collated batch and the ids around it (a `BatchContext`): the attention
mask, the pad and EOS ids, who shifts the labels, the embedding size, `num_items_in_batch`.
Their phase is "batch": the cross-entropy engine never runs them; `cediag.check_batch` and the
model hook (`cediag.sequence.attach`) do.
"""

from __future__ import annotations

from .._call import dtype_name, shape_str
from .._report import OptionEvidence, Severity, TensorEvidence, ValueEvidence
from ..rules._registry import CATEGORIES, Finding, Rule, rule
from ._context import BatchContext
from ._stats import BatchStats, count_over, pad_runs

CATEGORY = ("CE5", "Sequence context")
PHASE = "batch"  # the engine runs structure, values, final: never these
# The batch rules, in code order. `register()` adds them to the shared catalogue (RULES), so
# `cediag rules`, `cediag explain` and docs/rules.md list them; `check_batch` and the model
# hook read this list, so they work whether or not the catalogue has been told.
BATCH_RULES: list[Rule] = []


def batch_rule(code: str, slug: str, severity: str, phase: str, summary: str):
    """Declare a batch rule: the arguments of the registry's `@rule`, applied by `register()`."""

    def declare(function):
        BATCH_RULES.append(Rule(code, slug, Severity(severity), phase, summary, function))  # type: ignore[arg-type]
        return function

    return declare


def register() -> None:
    """Add the batch rules to the rule catalogue (idempotent)."""
    from ..rules._registry import RULES

    CATEGORIES.setdefault(*CATEGORY)
    for r in BATCH_RULES:
        if r.code not in RULES:
            rule(r.code, r.slug, r.severity.value, r.phase, r.summary)(r.function)


def select_batch_rules(
    select: list[str] | None = None, ignore: list[str] | None = None
) -> list[Rule]:
    """The batch rules matching `select` (codes, prefixes like `CE5`, or slugs) minus `ignore`,
    as `cediag.rules.select_rules` matches them."""

    def matches(r: Rule, pattern: str) -> bool:
        pattern = pattern.strip()
        return r.code.startswith(pattern.upper()) or r.slug == pattern.lower()

    chosen = [r for r in BATCH_RULES if not select or any(matches(r, p) for p in select)]
    return [r for r in chosen if not ignore or not any(matches(r, p) for p in ignore)]


MIN_EVIDENCE = 8  # supervised labels needed before the shift rules say anything
MATCH = 0.9  # share of supervised labels that must match one alignment ...
MISMATCH = 0.5  # ... while matching the other one at most this often


def _stats(ctx: BatchContext) -> BatchStats:
    return ctx.stats if ctx.stats is not None else BatchStats()


def _labels_evidence(ctx: BatchContext, what: str, count: int, total: int) -> ValueEvidence:
    return ValueEvidence(role="labels", what=what, count=count, total=total)


def _ids_evidence(ctx: BatchContext) -> list[OptionEvidence]:
    out = []
    if ctx.pad_token_id is not None:
        out.append(OptionEvidence(name="pad_token_id", value=str(ctx.pad_token_id)))
    if ctx.eos_token_ids:
        out.append(OptionEvidence(name="eos_token_id", value=str(ctx.eos_token_id)))
    return out


def _tensor(role: str, t) -> TensorEvidence:
    return TensorEvidence(role=role, shape=list(t.shape), dtype=dtype_name(t.dtype))


# ---------------------------------------------------------------------------------------------


@batch_rule(
    "CE501",
    "pad-trained-as-label",
    "error",
    "batch",
    "a label where the attention mask is 0 is not ignore_index",
)
def pad_trained_as_label(ctx: BatchContext) -> Finding | None:
    """Padding is trained as a label: exact, from the attention mask.

    ## What it does
    Fires when a batch has an `attention_mask` of the labels' (B, T) shape and some position
    whose mask is 0 carries a label other than `ignore_index` (-100). Exact: no heuristic,
    whatever the pad id is and whether it also occurs as a real token. One label is not
    padding: an EOS label on the first padded position right after a row's last token (when
    the pad id is the EOS id, a collator may keep it so the model learns to stop; the logits
    that predict it saw only real tokens).

    ## Why is this bad?
    The model is trained to predict padding: with right padding the loss is dominated by easy
    pad tokens, and a token-classification model padded with 0 ('O') reaches 99% accuracy and
    an F1 of 0. `labels = input_ids` keeps the pad id in the labels; a collator that pads labels
    with the pad id (or with 0) instead of -100 does the same.

    ## Example
    ```python
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    ```

    ## Use instead
    ```python
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    ```
    """
    s = _stats(ctx)
    if s.masked_supervised == 0:
        return None
    pad = ""
    if ctx.pad_token_id is not None and ctx.labels_2d is not None:
        off = ctx.attention_mask.to(ctx.labels.device) == 0
        n = int(((ctx.labels_2d == ctx.pad_token_id) & off).sum())  # a second look
        if n:
            pad = f" ({n} of them the pad id {ctx.pad_token_id})"
    return Finding(
        f"{s.masked_supervised} of {s.masked_positions} padded positions (attention_mask == 0) "
        f"carry a label other than ignore_index={ctx.ignore_index}{pad}: padding is trained as "
        "a label.",
        f"labels = labels.masked_fill(attention_mask == 0, {ctx.ignore_index})  # or pad the "
        f"labels with {ctx.ignore_index} in the collator",
        [
            _labels_evidence(
                ctx, "labelled where attention_mask == 0", s.masked_supervised, s.masked_positions
            ),
            *_ids_evidence(ctx),
        ],
    )


@batch_rule(
    "CE502",
    "pad-run-trained-as-label",
    "warning",
    "batch",
    "label rows start or end in runs of one id far longer than its runs elsewhere",
)
def pad_run_trained_as_label(ctx: BatchContext) -> Finding | None:
    """Padding is trained as a label: heuristic, without an attention mask.

    ## What it does
    Without an attention mask, fires when at least two label rows (or the only row) start or
    end in a run of one id, the pad id when it is known, at least 4 long and at least 3 times
    longer than any run of that id elsewhere in the batch, and that id is not `ignore_index`.
    A pad id that is also a real token (id 0, a packed corpus) occurs mid-row in short runs,
    so it still counts. Flattened (B*T,) labels are read back as (B, T) with the input_ids'
    shape; without input_ids the rows of a flattened batch are not known and the rule stays
    silent.

    ## Why is this bad?
    As for `pad-trained-as-label`: the model learns to predict padding. A run of one id at the
    end of several rows, far longer than anywhere else, is what padding looks like.

    ## Example
    ```python
    labels = tokenizer(texts, padding=True, return_tensors="pt").input_ids
    model(input_ids=labels, labels=labels)        # no attention_mask, pad id in the labels
    ```

    ## Use instead
    ```python
    labels = labels.masked_fill(labels == tokenizer.pad_token_id, -100)
    ```

    ## False alarms
    A real label repeated at least 4 times at the end of two rows, and never more than a third
    as long elsewhere, reads as padding. Pass the attention mask to make the verdict exact.
    """
    aligned = ctx.labels_2d if ctx.labels_2d is not None else ctx.labels
    if ctx.attention_mask is not None or aligned is None or aligned.dim() != 2:
        return None
    rows, length = aligned.shape
    if rows == 0 or length < 2 * 4:
        return None
    token = ctx.pad_token_id
    if token is None:  # the id most rows end with
        last = aligned[:, -1].tolist()
        token = max(set(last), key=last.count)
        if last.count(token) < 2:
            return None
    if token == ctx.ignore_index:
        return None
    runs = pad_runs(aligned, token)
    if runs.rows_padded < (1 if rows == 1 and ctx.pad_token_id is not None else 2):
        return None
    longest = "" if not runs.longest_elsewhere else f", {runs.longest_elsewhere} elsewhere"
    return Finding(
        f"{runs.rows_padded} of {rows} label rows start or end in a run of id {token}"
        f"{ctx.where('pad_token_id') if token == ctx.pad_token_id else ''} (up to "
        f"{runs.longest_edge} of {length} positions{longest}): padding trained as a label, "
        f"since ignore_index is {ctx.ignore_index}.",
        f"labels = labels.masked_fill(attention_mask == 0, {ctx.ignore_index})  # pass "
        "attention_mask with the batch; or mask the pad id if it is only ever padding",
        [
            _labels_evidence(
                ctx, f"edge runs of {token}", runs.padded_positions, runs.rows * runs.length
            )
        ],
    )


@batch_rule(
    "CE503",
    "eos-never-learned",
    "warning",
    "batch",
    "pad id == EOS id and every EOS position is ignored",
)
def eos_never_learned(ctx: BatchContext) -> Finding | None:
    """The model never sees EOS as a label, so it never learns to stop.

    ## What it does
    Fires when the pad id equals the EOS id, the input_ids hold that id, and not one of those
    positions is supervised (every label there is `ignore_index`), in a batch whose labels are
    token ids of a language model (not masked-LM or classification labels). Needs the pad and
    EOS ids (from the tokenizer, the model's config, or arguments).

    ## Why is this bad?
    `tokenizer.pad_token = tokenizer.eos_token` followed by a collator that masks every pad id
    to -100 masks every real EOS with it. The loss never asks for EOS, so generation runs on to
    the length limit.

    ## Example
    ```python
    tokenizer.pad_token = tokenizer.eos_token
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)   # labels[pad] = -100
    ```

    ## Use instead
    ```python
    tokenizer.add_special_tokens({"pad_token": "<pad>"})   # a pad distinct from EOS
    model.resize_token_embeddings(len(tokenizer))
    ```
    """
    s = _stats(ctx)
    if not ctx.pad_is_eos or ctx.shift == "none" or ctx.label_space == "classes":
        return None
    if s.eos_inputs == 0 or s.eos_labels > 0 or s.supervised == 0:
        return None
    attended = ""
    if s.eos_inputs_attended:
        attended = f" ({s.eos_inputs_attended} of them real tokens, attention_mask 1)"
    return Finding(
        f"pad_token_id == eos_token_id == {ctx.pad_token_id}{ctx.where('pad_token_id')}, and "
        f"all {s.eos_inputs} positions holding it in input_ids{attended} are labelled "
        f"{ctx.ignore_index}: the model is never asked to predict EOS, so it never learns to stop.",
        "tokenizer.add_special_tokens({'pad_token': '<pad>'}); "
        "model.resize_token_embeddings(len(tokenizer))  # or keep the first EOS of each row in "
        "the labels",
        [
            _labels_evidence(ctx, "EOS positions ignored", s.eos_inputs, s.eos_inputs),
            *_ids_evidence(ctx),
        ],
    )


@batch_rule(
    "CE504",
    "labels-shifted-twice",
    "error",
    "batch",
    "the caller shifted labels that the model shifts again",
)
def labels_shifted_twice(ctx: BatchContext) -> Finding | None:
    """Labels shifted by the caller, and again by the model: next-next-token training.

    ## What it does
    Fires when the model shifts the labels itself (a causal LM's own loss: `...ForCausalLM`,
    `...LMHeadModel`) and at least 90% of the supervised labels equal the *next* input id
    (`labels[:, t] == input_ids[:, t + 1]`) while at most half equal the input id at their own
    position (at least 8 supervised labels). Decidable only when it is known who shifts: a
    model given with `model=`, or `shift="model"`. With `shift="caller"` (the caller computes the
    loss on the logits) pre-shifted labels are right, and this rule is silent.

    ## Why is this bad?
    A causal LM's loss already compares logits[t] with labels[t + 1]. Labels shifted before
    that train the model to predict the token after next: the loss goes down, the model
    generates nonsense.

    ## Example
    ```python
    labels = torch.full_like(input_ids, -100)
    labels[:, :-1] = input_ids[:, 1:]
    model(input_ids=input_ids, labels=labels)
    ```

    ## Use instead
    ```python
    model(input_ids=input_ids, labels=input_ids.masked_fill(attention_mask == 0, -100))
    ```
    """
    s = _stats(ctx)
    if ctx.shift != "model" or ctx.shift_labels is not None or s.supervised_head < MIN_EVIDENCE:
        return None
    if s.same_as_next < MATCH * s.supervised_head or s.same_as_input > MISMATCH * s.supervised:
        return None
    return Finding(
        f"{s.same_as_next} of {s.supervised_head} supervised labels equal the next input id "
        f"(labels[:, t] == input_ids[:, t + 1]): the labels are already shifted, and the model "
        "shifts them again, so it learns the token after next.",
        "labels = input_ids.masked_fill(attention_mask == 0, -100)  # drop the manual shift: "
        "the model shifts internally",
        [_labels_evidence(ctx, "equal to the next input id", s.same_as_next, s.supervised_head)],
    )


@batch_rule(
    "CE505",
    "labels-not-shifted",
    "error",
    "batch",
    "the caller computes the loss on labels that nobody shifted",
)
def labels_not_shifted(ctx: BatchContext) -> Finding | None:
    """Labels equal to input_ids where the caller is the one who must shift: copy training.

    ## What it does
    Fires when the caller computes the loss on a causal LM's logits itself (`shift="caller"`)
    and at least 90% of the supervised labels equal the input id at their own position (at
    least 8 supervised labels) while at most half equal the next one. Only the caller can say
    who shifts: a batch alone cannot tell a hand-written loss on causal logits (which needs
    shifted labels) from a masked-LM or token-classification loss (which must not shift), so
    without `shift="caller"` this rule is silent.

    ## Why is this bad?
    logits[t] of a causal LM has seen input_ids[t]; comparing it with labels[t] ==
    input_ids[t] trains the model to copy its input. The loss falls to near zero and the model
    learns nothing about the next token.

    ## Example
    ```python
    logits = model(input_ids).logits
    F.cross_entropy(logits.transpose(1, 2), input_ids)
    ```

    ## Use instead
    ```python
    F.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:])
    # or let the model do it: model(input_ids=input_ids, labels=input_ids).loss
    ```
    """
    s = _stats(ctx)
    if ctx.shift != "caller" or ctx.shift_labels is not None or s.supervised < MIN_EVIDENCE:
        return None
    if s.same_as_input < MATCH * s.supervised or s.same_as_next > MISMATCH * s.supervised_head:
        return None
    return Finding(
        f"{s.same_as_input} of {s.supervised} supervised labels equal the input id at their own "
        "position, and the loss is computed without a shift: logits[t] is trained to copy "
        "input_ids[t] instead of predicting the next token.",
        "F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:])  # shift by one, or pass "
        "labels to the model and use its .loss",
        [_labels_evidence(ctx, "equal to the input id", s.same_as_input, s.supervised)],
    )


@batch_rule(
    "CE506",
    "label-beyond-embedding",
    "error",
    "batch",
    "a label or input id is >= the model's embedding rows / vocab / num_labels",
)
def label_beyond_embedding(ctx: BatchContext) -> Finding | None:
    """A label (or input) id the model has no row for.

    ## What it does
    Fires when a supervised label is >= the number of the model's input-embedding rows
    (`model.get_input_embeddings().num_embeddings`, else `config.vocab_size`, else
    `len(tokenizer)`), or >= `num_labels` for a classification head; or when an input id is
    >= the embedding rows. Exact, given the sizes.

    ## Why is this bad?
    Tokens added to the tokenizer (`add_tokens`, `add_special_tokens`, a new pad token) without
    `model.resize_token_embeddings(len(tokenizer))` get ids past the end of the embedding and
    the output layer. On CPU torch raises an IndexError; on CUDA it is a device-side assert that
    kills the process and names nothing.

    ## Example
    ```python
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    model(**tokenizer(texts, padding=True, return_tensors="pt"), labels=...)
    ```

    ## Use instead
    ```python
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    model.resize_token_embeddings(len(tokenizer))
    ```
    """
    s = _stats(ctx)
    bound = ctx.label_bound
    rows = ctx.embedding_rows
    label_over = bound is not None and s.label_max is not None and s.label_max >= bound[0]
    input_over = rows is not None and s.input_max is not None and s.input_max >= rows
    if not (label_over or input_over):
        return None
    bad_labels = count_over(ctx.labels, bound[0], ctx.ignore_index) if label_over and bound else 0
    bad_inputs = count_over(ctx.input_ids, rows) if input_over and rows is not None else 0
    parts = []
    if bad_labels and bound is not None:
        key = {"embedding rows": "embedding_rows", "vocab_size": "vocab_size"}.get(bound[1], "")
        name = (
            f"the {bound[0]} {bound[1]}"
            if bound[1] == "embedding rows"
            else f"{bound[1]}={bound[0]}"
        )
        parts.append(
            f"{bad_labels} supervised labels are >= {name}{ctx.where(key)} "
            f"(the largest is {s.label_max})"
        )
    if bad_inputs:
        parts.append(
            f"{bad_inputs} input ids are >= the {ctx.embedding_rows} embedding rows "
            f"(the largest is {s.input_max})"
        )
    message = " and ".join(parts) + ": the model has no row for these ids."
    if bound is not None and bound[1] == "num_labels":
        fix = (
            f"build the model with num_labels > {s.label_max} "
            "(AutoModelFor...from_pretrained(..., num_labels=len(label_list)))"
        )
    else:
        if ctx.tokenizer_size is not None and rows is not None and ctx.tokenizer_size > rows:
            message += (
                f" The tokenizer has {ctx.tokenizer_size} tokens and the embedding {rows} rows: "
                "tokens were added without resizing the model."
            )
        fix = "model.resize_token_embeddings(len(tokenizer))"
    evidence: list = [
        _labels_evidence(ctx, f">= {bound[0]}" if bound else "beyond", bad_labels, s.labels_total)
    ]
    if ctx.embedding_rows is not None:
        evidence.append(OptionEvidence(name="embedding_rows", value=str(ctx.embedding_rows)))
    return Finding(message, fix, evidence)


@batch_rule(
    "CE507",
    "no-supervised-token",
    "error",
    "batch",
    "every label of the batch is ignored (after the shift)",
)
def no_supervised_token(ctx: BatchContext) -> Finding | None:
    """Nothing in the batch to learn from, and why.

    ## What it does
    Fires when every label the loss would see (after the model's shift, for a causal LM) is
    `ignore_index`, and says why when the batch shows it: every row filled to its length
    (truncation cut off each response after completion-only masking hid the prompt), padded
    rows with every label masked (the response template was not found), or the only labels at
    position 0, which the shift drops. `all-targets-ignored` (CE211) is the same verdict on a
    flat loss call, without the why.

    ## Why is this bad?
    The mean over zero labels is 0/0: a NaN loss that poisons the weights through the
    optimizer, or, in kernels that guard the division, a silent zero that trains nothing.

    ## Example
    ```python
    # prompt masked to -100, then truncated to max_length before the response starts
    batch = collator([tokenizer(prompt + response, truncation=True, max_length=32)])
    ```

    ## Use instead
    ```python
    # truncate the prompt, not the response; or drop examples with no response token left
    dataset = dataset.filter(lambda ex: any(label != -100 for label in ex["labels"][1:]))
    ```
    """
    s = _stats(ctx)
    if ctx.labels is None or s.targets_after_shift == 0 or s.supervised_after_shift > 0:
        return None
    n = s.targets_after_shift
    why = ""
    aligned, mask = ctx.labels_2d, ctx.attention_mask
    first_column = int((aligned[:, 0] != ctx.ignore_index).sum()) if aligned is not None else 0
    full_rows = 0
    if mask is not None and aligned is not None and tuple(mask.shape) == tuple(aligned.shape):
        full_rows = int((mask != 0).all(dim=1).sum())  # second looks: the batch is already lost
    if s.supervised > 0 and s.supervised == first_column and ctx.shift == "model":
        why = (
            f" The only {s.supervised} supervised labels sit at position 0, which the model's "
            "shift drops (position 0 is never predicted)."
        )
    elif mask is not None and s.rows and full_rows == s.rows:
        why = (
            f" Every row fills all {s.length} positions (attention_mask all 1): truncation at "
            "max_length cut each row before its first supervised token, likely after "
            "completion-only masking hid the prompt."
        )
    elif mask is not None and s.masked_positions:
        why = (
            f" {s.rows - full_rows} of {s.rows} rows are padded, so they were not truncated: "
            "the masking hid every token (is the response template found in the tokenized text?)."
        )
    return Finding(
        f"all {n} labels the loss sees are ignore_index={ctx.ignore_index}: the mean over zero "
        f"labels is NaN.{why}",
        "truncate the prompt rather than the response (or raise max_length), and drop examples "
        "with no supervised label left: "
        "dataset.filter(lambda ex: any(t != -100 for t in ex['labels'][1:]))",
        [_labels_evidence(ctx, "ignored", n, n)],
    )


@batch_rule(
    "CE508",
    "label-length-mismatch",
    "error",
    "batch",
    "labels and input_ids differ in length",
)
def label_length_mismatch(ctx: BatchContext) -> Finding | None:
    """Token labels whose (B, T) shape is not input_ids' shape.

    ## What it does
    Fires when 2-D labels and 2-D input_ids differ in shape, or 1-D labels of a token-level
    loss (a causal LM, or `shift="caller"`) do not hold B*T elements. Needs to know the head
    (`model=`, or `shift=`): an encoder-decoder batch's labels are the decoder's and have their
    own length, so without it the rule is silent; silent also for (B,) sequence labels of a
    classification head.

    ## Why is this bad?
    `labels = input_ids[:, 1:]` (a manual shift by slicing) is one shorter than the logits: a
    causal LM's loss then fails with a shape error deep inside, or, when a caller pads it back,
    trains on misaligned tokens. Labels tokenized separately from the inputs have their own
    length and do not line up with them at all.

    ## Example
    ```python
    model(input_ids=input_ids, labels=input_ids[:, 1:])
    ```

    ## Use instead
    ```python
    model(input_ids=input_ids, labels=input_ids)   # the model shifts internally
    ```
    """
    labels, ids = ctx.labels, ctx.input_ids
    if labels is None or ids is None or ctx.encoder_decoder or ids.dim() != 2:
        return None
    if ctx.shift is None:  # a seq2seq batch's labels have their own length: not decidable
        return None
    if labels.dim() == 2 and tuple(labels.shape) != tuple(ids.shape):
        hint = ""
        if labels.shape[0] == ids.shape[0] and labels.shape[1] == ids.shape[1] - 1:
            hint = " One shorter: the labels were shifted by slicing (labels = input_ids[:, 1:])."
        fix = (
            "labels = input_ids.masked_fill(attention_mask == 0, -100)  # same shape; the model "
            "shifts internally"
            if ctx.shift == "model"
            else "tokenize labels with the inputs so each label lines up with an input position"
        )
        return Finding(
            f"labels {shape_str(labels.shape)} and input_ids {shape_str(ids.shape)} differ in "
            f"shape: each label must line up with one input position.{hint}",
            fix,
            [_tensor("labels", labels), _tensor("input_ids", ids)],
        )
    token_level = ctx.shift in ("model", "caller") and ctx.label_space != "classes"
    if labels.dim() == 1 and token_level and labels.numel() != ids.numel():
        return Finding(
            f"flattened labels {shape_str(labels.shape)} hold {labels.numel()} elements, "
            f"input_ids {shape_str(ids.shape)} {ids.numel()}: they do not line up.",
            "labels = input_ids.masked_fill(attention_mask == 0, -100)  # (B, T), as input_ids",
            [_tensor("labels", labels), _tensor("input_ids", ids)],
        )
    return None


@batch_rule(
    "CE509",
    "num-items-mismatch",
    "error",
    "batch",
    "num_items_in_batch is not the count of supervised labels after the shift",
)
def num_items_mismatch(ctx: BatchContext) -> Finding | None:
    """The loss is divided by the wrong token count.

    ## What it does
    When `num_items_in_batch` is given (transformers' Trainer passes it to the model under
    gradient accumulation), fires when it differs from the number of labels the loss counts:
    labels != `ignore_index` after the model's shift (`labels[:, 1:]` for a causal LM), summed
    over every batch of the accumulation window (the batches passed together to `check_batch`,
    or the forwards the model hook sees with the same `num_items_in_batch`). When it is not
    known who shifts, either count (with or without the shift) is accepted. Across
    data-parallel ranks the other ranks' labels are not visible here: the check is made only
    in a single process.

    ## Why is this bad?
    A sum divided by the wrong count gives a loss whose scale depends on padding and on the
    number of micro-batches: the 2024 gradient-accumulation bug (a mean of per-batch means) and
    the off-by-one of counting `labels != -100` before the shift (one label per row too many).

    ## Example
    ```python
    n = (labels != -100).sum()                      # before the shift
    model(input_ids=ids, labels=labels, num_items_in_batch=n)
    ```

    ## Use instead
    ```python
    n = sum((b["labels"][:, 1:] != -100).sum() for b in window)   # after the shift, whole window
    ```
    """
    s = _stats(ctx)
    if ctx.num_items_in_batch is None or s.labels_total == 0:
        return None
    expected = s.supervised_after_shift + (ctx.window_supervised or 0)
    given = ctx.num_items_in_batch
    if abs(given - expected) < 0.5:
        return None
    unknown = ""
    if ctx.shift is None and s.supervised_if_shifted is not None:
        if_shifted = s.supervised_if_shifted + (ctx.window_supervised_if_shifted or 0)
        if abs(given - if_shifted) < 0.5:
            return None  # right if the model shifts; who shifts is not known here
        unknown = f" (or {if_shifted} if the model shifts them: pass model= or shift= to say which)"
    window = " over the accumulation window" if ctx.window_supervised is not None else ""
    before = s.supervised + (ctx.window_supervised_unshifted or 0)
    why = ""
    after = "labels[:, 1:] != -100" if ctx.shift == "model" else f"labels != {ctx.ignore_index}"
    fix = (
        f"num_items_in_batch = sum(({after.split(' !=')[0]} != {ctx.ignore_index}).sum() for "
        "each batch of the accumulation window)"
    )
    if ctx.shift == "model" and abs(given - before) < 0.5:
        why = " It counts the labels before the shift: one label per row too many."
        if ctx.loss_type_unset:
            why += (
                " transformers' Trainer counts this way when `model.loss_type` is None (as it"
                " is for GPT2LMHeadModel), though the model's loss shifts; if you count it"
                f" yourself: {fix}."
            )
            fix = (
                'model.loss_type = "ForCausalLM"  # before Trainer(...): it counts labels[..., 1:]'
            )
    elif expected and given and abs(given - round(given / expected) * expected) < 0.5:
        why = f" It is {round(given / expected)}x the count: is the window declared right?"
    return Finding(
        f"num_items_in_batch={given:g} but the loss counts {expected} supervised labels{window} "
        f"({after}){unknown}: the summed loss is divided by the wrong count, so its scale depends on "
        f"padding.{why}",
        fix,
        [
            OptionEvidence(name="num_items_in_batch", value=f"{given:g}"),
            _labels_evidence(ctx, "supervised after the shift", expected, expected),
        ],
    )
