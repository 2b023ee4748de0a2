"""Recipes: YAML files that name the components of a video LLM and how to train it.

    extends: ../mash_vlm.yaml        # optional: start from another recipe
    model:
      mask: {name: dst, temporal: causal}
      llm: {name: llama, tuning: full}

Loading: the ``extends`` chain is merged (later files win), then ``--set key=value``
overrides are applied (values parsed as YAML), then the whole is validated against
the dataclasses below. A component whose name changes (by a child file or an
override) starts from its own defaults: options belong to the component they were
written for. Errors name the key and the file or override that set it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from components.config import ComponentSpec, RecipeError, Sources, bounded, component, load_yaml, to_plain, validate
from components import registry
import hashlib
import json


@dataclass(kw_only=True)
class ModelSpec:
    encoder: ComponentSpec = component("encoder")
    projector: ComponentSpec = component("projector", "mlp2x_gelu")
    compressor: ComponentSpec = component("compressor", "all_tokens")
    position: ComponentSpec = component("position", "rope")
    mask: ComponentSpec = component("mask", "causal")
    llm: ComponentSpec = component("llm")
    # Whole-model weights applied after the components are built: official LAVIS / ST-LLM .pth files
    # (keys mapped by zoo.model.checkpoint_import) or STZoo safetensors; a report lists what each covered.
    init_from: list[str] = field(default_factory=list)
    # After an init_from import every parameter must come from those files or from its component's own
    # pretrained weights, unless named here: a component kind (compressor) or a parameter glob
    # (compressor.slow.*) that may stay at its random initialisation. LoRA adapters are new by design.
    allow_random: list[str] = field(default_factory=list)


@dataclass
class VideoSpec:
    frames: int = bounded(16, ge=1, le=4096)
    sampler: Literal["uniform", "fps", "global_local", "fixed"] = "uniform"
    fps: float = bounded(1.0, gt=0)
    min_frames: int = bounded(4, ge=1)
    max_frames: int = bounded(16, ge=1)
    local_frames: int = bounded(16, ge=1)  # global_local: frames that keep their own tokens
    reader: Literal["auto", "torchcodec", "decord", "pyav"] = "auto"  # auto: torchcodec where FFmpeg loads, else decord
    resize: Literal["resize_crop", "pad", "squash"] = "resize_crop"
    # time (as filmed), reversed, shuffled: the last two break a model's use of frame order (calibration)
    frame_order: Literal["time", "reversed", "shuffled"] = "time"


@dataclass
class SyntheticSpec:
    """The synthetic action-scene suite, generated on first use when the data files are absent."""

    out: str = ".stzoo/data/action_scene"
    seed: int = bounded(0, ge=0)
    videos: int = bounded(120, ge=1)
    calibration_videos: int = bounded(0, ge=0)  # clips made for the calibration files (0: none written)


ANNOTATION_FORMATS = ("stzoo", "llava", "videochat2", "mvbench", "charades_sta")
AnnotationFormatName = Literal["stzoo", "llava", "videochat2", "mvbench", "charades_sta"]


@dataclass
class AnnotationFormat:
    """How one annotation file is written; public formats are converted to the STZoo schema as they load."""

    name: AnnotationFormatName = "stzoo"
    # mvbench, charades_sta: the folder of the videos, relative to the annotation file's folder (MVBench keeps it
    # in its task config, not in the JSON)
    video_dir: str | None = None
    durations: str | None = None  # charades_sta: a JSON {id: seconds} or Charades' CSV (None: read from each video)
    task_type: str | None = None  # mvbench: the task's name in the tables (None: the file's stem)


@dataclass
class DataSpec:
    video: VideoSpec = field(default_factory=VideoSpec)
    # Annotation files (STZoo schema, docs/data_format.md); several are concatenated. Relative paths
    # resolve against $STZOO_DATA_ROOT when set (a Ray job runs in a temporary copy of the repo), else the cwd.
    train: str | list[str] | None = None
    train_tasks: list[str] | None = None  # keep only training entries of these tasks (LLaVA-ST Table 8's data mixes)
    eval: dict[str, str] = field(default_factory=dict)  # benchmark name -> annotation file
    video_root: str | None = None  # joined to relative video paths of the annotations
    synthetic: SyntheticSpec | None = None
    num_workers: int = bounded(0, ge=0)
    skip_bad_videos: bool = False  # skip (and count) undecodable videos instead of stopping
    # How grounding answers are written for training: auto = coordinate tokens when the position
    # scheme has them (LAPE), decimals otherwise (zoo.data.grounding).
    grounding_style: Literal["auto", "decimal", "coordinate_tokens"] = "auto"
    max_samples: int | None = bounded(None, ge=1)  # the first N training entries (None: all)
    # Training rows hold several samples end to end, each attending only to itself (zoo.model.packing), up to
    # pack_tokens tokens a row (None: the batch's longest sample, so no row is wider than unpacked).
    packing: bool = False
    pack_tokens: int | None = bounded(None, ge=1)
    # The annotation files' format: one name for every file, or per file a name or {name, video_dir, durations,
    # task_type}, keyed by the file's path as written here or by its role ("train" or a data.eval name); files
    # left out are in the STZoo schema.
    format: AnnotationFormatName | dict[str, AnnotationFormatName | AnnotationFormat] = "stzoo"

    def format_of(self, annotation_file) -> AnnotationFormat:
        """The format of one of this recipe's annotation files: by its path, else by the role it plays."""
        if isinstance(self.format, str):
            return AnnotationFormat(self.format)
        train = self.train if isinstance(self.train, list) else [self.train]
        keys = [str(annotation_file), *[name for name, path in self.eval.items() if str(path) == str(annotation_file)]]
        keys += ["train"] if str(annotation_file) in [str(path) for path in train] else []
        for key in keys:
            if key in self.format:
                chosen = self.format[key]
                return AnnotationFormat(chosen) if isinstance(chosen, str) else chosen
        return AnnotationFormat()


