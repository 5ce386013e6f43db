"""The declared format of every file of a run folder: what :mod:`utils.run_folder`'s readers check and the
run-folder format in ``docs/run_folder.md`` is written from (:func:`format_markdown`), so the two cannot drift.

JSON files are described by ``TypedDict`` schemas that pydantic validates strictly (no type conversion: a
string is not a number, a boolean not an integer; every number finite); arrays by :class:`ArraySpec`.
:func:`validate` turns the first violation into one :class:`~mi_estimators.checks.InputError` naming the
file and the field. Keys outside a schema are kept (a newer version of the toolkit may add fields), but
every value anywhere in a JSON file must be finite.
"""

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Iterator, Literal, Mapping, get_args, get_origin, get_type_hints

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from mi_estimators.checks import DROPOUT_KINDS, NOISE_KINDS, InputError

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""Layer and estimator names: they become parts of file names."""
EPOCH_PATTERN = r"^(0|[1-9][0-9]*)$"
"""An epoch as a JSON key: a canonical non-negative integer (``"7"``, not ``"07"`` or ``"7.0"``)."""
SPLITS = ("train", "test")
DropoutKind = Literal["gaussian", "information", "bernoulli"]
assert get_args(DropoutKind) == DROPOUT_KINDS
NoiseKind = Literal["gaussian", "information", "bernoulli", "additive"]
assert get_args(NoiseKind) == NOISE_KINDS

_STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
EpochKey = Annotated[str, Field(pattern=EPOCH_PATTERN)]
Split = Literal["train", "test"]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]
Index = Annotated[int, Field(ge=0)]


# -- config.json --------------------------------------------------------------------------------------


@with_config(_STRICT)
class LayerSpec(TypedDict):
    """One analysed noise layer (``config.json`` ``layers[i]``): the one source of its noise level."""

    name: Annotated[Name, Field(description="the layer's name; a file-name tag when the run has several layers")]
    dim: Annotated[Count, Field(description="units per input of f(x): the width of its representation files")]
    dropout: Annotated[NoiseKind, Field(description="the noise kind: a dropout kind or additive Gaussian noise")]
    p: Annotated[Finite | None, Field(description="Gaussian/Bernoulli dropout rate in (0, 1); null otherwise")]
    noise_std: Annotated[
        Finite | None, Field(description="Gaussian dropout: sqrt(p/(1-p)); additive noise: sigma; null otherwise")
    ]
    shape: NotRequired[Annotated[list[Count], Field(description="the shape of f(x) per input")]]
    alpha_max: NotRequired[Annotated[Positive | None, Field(description="information dropout: the largest alpha(x)")]]
    beta: NotRequired[Annotated[NonNegative | None, Field(description="information dropout: the KL weight")]]
    prior: NotRequired[Annotated[str | None, Field(description="information dropout: the prior of the KL term")]]
    kl_weight: NotRequired[Annotated[NonNegative | None, Field(description="information dropout: beta / N_train")]]
    upstream_noise: NotRequired[
        Annotated[list[Name], Field(description="noise layers before this one: its f(x) is random, not estimated")]
    ]


@with_config(_STRICT)
class Flags(TypedDict):
    """The training command's flags (``config.json`` ``flags``); those in ``DEFINING_FLAGS`` define the run."""

    dataset: NotRequired[Annotated[str, Field(description="dataset name")]]
    net: NotRequired[Annotated[str, Field(description="network name")]]
    dropout: NotRequired[Annotated[DropoutKind, Field(description="dropout kind")]]
    p: NotRequired[Annotated[Finite | None, Field(description="dropout rate")]]
    beta: NotRequired[Annotated[NonNegative | None, Field(description="information dropout's KL weight")]]
    alpha_max: NotRequired[Annotated[Positive | None, Field(description="information dropout's largest alpha")]]
    filters: NotRequired[Annotated[Positive | None, Field(description="fraction of conv filters")]]
    epochs: NotRequired[Annotated[Count, Field(description="training epochs")]]
    batch_size: NotRequired[Annotated[Count, Field(description="batch size")]]
    lr: NotRequired[Annotated[Positive, Field(description="initial learning rate")]]
    weight_decay: NotRequired[Annotated[NonNegative, Field(description="decoupled weight decay")]]
    save_every: NotRequired[Annotated[Count, Field(description="representations saved every N epochs")]]
    train_subset: NotRequired[Annotated[Count | None, Field(description="seeded subset of training inputs")]]
    repr_subset: NotRequired[Annotated[Count | None, Field(description="saved training inputs")]]
    metrics_subset: NotRequired[Annotated[Count | None, Field(description="inputs behind the KL/CE means")]]
    seed: NotRequired[Annotated[Index, Field(description="seed of weights, noise, order and subsets")]]


