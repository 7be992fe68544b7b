"""The spec language (format 1): pydantic models for a whole network.

A spec is: a name and description; the input (shape, optional preprocessing layers);
defaults shared by every layer; a stem and stages of blocks (each with `repeats`); a
head; optional taps (named feature outputs); an optional scaling section (width, depth
and resolution multipliers, compound-scaling coefficients, a table of presets).

Block types are the registered families (`archspec.language.blocks`), joined in a discriminated
union on `type`. Every model forbids unknown keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from .blocks import Block
from .common import Bool, Float, Initializer, PosFloat, PosInt, Rate, Strict
from .preprocess import Mode as PreprocessMode, check_channels


# `define:`'s model is here, below `define` (its checks), which imports it: no cycle
REQUIRED = "required"
RESERVED = ("type", "name", "repeats", "inputs", "in_channels", "in_shape", "rounding", "min_filters", "if",
            "true", "false", "null")


class Definition(Strict):
    """A new block type: ``{params: {name: default | required}, width_params: [...], body: [blocks]}``."""

    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "Parameter defaults; the string 'required' for a parameter every use must give."))
    width_params: list[str] = Field(default_factory=list, description=(
        "Params holding channel counts: width scaling multiplies them (and rounds them as filters)."))
    body: list[dict[str, Any]] = Field(min_length=1, description=(
        "The blocks, whose values may be expressions \"${...}\" over the params, in_channels and in_shape."))

    @field_validator("params")
    @classmethod
    def _names(cls, v):
        for k in v:
            if not k.isidentifier():
                raise ValueError(f"param name {k!r} is not an identifier")
            if k in RESERVED:
                raise ValueError(f"param name {k!r} is reserved ({', '.join(RESERVED)})")
        return v

    @model_validator(mode="after")
    def _width(self):
        bad = [w for w in self.width_params if w not in self.params]
        if bad:
            raise ValueError(f"width_params {bad} are not params (params: {', '.join(self.params) or 'none'})")
        return self


class InputSpec(Strict):
    shape: tuple[PosInt, PosInt, PosInt] = Field(description="Height, width, channels.")
    name: str = Field(default="input_layer", min_length=1)
    preprocessing: list[Block] = Field(default_factory=list,
                                       description="Layers applied to the input first (rescaling, normalization).")
    preprocess: PreprocessMode = Field(default="none", description=(
        "keras.applications' preprocess_input mode the data gets before the network (not a layer of it): "
        "caffe (ResNet, VGG: RGB->BGR, minus the ImageNet mean pixel), torch (DenseNet: /255, minus mean, "
        "divided by std), tf (MobileNet, Xception, Inception: /127.5 - 1), none. Applied by train, evaluate, "
        "predict and the export check to images of RGB pixels 0..255."))

    @field_validator("preprocessing")
    @classmethod
    def _only_preprocessing(cls, v):
        for i, b in enumerate(v):
            if b.type not in ("rescaling", "normalization"):
                raise ValueError(f"preprocessing[{i}] must be rescaling or normalization (got type {b.type!r})")
        return v

    @model_validator(mode="after")
    def _mode_fits_channels(self):
        """caffe and torch subtract per-RGB-channel means: an input of other than 3 channels
        is refused where `input.preprocess` is declared (as baking it would refuse), located
        at the mode itself."""
        problem = check_channels(self.preprocess, self.shape[2])
        if problem:  # raised as the error of the `preprocess` key, so it is located there
            msg = problem.removeprefix("input.preprocess: ")
            raise ValidationError.from_exception_data("InputSpec", [InitErrorDetails(
                type=PydanticCustomError("value_error", "{error}", {"error": msg}), loc=("preprocess",),
                input=self.preprocess)])
        return self


class BatchNormDefaults(Strict):
    epsilon: PosFloat = 1e-3
    momentum: Float = Field(default=0.99, ge=0, le=1)
    center: Bool = True
    scale: Bool = True


class Defaults(Strict):
    """Values every layer takes unless its block says otherwise."""

    activation: Literal[
        "relu", "relu6", "swish", "silu", "sigmoid", "tanh", "gelu", "elu", "selu", "leaky_relu",
        "hard_swish", "hard_silu", "softplus", "mish"] = "relu"
    batch_norm: BatchNormDefaults = Field(default_factory=BatchNormDefaults)
    conv_bias: Bool = True
    kernel_initializer: Initializer = "glorot_uniform"
    dense_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    weight_decay: Float = Field(default=0.0, ge=0, description="L2 factor on conv and dense kernels.")
    bias_decay: Bool = Field(default=False, description="Apply weight_decay to dense biases too.")
    depth_multiplier: PosInt = Field(default=1, description="Depthwise convs' channel multiplier.")
    drop_connect_rate: Rate = Field(default=0.0, description=(
        "Stochastic depth: the drop rate of residual branches rises linearly from 0 to this over the blocks."))


class Stage(Strict):
    name: str | None = Field(default=None, min_length=1)
    block_name: str = Field(default="{stage}_block{i}", description="Name template for the stage's blocks.")
    blocks: list[Block] = Field(min_length=1)
    fixed: Bool = Field(default=False, description=(
        "Not part of the repeated body: depth scaling leaves its repeats alone and its blocks do not "
        "count in the stochastic-depth schedule (a final 1x1 conv: EfficientNet's top_conv, "
        "MobileNetV2's Conv_1). Width scaling still applies."))


class Head(Strict):
    include_top: Bool = Field(default=True, description="False makes a feature extractor.")
    classes: PosInt = 1000
    classifier_activation: Literal["softmax", "sigmoid", "linear"] | None = "softmax"
    dropout: Rate = Field(default=0.0, description="Dropout before the classifier (0: none).")
    layers: list[Block] = Field(default_factory=list, description="The top, used when include_top.")
    pooling: Literal["avg", "max", "none"] = Field(
        default="none", description="Pooling of the features when include_top is false.")
    pooling_name: str | None = None
    aux: Bool = Field(default=False, description=(
        "Build the auxiliary classifiers (aux_classifier blocks, GoogLeNet) as extra outputs for "
        "training; Graph.meta['loss_weights'] gives each output's loss weight."))


class Coefficients(Strict):
    """Compound-scaling coefficients (EfficientNet): depth alpha, width beta, resolution gamma."""

    alpha: Float = Field(ge=1, description="depth: d = alpha ** phi")
    beta: Float = Field(ge=1, description="width: w = beta ** phi")
    gamma: Float = Field(ge=1, description="resolution: r = gamma ** phi")


class Preset(Strict):
    width: PosFloat
    depth: PosFloat
    resolution: PosInt
    dropout: Rate | None = None


class Scaling(Strict):
    """How the network scales. `width` and `depth` are applied when the spec is resolved:
    every filter count is multiplied by width and rounded (`rounding`, `divisor`), every
    stage block's repeats multiplied by depth and rounded up. A width of exactly 1 leaves
    every filter count as written (nothing is rounded)."""

    width: PosFloat = 1.0
    depth: PosFloat = 1.0
    divisor: PosInt = 8
    rounding: Literal["divisible", "truncate", "truncate_divisible"] = "divisible"
    resolution_divisor: PosInt = 8
    coefficients: Coefficients | None = None
    presets: dict[str, Preset] = Field(default_factory=dict)
    applied: dict | None = Field(default=None, description="Written by resolve: what was applied.")


class WeightsFile(Strict):
    """A released weights file: where it is and its hash (keras' `file_hash`)."""

    url: str = Field(pattern=r"^https?://[^\s'\"]+$", max_length=2000)
    hash: str | None = Field(pattern=r"^([0-9a-f]{32}|[0-9a-f]{64})$", description=(
        "md5 (32 hex digits) or sha256 (64), as keras.applications gives them to keras.utils.get_file; "
        "null where keras publishes none (MobileNet, MobileNetV2): the file is then downloaded as keras "
        "does, unverified, and its sha256 reported"))


class PublishedWeights(Strict):
    top: WeightsFile | None = Field(default=None, description="With the classifier (include_top=True).")
    no_top: WeightsFile | None = Field(default=None, description="The features only (include_top=False).")


class KerasTwin(Strict):
    """The keras.applications constructor this spec compiles to (layer names, weight shapes,
    parameters and outputs), and its released weights, loaded by `--weights NAME`."""

    constructor: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=100, description=(
        "keras.applications.<constructor>; `archspec build <constructor>` finds this spec."))
    weights: dict[str, PublishedWeights] = Field(default_factory=dict, description=(
        "By name (imagenet): keras' released files, downloaded into Keras' cache (~/.keras/models)."))