@dataclass
class PromptSpec:
    """A chat template: system + user turn + assistant turn; <video> marks where the visual tokens go."""

    system: str = ""
    user: str = "USER: {message} "
    assistant: str = "ASSISTANT: "
    answer_end: str = "</s>"
    video_placeholder: str = "<video>"
    add_bos: bool = True  # start with the tokenizer's BOS token (Llama: yes; Qwen2: no)
    # before_conversation: right after the system text, ahead of the first user turn (ST-LLM, InstructBLIP)
    video_position: Literal["before_question", "after_question", "before_conversation"] = "before_question"
    default_question: str = "Describe the video in detail."
    max_length: int | None = bounded(None, ge=1)  # refuse longer sequences before the first step (None: the LLM's context)


@dataclass
class StageSpec:
    """One stage of progressive training (LLaVA-ST): its own overrides and what it trains."""

    name: str
    set: dict[str, Any] = field(default_factory=dict)  # recipe overrides for this stage (data, lr, tuning...)
    trainable: list[str] = field(default_factory=list)  # parameter-name globs that train; everything else is frozen


@dataclass
class TrainSpec:
    lr: float = bounded(2e-5, gt=0)
    weight_decay: float = bounded(0.0, ge=0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = bounded(0.03, ge=0, le=1)
    epochs: float = bounded(1.0, gt=0)
    max_steps: int | None = bounded(None, ge=1)  # overrides epochs when set
    batch_size: int = bounded(1, ge=1)  # per device
    global_batch_size: int | None = bounded(None, ge=1)  # gradient accumulation fills the rest
    grad_clip: float | None = bounded(1.0, gt=0)  # the largest gradient norm a step applies (None: no clipping)
    seed: int = bounded(0, ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    log_every: int = bounded(1, ge=1)
    save_every: int | None = bounded(None, ge=1)  # steps between checkpoints (None: only at the end)
    output_dir: str = "runs/{name}"
    progress_bar: bool = True
    stages: list[StageSpec] = field(default_factory=list)  # progressive training; each starts from the previous


@dataclass
class EvalSpec:
    benchmarks: list[str] = field(default_factory=list)
    video: VideoSpec | None = None  # frame sampling at evaluation when it differs from training (ST-LLM: 1 fps in [4, 16])
    max_new_tokens: int = bounded(64, ge=1)
    batch_size: int = bounded(1, ge=1)
    max_samples: int | None = bounded(None, ge=1)


@dataclass
class ScalingSpec:
    num_workers: int = bounded(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = bounded(1.0, gt=0)
    # ddp (one worker: plain), fsdp2 (torch's fully_shard per decoder layer), deepspeed (ZeRO, deepspeed_config)
    strategy: Literal["ddp", "fsdp2", "deepspeed"] = "ddp"
    deepspeed_config: str | None = None  # a JSON file; "auto" fields are filled from the recipe
    find_unused_parameters: bool = False  # DDP: set when some trainable parameters get no gradient in a step
    max_failures: int = bounded(2, ge=-1)  # worker-group restarts from the last checkpoint before the job fails (-1: no limit)
    storage_path: str | None = None  # Ray Train storage (shared on a cluster); default $STZOO_HOME/ray_results


@dataclass
class TrackingSpec:
    experiment: str | None = None  # default: the recipe's name
    run_name: str | None = None
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else an absolute local path


@dataclass(kw_only=True)
class Recipe:
    name: str
    model: ModelSpec
    description: str = ""
    plugins: list[str] = field(default_factory=list)
    data: DataSpec = field(default_factory=DataSpec)
    prompt: PromptSpec = field(default_factory=PromptSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    source: str | None = None  # the file it was loaded from (not part of the YAML)

    def to_dict(self) -> dict:
        data = to_plain(self)
        data.pop("source", None)
        return data

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> scalar values (MLflow params)."""
        return flatten(self.to_dict())

    def fingerprint(self) -> str:
        """A short hash of what decides the trained weights (model, data, prompt, training, workers).

        Logging, evaluation and tracking settings are left out: changing them does not make a
        checkpoint of this recipe unusable.
        """
        data = self.to_dict()
        train = {k: v for k, v in data["train"].items() if k not in ("progress_bar", "log_every", "output_dir", "save_every")}
        # Left out too: the reader (every reader gives the same frames, tests/data/test_torchcodec_reader.py: hashed
        # as the decord every recipe read with before torchcodec, so fingerprints and the run names made of them
        # stay as they were), packing (the padded batch's losses, tests/model/test_packing.py) and the format where
        # it is the default schema, for the same reason; and no calibration clips, the suite drawn before they were.
        video = {**data["data"]["video"], "reader": "decord"}
        kept = {k: v for k, v in data["data"].items() if k not in ("eval", "packing", "pack_tokens")
                and not (k == "format" and v == "stzoo")}
        if kept.get("synthetic") and not kept["synthetic"]["calibration_videos"]:
            kept["synthetic"] = {k: v for k, v in kept["synthetic"].items() if k != "calibration_videos"}
        relevant = {"model": data["model"], "data": {**kept, "video": video},
                    "prompt": data["prompt"], "train": train, "workers": data["scaling"]["num_workers"]}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:8]

    def results_fingerprint(self) -> str:
        """A short hash of what decides a run's numbers: the weights' fingerprint and how they are evaluated
        (the benchmarks and the evaluation settings, which ``fingerprint`` leaves out). Sweeps name children by it."""
        data = self.to_dict()
        measured = {"weights": self.fingerprint(), "benchmarks": data["data"]["eval"], "eval": data["eval"]}
        return hashlib.sha256(json.dumps(measured, sort_keys=True, default=str).encode()).hexdigest()[:8]

    @property
    def component_names(self) -> dict[str, str]:
        model = self.model
        tuning = getattr(model.llm.options, "tuning", None)
        names = {kind: getattr(model, kind).name for kind in ("encoder", "projector", "compressor", "position", "mask", "llm")}
        if tuning:
            names["tuning"] = tuning
        return names


COMPONENT_PATHS = {f"model.{f.name}": f.metadata["component"] for f in dataclasses.fields(ModelSpec) if "component" in f.metadata}


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = data
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    except UnicodeDecodeError as error:
        raise RecipeError(f"{path}: not UTF-8 text (byte {error.start} is {error.object[error.start:error.start + 1]!r}); "
                          "save the recipe as UTF-8") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


def _component_name(node) -> str | None:
    if isinstance(node, str):
        return node
    if isinstance(node, dict):
        return node.get("name")
    return None


def _merge(base: dict, update: dict, source: str, sources: Sources, prefix: str = "") -> dict:
    """``update`` merged into a copy of ``base``; a component that changes name is replaced whole."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        old = merged.get(key)
        if path in COMPONENT_PATHS:
            new_name = _component_name(value)
            if isinstance(value, str) or (new_name is not None and new_name != _component_name(old)):
                merged[key] = {"name": value} if isinstance(value, str) else copy.deepcopy(value)
                _record_tree(merged[key], path, source, sources)
                continue
            if isinstance(old, str):
                old = {"name": old}
                merged[key] = old
        if isinstance(value, dict) and isinstance(old, dict):
            merged[key] = _merge(old, value, source, sources, path)
        else:
            merged[key] = copy.deepcopy(value)
            _record_tree(value, path, source, sources)
    return merged


def _record_tree(value, path: str, source: str, sources: Sources) -> None:
    sources.record(path, source)
    if isinstance(value, dict):
        for key, child in value.items():
            _record_tree(child, f"{path}.{key}", source, sources)


def _load_chain(path: Path, sources: Sources, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"{path}: recipes extend each other in a cycle: {chain}")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    base: dict = {}
    if parent is not None:
        if not isinstance(parent, str):
            raise RecipeError(f"{path}: extends: must be a path to another recipe file")
        parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
        if not parent_path.is_file():
            raise RecipeError(f"{path}: extends: {parent} not found (looked for {parent_path})")
        base = _load_chain(parent_path, sources, (*seen, path))
    return _merge(base, data, _display(path), sources)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_override(text: str) -> tuple[str, Any]:
    """``model.mask.name=causal`` -> ("model.mask.name", "causal"); values are parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {text}: an override is key=value, for example --set model.mask=causal")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict, overrides: list[str] | dict, sources: Sources, source: str | None = None) -> dict:
    """``overrides``: "key=value" strings (values parsed as YAML) or a {dotted key: value} mapping.

    An override assigns: a mapping value replaces what was there (``--set data.eval={}`` clears
    the benchmarks); only ``extends:`` merges. A component given by name starts from its defaults.
    """
    pairs = list(overrides.items()) if isinstance(overrides, dict) else [parse_override(text) for text in overrides]
    data = copy.deepcopy(data)
    for key, value in pairs:
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and ".".join(parts[: depth + 1]) in COMPONENT_PATHS:
                child = {"name": child}  # a component given by name, now getting an option
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        new = copy.deepcopy(value)
        if key in COMPONENT_PATHS and isinstance(new, str):
            new = {"name": new}
        node[parts[-1]] = new  # renaming via KEY.name keeps the options; validation says if they do not fit
        _record_tree(new, key, source or f"--set {key}", sources)
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """A validated Recipe from a YAML file, its ``extends`` chain and ``--set`` overrides."""
    path = Path(path)
    sources = Sources(default=_display(path.resolve()) if path.exists() else str(path))
    data = _load_chain(path, sources)
    data = apply_overrides(data, list(overrides or []), sources)
    return recipe_from_dict(data, sources, source=str(path))


def recipe_from_dict(data: dict, sources: Sources | None = None, source: str | None = None) -> Recipe:
    sources = sources or Sources(default=source or "<recipe>")
    plugins = data.get("plugins") or []
    if isinstance(plugins, list):
        try:
            registry.load_plugins([str(p) for p in plugins])
        except registry.RegistryError as error:
            raise RecipeError(f"{sources.of('plugins')}: plugins: {error}") from None
    data = dict(data)
    data.pop("source", None)
    if "name" not in data and source:
        data["name"] = Path(source).stem
    recipe = validate(Recipe, data, "", sources)
    recipe.source = source
    _check_consistency(recipe, sources)
    return recipe


def _check_format_keys(recipe: Recipe, sources: Sources) -> None:
    """Every data.format key names a role or an annotation file of this recipe (its stages' files included)."""
    data = recipe.data
    files = [*(data.train if isinstance(data.train, list) else [data.train]), *data.eval.values()]
    for stage in recipe.train.stages:
        stage_train = stage.set.get("data.train")
        files += stage_train if isinstance(stage_train, list) else [stage_train]
    roles = ["train", *data.eval]
    for key in data.format:
        if key not in roles and key not in [str(path) for path in files if path]:
            close = difflib.get_close_matches(key, roles + [str(path) for path in files if path], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"{sources.of(f'data.format.{key}')}: data.format.{key}: no annotation file of this recipe "
                              f"is {key!r} or plays that role{hint}; keys are 'train', the names in data.eval "
                              f"({', '.join(data.eval) or 'none'}) or the files' paths as the recipe writes them")


def _check_consistency(recipe: Recipe, sources: Sources) -> None:
    video = recipe.data.video
    if video.min_frames > video.max_frames:
        raise RecipeError(
            f"{sources.of('data.video.min_frames')}: data.video.min_frames ({video.min_frames}) is larger than "
            f"data.video.max_frames ({video.max_frames})"
        )
    if video.sampler == "global_local" and video.local_frames > video.frames:
        raise RecipeError(
            f"{sources.of('data.video.local_frames')}: data.video.local_frames ({video.local_frames}) is larger than "
            f"data.video.frames ({video.frames})"
        )
    if isinstance(recipe.data.format, dict):
        _check_format_keys(recipe, sources)
    if len(recipe.train.betas) != 2:
        raise RecipeError(f"{sources.of('train.betas')}: train.betas must hold two numbers, e.g. [0.9, 0.999]")
    if recipe.prompt.video_placeholder not in recipe.prompt.user and "{message}" not in recipe.prompt.user:
        raise RecipeError(f"{sources.of('prompt.user')}: prompt.user must contain {{message}}")
