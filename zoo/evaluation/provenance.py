"""What an evaluation ran on, written beside its scores in results.json.

Keys lmms-eval writes keep its names (``config`` with ``model``, ``model_args``, ``batch_size``,
``device``, ``gen_kwargs`` and ``limit``; ``model_source``, ``model_name``, ``system_instruction``
and ``chat_template`` with their sha256, ``start_time``, ``end_time``,
``total_evaluation_time_seconds``, ``date``, ``git_hash``, ``transformers_version``), so a reader
of lmms-eval results finds them where it looks. STZoo adds what its own runs need to be told apart:
the recipe fingerprint, the benchmark file with its sha256 and format, frame sampling, and package versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import subprocess
import time
from pathlib import Path

PACKAGES = ("stzoo", "torch", "transformers", "peft", "accelerate", "deepspeed", "decord", "av", "torchcodec",
            "mlflow", "ray", "numpy")
REPOSITORY = Path(__file__).resolve().parents[2]


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package named (default: those evaluation touches); None where it is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_hash(repository: Path = REPOSITORY) -> str | None:
    """The short commit of the STZoo checkout evaluating (None outside a git checkout, as lmms-eval writes it)."""
    try:
        done = subprocess.run(["git", "-C", str(repository), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


@dataclasses.dataclass
class EvaluationSettings:
    """How the answers were produced: what a second evaluation must repeat to get the same scores."""

    model_source: str
    recipe_fingerprint: str  # of the recipe the model was trained with, as its run logged it
    batch_size: int
    max_new_tokens: int
    limit: int | None
    device: str
    video: dict  # frame sampling at evaluation (the recipe's eval.video, else data.video)
    annotation_format: str


def provenance(recipe, annotation_file: Path, settings: EvaluationSettings, started: float, ended: float) -> dict:
    """The keys results.json carries beside the scores; ``started``/``ended`` are time.time() values."""
    template = recipe.prompt
    chat_template = f"{template.system}|{template.user}|{template.assistant}|{template.answer_end}"
    versions = package_versions()
    return {
        "config": {"model": "stzoo", "model_args": f"pretrained={settings.model_source}",
                   "batch_size": settings.batch_size, "device": settings.device, "limit": settings.limit,
                   "gen_kwargs": {"max_new_tokens": settings.max_new_tokens, "temperature": 0.0, "do_sample": False}},
        "model_source": settings.model_source,
        "model_name": recipe.name,
        "recipe_fingerprint": settings.recipe_fingerprint,
        "benchmark": {"file": str(Path(annotation_file).resolve()), "sha256": file_sha256(annotation_file),
                      "format": settings.annotation_format},
        "video": settings.video,
        "system_instruction": template.system or None,
        "system_instruction_sha": sha256_of(template.system) if template.system else None,
        "chat_template": chat_template,
        "chat_template_sha": sha256_of(chat_template),
        "start_time": started,
        "end_time": ended,
        "total_evaluation_time_seconds": str(ended - started),
        "date": time.strftime("%Y%m%d_%H%M%S", time.localtime(started)),  # lmms-eval's datetime string
        "git_hash": git_hash(),
        "transformers_version": versions["transformers"],
        "package_versions": versions,
    }