class Spec(Strict):
    format: Literal[1] = 1
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    extends: str | None = Field(default=None, description="A spec (bundled name or path) this one overrides.")
    reference: dict | None = Field(default=None, description="Published figures, for people and tests.")
    define: dict[str, Definition] = Field(default_factory=dict, description=(
        "New block types: {type: {params, width_params, body}}, used like built-in blocks."))
    vars: dict[str, Any] = Field(default_factory=dict, description=(
        "Names for values written once: \"${name}\" in input, defaults, stem, stages, head, taps, scaling, "
        "names and define bodies; a var may use the ones before it. `extends:` merges them and "
        "--set vars.x=... changes one everywhere."))
    input: InputSpec
    defaults: Defaults = Field(default_factory=Defaults)
    stem: list[Block] = Field(default_factory=list)
    stages: list[Stage] = Field(default_factory=list)
    head: Head = Field(default_factory=Head)
    taps: list[str] | Literal["stages"] = Field(
        default_factory=list, description="Layers the model also returns ('stages': each stage's last layer).")
    scaling: Scaling | None = None
    keras: KerasTwin | None = Field(default=None, description=(
        "The keras.applications network this spec is, exactly: its constructor and released weights."))
    # the loaded document (positions for errors found after validation); not part of the spec
    _raw: object = PrivateAttr(default=None)

    def __eq__(self, other):  # the same spec, wherever it was loaded from
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None

    @model_validator(mode="after")
    def _has_layers(self):
        if not (self.stem or self.stages or self.head.layers):
            raise ValueError("the network has no layers: give a stem, stages or head.layers")
        return self


