"""The launcher of ``stzoo train`` and ``stzoo sweep``: each stage trains in this process."""

from __future__ import annotations

from pathlib import Path

from components.config import RecipeError
import zoo.runs.tracking as tracking
from zoo.runs.run_recipe import StageResult
from zoo.training.stages import Stage
from zoo.training.trainer import Trainer


class InProcessLauncher:
    """Stages train here, one after another, under ``output`` (a stage's files in ``output/<stage>``)."""

    def __init__(self, output: Path, resume_from: Path | None = None, progress: bool | None = None,
                 resume_anyway: bool = False):
        self.output = Path(output)
        self.resume_from = Path(resume_from) if resume_from else None
        self.resume_anyway = resume_anyway
        self.progress = progress

    def train_stage(self, stage: Stage, run: tracking.TrackedRun, handoff: Path | None, first_step: int) -> StageResult:
        if self.resume_from is not None and stage.spec is not None:
            raise RecipeError(f"--resume {self.resume_from}: resuming applies to recipes without train.stages; "
                              "run the remaining stages as their own recipe")
        output = self.output / stage.name if stage.name else self.output
        sink = tracking.MLflowMetrics(run.uri, run.run_id, tracking.unsent_metrics_file(run.run_id))
        trainer = Trainer(stage.recipe, model=stage.build_model(handoff), output_dir=output, loggers=(sink,),
                          progress=self.progress, step_offset=first_step, resume_anyway=self.resume_anyway)
        monitor = tracking.start_system_metrics(run.uri, run.run_id)
        try:
            state = trainer.fit(resume_from=self.resume_from)
        finally:
            sink.close()
            if monitor is not None:
                monitor.finish()
        losses = (state.history[0]["loss"], state.history[-1]["loss"]) if state.history else None
        return StageResult(stage.name, output / "final", first_step, trainer.run_step, output / "handoff", losses,
                           state.skipped_samples)