@with_config(_STRICT)
class DatasetInfo(TypedDict):
    """What the run trained on (``config.json`` ``dataset``)."""

    name: NotRequired[Annotated[str, Field(description="dataset name")]]
    source: NotRequired[Annotated[str, Field(description="where the data came from")]]
    n_train: NotRequired[Annotated[Count, Field(description="training inputs")]]
    n_test: NotRequired[Annotated[Count, Field(description="test inputs")]]
    n_classes: NotRequired[Annotated[Count, Field(description="classes")]]
    input_shape: NotRequired[Annotated[list[Count], Field(description="shape of one input")]]
    n_repr_train: NotRequired[Annotated[Count, Field(description="rows of the train representation files")]]
    n_repr_test: NotRequired[Annotated[Count, Field(description="rows of the test representation files")]]
    n_metrics_train: NotRequired[Annotated[Count, Field(description="inputs behind the callback's means")]]


@with_config(_STRICT)
class RunConfig(TypedDict):
    """``config.json``: written by the callback when a run starts (``resumed_at`` grows on each resume)."""

    layers: Annotated[list[LayerSpec], Field(min_length=1, description="the analysed dropout layers")]
    flags: NotRequired[Annotated[Flags, Field(description="the training command's flags")]]
    dataset: NotRequired[Annotated[DatasetInfo, Field(description="the dataset")]]
    versions: NotRequired[Annotated[dict[str, str], Field(description="Python, backend and library versions")]]
    model: NotRequired[Annotated[dict[str, Any], Field(description="model name, parameters, replicas")]]
    script: NotRequired[Annotated[str | None, Field(description="the training script")]]
    resumed_at: NotRequired[Annotated[list[Index], Field(description="completed epochs at each resume")]]
    seed: NotRequired[Annotated[Index, Field(description="the callback's seed (noise of its passes, subsets)")]]
    tags: NotRequired[Annotated[dict[str, Any], Field(description="the user's free-form tags; `name` names the group")]]
    from_logits: NotRequired[Annotated[bool, Field(description="whether the model's output is logits")]]
    warnings: NotRequired[Annotated[list[str], Field(description="what the callback found wrong with the set-up")]]


# -- IP/estimates.json --------------------------------------------------------------------------------


@with_config(_STRICT)
class ConvergencePoint(TypedDict):
    """One nested subset behind the saturation (entry ``convergence[i]``)."""

    n: Annotated[Count, Field(description="inputs in the subset")]
    mi_xz: NotRequired[Annotated[Finite | None, Field(description="I(X;Z) on the subset")]]
    mi_xz_upper: NotRequired[Annotated[Finite | None, Field(description="upper I(X;Z) on the subset")]]


@with_config(_STRICT)
class Entry(TypedDict):
    """One estimate (``estimates[estimator][layer][split][epoch]``); a ``skipped`` entry says why there is none.
    An estimator's entry has every field but ``skipped`` (null where it gives none), the callback's ``mi_xz``,
    ``mi_zy``, ``h_y``, ``sees``, ``params`` and ``settings``; ``log_n`` is log(``n_inputs``)."""

    settings: Annotated[dict[str, Any], Field(description="the cache key: what the entry was computed from")]
    skipped: NotRequired[Annotated[str, Field(description="why the estimator does not apply")]]
    mi_xz: NotRequired[Annotated[Finite | None, Field(description="I(X;Z), nats")]]
    mi_xz_stderr: NotRequired[Annotated[NonNegative | None, Field(description="its Monte Carlo error")]]
    mi_xz_sampling_stderr: NotRequired[Annotated[NonNegative | None, Field(description="its input-sampling error")]]
    mi_xz_upper: NotRequired[Annotated[Finite | None, Field(description="upper (leave-one-out) I(X;Z)")]]
    mi_xz_upper_stderr: NotRequired[Annotated[NonNegative | None, Field(description="its Monte Carlo error")]]
    mi_xz_upper_sampling_stderr: NotRequired[
        Annotated[NonNegative | None, Field(description="its input-sampling error")]
    ]
    mi_zy: NotRequired[Annotated[Finite | None, Field(description="I(Y;Z), nats")]]
    mi_zy_stderr: NotRequired[Annotated[NonNegative | None, Field(description="its Monte Carlo error")]]
    mi_zy_sampling_stderr: NotRequired[Annotated[NonNegative | None, Field(description="its input-sampling error")]]
    n_inputs: NotRequired[Annotated[Count | None, Field(description="N, the analysed inputs")]]
    log_n: NotRequired[Annotated[NonNegative | None, Field(description="log N, the ceiling of I(X;Z)")]]
    h_y: NotRequired[Annotated[NonNegative | None, Field(description="H(Y) of the labels, the ceiling of I(Y;Z)")]]
    saturation: NotRequired[Annotated[Finite | None, Field(description="dI(X;Z)/dlog N (near 1: limited by N)")]]
    convergence: NotRequired[
        Annotated[list[ConvergencePoint] | None, Field(description="the nested subsets behind the saturation")]
    ]
    sees: NotRequired[Annotated[str, Field(description="what the estimator sees: noisy Z or f(x)")]]
    params: NotRequired[Annotated[dict[str, Any], Field(description="the estimator's own provenance")]]
    warnings: NotRequired[Annotated[list[str], Field(description="warnings raised while estimating")]]