def editor_schema(model: type = Spec) -> dict:
    """The JSON Schema of a document as a person writes it (what `archspec schema` prints
    for editors): a document with `extends:` is completed by the one it extends, so only
    its own keys are checked and the top-level required keys apply only without it. (The
    required keys inside a section still apply: `input:` written in a child has its
    `shape`.)"""
    schema = model.model_json_schema(by_alias=True)
    if model is Spec:  # applied by the loader before validation, so not a field of the Spec
        schema["properties"]["set"] = {
            "type": "object", "title": "Set", "description": (
                "Edits of what extends: gave, applied after it merged: keys are --set paths "
                "(head.classes, stages[conv5].blocks[0].repeats, stages[+] appends), values replace.")}
        _with_expressions(schema)
    required = [k for k in schema.pop("required", []) if k != "name"]
    schema["required"] = ["name"] if "name" in model.model_fields and model.model_fields["name"].is_required() \
        else []
    if required:
        schema["anyOf"] = [{"required": ["extends"]}, {"required": required}]
    return schema


_EXPRESSION = {"type": "string", "pattern": r"^\s*\$\{[^{}]*\}\s*$",
               "description": "an expression over vars (or, in a define body, the params): \"${width * 2}\""}
_IF = {"anyOf": [{"type": "boolean"}, _EXPRESSION],
       "description": "the item is left out when this is false (a list item: a block, a stage)"}


def _with_expressions(schema: dict) -> None:
    """Where a document may hold an expression instead of a number or a boolean (use sites
    are evaluated over `vars` before validation), the editor schema says so; blocks and
    stages take `if:`."""
    def walk(node):
        if isinstance(node, dict):
            for k, v in list(node.items()):
                if k in ("properties", "$defs", "patternProperties"):
                    for name, sub in v.items():
                        v[name] = walk(sub)
                elif k in ("items", "additionalProperties") and isinstance(v, dict):
                    node[k] = walk(v)
                elif k in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(v, list):
                    node[k] = [walk(x) for x in v]
            if node.get("type") in ("integer", "number", "boolean"):
                return {"anyOf": [node, _EXPRESSION]}
        return node

    walk(schema)
    for name, d in schema.get("$defs", {}).items():
        props = d.get("properties", {})
        if "type" in props or name == "Stage":
            props.setdefault("if", _IF)
