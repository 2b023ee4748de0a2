"""A trained video LLM as an MLflow model: a pyfunc that takes videos and prompts and answers.

The run's ``model`` artifact is an MLflow model folder (MLmodel, the pyfunc, requirements) whose
``artifacts/checkpoint`` is the STZoo checkpoint itself, so one copy of the weights serves
``mlflow.pyfunc.load_model("runs:/ID/model")``, the Model Registry (``mlflow.register_model``) and
``stzoo eval runs:/ID``. Loading the pyfunc needs STZoo installed (its components build the model).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import yaml
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from zoo.data.batch import collate
from zoo.evaluation.provenance import package_versions
from zoo.model.inference import prepare_sample
from zoo.model.video_llm import VideoLLM

CHECKPOINT = "checkpoint"  # the key of the STZoo checkpoint among the MLflow model's artifacts
REQUIREMENTS = ("torch", "torchvision", "transformers", "peft", "timm", "safetensors", "torchcodec", "decord", "av",
                "mlflow", "pyyaml", "numpy", "pandas")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "video"), ColSpec("string", "prompt")]),
    outputs=Schema([ColSpec("string", "answer")]),
    params=ParamSchema([ParamSpec("max_new_tokens", "long", 64)]),
)


class VideoQuestionAnswering(mlflow.pyfunc.PythonModel):
    """Rows of (video path, prompt) -> the model's greedy answers, as `stzoo generate` gives them."""

    def load_context(self, context) -> None:
        self.model = VideoLLM.from_pretrained(context.artifacts[CHECKPOINT])

    # Annotated so MLflow knows the input is a frame (it warns at import about an unannotated predict).
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        max_new_tokens = int((params or {}).get("max_new_tokens", 64))
        answers = []
        for video, prompt in zip(model_input["video"], model_input["prompt"]):
            batch = collate([prepare_sample(self.model, str(video), str(prompt))], self.model.pad_id)
            answers.append(self.model.generate(batch.to(self.model.device), max_new_tokens=max_new_tokens).texts[0])
        return answers


def pinned_requirements() -> list[str]:
    """The installed versions of what loading the checkpoint imports: MLflow would otherwise infer them by loading
    the model in a subprocess."""
    return [f"{name}=={version}" for name, version in package_versions(REQUIREMENTS).items() if version]


def write_mlflow_model(checkpoint: Path, out: Path) -> Path:
    """``out``: an MLflow pyfunc model folder around ``checkpoint`` (copied in as its artifact); replaced if present.

    MLflow names the artifact's folder after the source folder, which differs by launcher (``final``, ``model``),
    so the checkpoint is linked under the one name ``checkpoint`` first (hard links: MLflow refuses symlinks)."""
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(dir=Path(checkpoint).parent, prefix=".mlflow-model.") as staging:
        named = Path(staging) / CHECKPOINT
        try:
            shutil.copytree(checkpoint, named, copy_function=os.link)
        except OSError:  # another file system, or one without hard links
            shutil.rmtree(named, ignore_errors=True)
            shutil.copytree(checkpoint, named)
        with warnings.catch_warnings():
            # An input example would be predicted on while saving: a model load and a video that need not exist.
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            mlflow.pyfunc.save_model(str(out), python_model=VideoQuestionAnswering(),
                                     artifacts={CHECKPOINT: str(named)}, signature=SIGNATURE,
                                     pip_requirements=pinned_requirements())
    return out


def checkpoint_in(folder: Path) -> Path:
    """The STZoo checkpoint inside an MLflow model folder (where its MLmodel file says the artifact went), or the
    folder itself when it is not an MLflow model."""
    if not (folder / "MLmodel").is_file():
        return folder
    flavor = yaml.safe_load((folder / "MLmodel").read_text()).get("flavors", {}).get("python_function", {})
    inner = (flavor.get("artifacts") or {}).get(CHECKPOINT, {}).get("path")
    if not inner or not (folder / inner).is_dir():
        raise FileNotFoundError(f"{folder}: an MLflow model without an STZoo checkpoint among its artifacts "
                                f"(artifacts.{CHECKPOINT} in its MLmodel file); it was not logged by STZoo")
    return folder / inner