ESTIMATE_FIELDS = (
    *(f"{q}{suffix}" for q in ("mi_xz", "mi_xz_upper", "mi_zy") for suffix in ("", "_stderr", "_sampling_stderr")),
    "n_inputs",
    "log_n",
    "h_y",
    "saturation",
    "convergence",
    "sees",
    "params",
    "warnings",
)
"""The fields of every estimator's entry that is not ``skipped`` (null where the estimator gives none);
the callback's entries (estimator ``"callback"``) have ``mi_xz``, ``mi_zy``, ``h_y``, ``sees`` and ``params``."""
CALLBACK_FIELDS = ("mi_xz", "mi_zy", "h_y", "sees", "params")


def check_entries(data: "EstimatesFile", where: str) -> None:
    """What the schema of an entry cannot say alone: the fields every entry of its kind has
    (:data:`ESTIMATE_FIELDS`, :data:`CALLBACK_FIELDS`), and log_n = log(n_inputs)."""
    for (name, layer, split, epoch), entry in iter_entries(data["estimates"]):
        at = f"{where}: estimates.{name}.{layer}.{split}.{epoch}"
        if "skipped" in entry:
            continue
        required = CALLBACK_FIELDS if name == "callback" else ESTIMATE_FIELDS
        missing = [k for k in required if k not in entry]
        if missing:
            raise InputError(f"{at} lacks {missing[0]!r}")
        n, log_n = entry.get("n_inputs"), entry.get("log_n")
        if n is not None and (log_n is None or not math.isclose(log_n, math.log(n), rel_tol=1e-9)):
            raise InputError(f"{at}.log_n {log_n!r} is not log(n_inputs) for n_inputs = {n}")


EntryKey = tuple[str, str, str, int]
"""(estimator, layer, split, epoch): where an entry lives in ``estimates.json``."""


def iter_entries(estimates: Mapping[str, Any]) -> Iterator[tuple[EntryKey, Any]]:
    """Every ``((estimator, layer, split, epoch), entry)`` of the ``estimates`` part of ``estimates.json``
    (``{estimator: {layer: {split: {"<epoch>": entry}}}}``): estimators, layers and splits in the file's
    order, the epochs of each in increasing order."""
    for name, layers in estimates.items():
        for layer, splits in layers.items():
            for split, by_epoch in splits.items():
                for epoch, entry in sorted(by_epoch.items(), key=lambda kv: int(kv[0])):
                    yield (name, layer, split, int(epoch)), entry


EntriesByEpoch = dict[EpochKey, Entry]
Estimates = dict[Name, dict[Name, dict[Split, EntriesByEpoch]]]


@with_config(_STRICT)
class EstimatesFile(TypedDict):
    """``IP/estimates.json``: ``estimates[estimator][layer][split][epoch]`` is an :class:`Entry`."""

    format: Annotated[Literal[3], Field(description="the layout's version (3)")]
    estimates: Annotated[Estimates, Field(description="estimator -> layer -> split -> epoch -> entry")]


ESTIMATES_FORMAT: Literal[3] = 3

# -- IP/<split>_<quantity>[_<layer>].json ---------------------------------------------------------------

IPValues = dict[EpochKey, Finite | None]
"""``{"<epoch>": value}``: the callback's value of that epoch, null where it was not finite."""

_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(schema: Any) -> TypeAdapter:
    if schema not in _ADAPTERS:
        own = isinstance(schema, type) and issubclass(schema, dict) and hasattr(schema, "__required_keys__")
        _ADAPTERS[schema] = TypeAdapter(schema) if own else TypeAdapter(schema, config=_STRICT)
    return _ADAPTERS[schema]


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            out += " (a key)"
        elif isinstance(part, int):
            out += f"[{part}]"
        elif part in ("float", "int", "str", "none", "list", "dict") or str(part).startswith(("function-", "literal")):
            continue  # pydantic's names for the branches of a union
        else:
            out += f".{part}" if out else str(part)
    return out or "the top level"


def validate(data: Any, schema: Any, where: str) -> Any:
    """``data`` checked against ``schema`` and returned unchanged (so that re-writing it changes no byte);
    one :class:`InputError` ``"<where>: <field>: <what is wrong> (got ...)"`` otherwise."""
    bad = nonfinite_path(data)
    if bad is not None:
        raise InputError(f"{where}: {bad or 'the top level'} is not a finite number (NaN or infinite)")
    try:
        _adapter(schema).validate_python(data)
    except ValidationError as err:
        first = err.errors()[0]
        got = repr(first.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        raise InputError(f"{where}: {_field_path(first['loc'])}: {first['msg'].lower()} (got {got})") from None
    return data


def nonfinite_path(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinite number inside a parsed JSON value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = nonfinite_path(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = nonfinite_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def check_layer(layer: LayerSpec, where: str) -> None:
    """What the schema of a layer cannot say alone: p in (0, 1) where there is one, noise_std =
    sqrt(p/(1-p)) for Gaussian dropout and > 0 for additive noise, alpha_max, beta and prior for
    information dropout."""
    kind, p = layer["dropout"], layer["p"]
    if kind == "additive":
        if layer["noise_std"] is None or not layer["noise_std"] > 0:
            raise InputError(f"{where}.noise_std must be a number > 0 (additive noise), got {layer['noise_std']!r}")
        return
    if kind == "information":
        missing = [k for k in ("alpha_max", "beta", "prior") if k not in layer]
        if missing:
            raise InputError(f"{where} (information dropout) lacks {missing[0]!r}")
        return
    if p is None or not 0.0 < p < 1.0:
        raise InputError(f"{where}.p must be a number in (0, 1), got {p!r}")
    std = layer["noise_std"]
    if kind == "gaussian" and (std is None or not math.isclose(std, math.sqrt(p / (1.0 - p)), rel_tol=1e-9)):
        raise InputError(f"{where}.noise_std {std!r} is not sqrt(p/(1-p)) for p = {p}")


# -- arrays ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySpec:
    """What a ``.npy`` of the run folder holds: its dtype kinds (``"f"`` float, ``"iu"`` integer), its number of
    dimensions (``ndim``: exactly; else at least ``min_ndim``) and what its rows are."""

    describe: str
    kinds: str
    rows: str
    ndim: int | None = None
    min_ndim: int = 1

    def dims(self) -> str:
        count = self.ndim if self.ndim is not None else self.min_ndim
        return f"{'' if self.ndim is not None else 'at least '}{count} dimension{'s' if count > 1 else ''}"


REPRESENTATION = ArraySpec(
    "f(x), the noise-free input of the layer (rows flattened to dim)", "f", "the split's saved inputs", min_ndim=2
)
ALPHA = ArraySpec("alpha(x) of an information-dropout layer", "f", "the split's saved inputs", min_ndim=2)
INPUTS = ArraySpec("the saved inputs", "fiu", "one per saved input")
LABELS = ArraySpec("the labels (integer classes >= 0)", "iu", "one per saved input", ndim=1)

MAX_JSON_BYTES = 1 << 30
"""A JSON file of a run folder beyond this is not one the toolkit wrote (estimates.json of 200 epochs,
6 estimators and 2 splits is a few MB)."""

# -- history.csv -------------------------------------------------------------------------------------------


# -- checkpoint.npz ------------------------------------------------------------------------------------------

CHECKPOINT_KEY = re.compile(r"^(model|optimizer)_[0-9]{5}$")
"""The array names of ``checkpoint.npz`` besides ``epochs_done`` (:data:`CHECKPOINT_DOC`)."""


# -- the format, as documentation ----------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        inner, meta = args[0], args[1:]
        text = _type_name(inner)
        for m in meta:
            for attr in getattr(m, "metadata", ()):
                for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >=")):
                    if getattr(attr, key, None) is not None:
                        text += f" {sym} {getattr(attr, key)}"
                if getattr(attr, "pattern", None):
                    text += f" matching `{attr.pattern}`"
            if getattr(m, "allow_inf_nan", None) is False:
                text = text.replace("number", "finite number")
        return text
    if origin is Literal:
        return " or ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (list,):
        return f"list of {_type_name(args[0])}"
    if origin in (dict,):
        return f"object {{{_type_name(args[0])}: {_type_name(args[1])}}}"
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(a) for a in rest) + " or null"
    if args:
        return " or ".join(_type_name(a) for a in args)
    return {float: "number", int: "integer", str: "string", bool: "boolean", Any: "any JSON"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _table(schema: Any) -> list[str]:
    hints = get_type_hints(schema, include_extras=True)
    lines = [
        f"**{schema.__name__}** — {(schema.__doc__ or '').strip()}",
        "",
        "| field | type | meaning |",
        "|---|---|---|",
    ]
    required: frozenset[str] = getattr(schema, "__required_keys__", frozenset())
    for name, tp in hints.items():
        if name.startswith("__"):
            continue
        if get_origin(tp) is NotRequired:
            tp = get_args(tp)[0]
        description = ""
        if get_origin(tp) is Annotated:
            description = next((m.description for m in get_args(tp)[1:] if getattr(m, "description", None)), "")
        optional = "" if name in required else " (optional)"
        lines.append(f"| `{name}`{optional} | {_type_name(tp)} | {description} |")
    return lines + [""]


def format_markdown() -> str:
    """The run-folder format, from the schemas above: the generated part of ``docs/run_folder.md``."""
    parts = [
        "Every number in a JSON file is finite; fields not listed are kept but not read.",
        "",
        *_table(RunConfig),
        *_table(LayerSpec),
        *_table(Flags),
        *_table(DatasetInfo),
        *_table(EstimatesFile),
        *_table(Entry),
        *_table(ConvergencePoint),
        f"**IP/<split>_<quantity>[_<layer>].json** — {_type_name(IPValues)}: the callback's value per epoch, "
        "null where it was not finite.",
        "",
        "**Arrays** (`.npy`, read with `allow_pickle=False`; the size must match the header):",
        "",
        "| file | dtype | dimensions | rows |",
        "|---|---|---|---|",
    ]
    kinds = {"f": "float", "fiu": "float or integer", "iu": "integer"}
    for pattern, spec in (
        ("representations/no_noise_<split>_representations[_<layer>]_<epoch>.npy", REPRESENTATION),
        ("representations/alpha_<split>[_<layer>]_<epoch>.npy", ALPHA),
        ("representations/<split>_inputs.npy", INPUTS),
        ("representations/<split>_labels.npy", LABELS),
    ):
        parts.append(f"| `{pattern}` | {kinds[spec.kinds]} | {spec.dims()} | {spec.rows}: {spec.describe} |")
    parts += [
        "",
        f"**history.csv** — {_doc(HISTORY_DOC)}",
        "",
        f"**checkpoint.npz** — {_doc(CHECKPOINT_DOC)}",
        "",
    ]
    return "\n".join(parts)


def _doc(text: str) -> str:
    return " ".join(text.split())


HISTORY_DOC = (
    "one row per completed epoch, `epoch` a canonical integer >= 1, increasing; every other cell a finite "
    "number or empty (loss, accuracy, test_loss, test_accuracy, learning_rate, seconds, callback_seconds)."
)
CHECKPOINT_DOC = (
    "`epochs_done` (an integer scalar >= 0) and `model_00000`, ..., `optimizer_00000`, ... (numeric arrays, one "
    "per variable in the model's and the optimiser's order); read with `allow_pickle=False`."
)


DOC_BEGIN = "<!-- generated from utils/run_folder_schema.py by `python -m utils.run_folder_schema`: do not edit -->"
DOC_END = "<!-- end of the generated part -->"


def with_format(doc: str) -> str:
    """``doc`` (the text of ``docs/run_folder.md``) with its generated part replaced by :func:`format_markdown`."""
    head, found, rest = doc.partition(DOC_BEGIN)
    _, found_end, tail = rest.partition(DOC_END)
    if not found or not found_end:
        raise InputError(f"the document has no {DOC_BEGIN!r} ... {DOC_END!r} part")
    return f"{head}{DOC_BEGIN}\n\n{format_markdown()}\n{DOC_END}{tail}"


if __name__ == "__main__":  # rewrite the generated part of docs/run_folder.md
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "run_folder.md"
    doc.write_text(with_format(doc.read_text()))
