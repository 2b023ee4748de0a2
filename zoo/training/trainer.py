"""The training loop: AdamW, warmup + cosine, gradient clipping and accumulation,
bf16 autocast on GPU and fp32 on CPU, seeded, resumable, with a progress bar.

The same loop runs in one process (``stzoo train``) and inside every Ray Train worker;
what differs there (DDP / DeepSpeed wrapping, rank, reporting checkpoints) comes in
through the engine (zoo.training.strategies), the loggers and ``on_checkpoint``, not through branches in the loop.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from zoo.data.dataset import SkippingCollate, batches_of, build_dataset, ensure_synthetic_suite, instruction_pad_id
from zoo.data.batch import VideoBatch
from zoo.runtime.threads import refresh_threads
from zoo.training.strategies import (DDPEngine, DeepSpeedEngine, FSDP2Engine, PlainEngine, fill_deepspeed_config,
                                     shard_model)
from zoo.model.video_llm import VideoLLM, build_model
from zoo.config.recipe import Recipe
from components.config import RecipeError
from components.errors import UserError, error_reason
from components.weights import CheckpointError, torch_load_problem
from tqdm.auto import tqdm
from safetensors import SafetensorError
from safetensors.torch import load_model


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (a NaN loss, say); the message names the step and what was kept."""


class MetricsLogger(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochOrder(Sampler[int]):
    """A permutation of the dataset per epoch, fixed by (seed, epoch), sharded over ranks, resumable mid-epoch."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch = 0
        self.start = 0  # samples of this rank's share already consumed in this epoch

    def per_rank(self) -> int:
        return self.size // self.world_size

    def __len__(self) -> int:
        return self.per_rank() - self.start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        mine = order[self.rank : self.per_rank() * self.world_size : self.world_size]
        return iter(mine[self.start :])


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of this epoch consumed
    skipped_samples: int = 0
    history: list[dict] = field(default_factory=list)


def make_optimizer(model: VideoLLM, spec) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.dim() < 2 else decay).append(param)
    if not decay and not no_decay:
        raise RecipeError("the recipe trains nothing: every parameter is frozen (check model.llm.tuning and the component options)")
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=spec.lr, betas=tuple(spec.betas))


def lr_lambda(schedule: str, warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress

    return factor


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def build_engine(model: VideoLLM, recipe: Recipe, precision: str, total_steps: int, accumulation: int = 1,
                 world_size: int = 1) -> PlainEngine:
    """The engine of the recipe's scaling.strategy, with its optimizer and learning-rate schedule. FSDP2 shards the
    model first: sharding replaces the parameters, and the optimizer must hold the sharded ones."""
    scaling, spec = recipe.scaling, recipe.train
    if scaling.strategy == "fsdp2":
        shard_model(model, precision)
    optimizer = make_optimizer(model, spec)
    warmup = round(spec.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec.schedule, warmup, total_steps))
    if scaling.strategy == "deepspeed":
        if not scaling.deepspeed_config:
            raise RecipeError(f"{recipe.source}: scaling.strategy is deepspeed but scaling.deepspeed_config is not set")
        config = fill_deepspeed_config(scaling.deepspeed_config, micro_batch=spec.batch_size, accumulation=accumulation,
                                       world_size=world_size, precision=precision, grad_clip=spec.grad_clip,
                                       hidden_size=model.llm.hidden_size)
        return DeepSpeedEngine(model, optimizer, scheduler, config)
    if scaling.strategy == "fsdp2":
        return FSDP2Engine(model, optimizer, scheduler, precision, spec.grad_clip)
    if world_size > 1:
        return DDPEngine(model, optimizer, scheduler, precision, spec.grad_clip,
                         find_unused_parameters=scaling.find_unused_parameters)
    return PlainEngine(model, optimizer, scheduler, precision, spec.grad_clip)


class Trainer:
    def __init__(self, recipe: Recipe, model: VideoLLM | None = None, *, device=None, rank: int = 0,
                 world_size: int = 1, loggers: tuple = (), output_dir: str | Path | None = None,
                 progress: bool | None = None, on_checkpoint=None, step_offset: int = 0, resume_anyway: bool = False):
        self.recipe = recipe
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.loggers = list(loggers)
        self.output_dir = Path(output_dir or recipe.train.output_dir.format(name=recipe.name))
        self.progress = recipe.train.progress_bar if progress is None else progress
        seed_everything(recipe.train.seed + rank)
        self.model = model or build_model(recipe)
        self.model.to(self.device)
        self.on_checkpoint = on_checkpoint  # (directory, metrics, final) after each checkpoint, on every rank
        # Steps already logged to this run by earlier stages: logged steps continue instead of restarting at 1.
        self.step_offset = step_offset
        self.resume_anyway = resume_anyway  # resume a checkpoint another recipe wrote (same shapes), on purpose
        self.state = TrainState()

    # --- set-up -------------------------------------------------------------------------

    @property
    def accumulation(self) -> int:
        spec = self.recipe.train
        per_step = spec.batch_size * self.world_size
        if not spec.global_batch_size:
            return 1
        if spec.global_batch_size % per_step:
            raise RecipeError(
                f"train.global_batch_size {spec.global_batch_size} is not a multiple of batch_size x workers = {per_step}"
            )
        return spec.global_batch_size // per_step

    def prepare(self) -> None:
        recipe = self.recipe
        if not recipe.data.train:
            raise RecipeError(f"{recipe.source}: data.train: no training annotations given")
        ensure_synthetic_suite(recipe)
        self.dataset = build_dataset(recipe, self.model, recipe.data.train, max_samples=recipe.data.max_samples)
        self.order = EpochOrder(len(self.dataset), recipe.train.seed, self.rank, self.world_size)
        batches_per_epoch = self.order.per_rank() // recipe.train.batch_size
        if batches_per_epoch == 0:
            raise RecipeError(
                f"data.train: {len(self.dataset)} samples are fewer than one batch of {recipe.train.batch_size} per worker"
            )
        self.steps_per_epoch = max(1, batches_per_epoch // self.accumulation)
        # max_steps, when set, overrides epochs (as in Hugging Face's Trainer).
        self.total_steps = recipe.train.max_steps or math.ceil(recipe.train.epochs * self.steps_per_epoch)
        precision = resolve_precision(recipe.train.precision, self.device)
        self.engine = build_engine(self.model, recipe, precision, self.total_steps, self.accumulation, self.world_size)
        self.check_context()

    def loader(self) -> DataLoader:
        """The run's DataLoader, its sampler placed at the current epoch. One serves every epoch (``_batches``
        places the sampler again before each): its workers persist, and so does what they cached (tokenised
        conversations). Nothing in a worker draws random numbers, so persisting changes no sample."""
        self.place_order()
        workers = self.recipe.data.num_workers
        return DataLoader(
            self.dataset, batch_size=self.recipe.train.batch_size, sampler=self.order, drop_last=True,
            num_workers=workers, collate_fn=SkippingCollate(self.model.pad_id, instruction_pad_id(self.model)),
            persistent_workers=workers > 0, pin_memory=self.device.type == "cuda",
            worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(self.recipe.train.seed),
        )

    def place_order(self) -> None:
        """The sampler at this epoch's permutation, past the samples already consumed (a resumed run)."""
        self.order.epoch = self.state.epoch
        self.order.start = self.state.batches_in_epoch * self.recipe.train.batch_size

    def check_context(self) -> None:
        """Refuse, before the first step, a sample that would not fit the LLM's context."""
        limit = self.recipe.prompt.max_length or self.model.llm.max_length
        visual = self.model.visual_token_count()
        entries = self.dataset.entries
        step = max(1, len(entries) // 2000)  # a sample of a very large set keeps start-up quick
        for index in range(0, len(entries), step):
            conversation = self.dataset.encode_text(index)
            total = visual + len(conversation.ids)
            if total > limit:
                parts = ", ".join(f"{k} {v}" for k, v in conversation.parts.items())
                raise RecipeError(
                    f"{self.dataset.source}: entry {index} needs {total} tokens ({visual} visual, {parts}) but the LLM's "
                    f"context is {limit}; use fewer frames, a compressor with fewer tokens, or shorter conversations"
                )

    # --- the loop -----------------------------------------------------------------------

    def fit(self, resume_from: Path | None = None) -> TrainState:
        self.remove_unfinished_checkpoints()
        if resume_from is not None:
            self.resume(resume_from)
        elif not hasattr(self, "engine"):
            self.prepare()
        self.model.train()
        bar = self._progress_bar()
        batches = self._batches()
        while self.state.step < self.total_steps:
            started = time.perf_counter()
            micro = [next(batches) for _ in range(self.accumulation)]
            waited = time.perf_counter() - started  # time the loop waited for data (starvation shows here)
            metrics = self.train_step(micro)
            metrics["data_seconds"] = waited
            metrics["step_seconds"] = time.perf_counter() - started
            metrics["samples_per_second"] = sum(b.size for b in micro) * self.world_size / metrics["step_seconds"]
            self.state.step += 1
            self._log(metrics, bar)
            if self.recipe.train.save_every and self.state.step % self.recipe.train.save_every == 0:
                self.save_checkpoint(self.checkpoint_dir(), metrics)
        if bar is not None:
            bar.close()
        final = self.save_checkpoint(self.checkpoint_dir(), self.state.history[-1] if self.state.history else {}, final=True)
        if self.rank == 0:
            publish_model(final / "model", self.output_dir / "final")
        return self.state

    def remove_unfinished_checkpoints(self) -> None:
        """What a killed checkpoint write left (``step-N.partial``, and the hidden staging folders of a model
        save, each a full copy of the weights), so that none of it ends up inside a later checkpoint."""
        checkpoints = self.output_dir / "checkpoints"
        if self.rank == 0 and checkpoints.is_dir():
            for debris in [*checkpoints.glob("step-*.partial"), *checkpoints.glob("step-*/.model.*")]:
                shutil.rmtree(debris, ignore_errors=True)
        barrier(self.world_size)

    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints" / f"step-{self.state.step:07d}"

    def _batches(self) -> Iterator[VideoBatch]:
        """Micro-batches forever, epoch after epoch, tracking where a resumed run must start."""
        loader = self.loader()  # dropped with this generator at the end of fit, which stops its workers
        while True:
            self.place_order()
            for batch in batches_of(loader):
                self.state.batches_in_epoch += 1
                refresh_threads()  # a run started or finished beside this one changes its share of the cores
                if isinstance(batch, list):  # every sample of it was a bad video
                    self.state.skipped_samples += len(batch)
                    continue
                self.state.skipped_samples += len(batch.skipped)
                yield batch.to(self.device)
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    def train_step(self, micro_batches: list[VideoBatch]) -> dict[str, float]:
        sums: dict[str, float] = {}
        tokens = 0
        count = len(micro_batches)
        for index, batch in enumerate(micro_batches):
            output = self.engine.forward(batch, index, count)
            if not torch.isfinite(output.loss):
                self._stop_on_bad_loss(output)
            self.engine.backward(output.loss, index, count)
            for name, value in output.losses.items():  # each term as loss/<term>: plots and logs find them by the prefix
                sums[f"loss/{name}"] = sums.get(f"loss/{name}", 0.0) + float(value.detach()) / len(micro_batches)
            sums["loss"] = sums.get("loss", 0.0) + float(output.loss.detach()) / len(micro_batches)
            tokens += int(output.sequence.attention_mask.sum())
        sums["lr"] = self.engine.last_lr()  # the rate this step used
        sums["grad_norm"] = self.engine.step()
        sums["tokens"] = tokens * self.world_size
        return sums

    def _stop_on_bad_loss(self, output) -> None:
        kept = sorted((self.output_dir / "checkpoints").glob("step-*")) if self.output_dir.exists() else []
        terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in output.losses.items())
        where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was saved yet"
        raise TrainingError(
            f"step {self.state.step + 1}: the loss is not finite ({terms}); training stopped and {where}. "
            "Lower train.lr, check the data of this step, or use fp32"
        )

    def _progress_bar(self):
        if not self.progress or self.rank != 0:
            return None

        return tqdm(total=self.total_steps, initial=self.state.step, desc=self.recipe.name, unit="step", dynamic_ncols=True)

    @property
    def run_step(self) -> int:
        """The step as the run logs it: this stage's steps after those of the stages before it."""
        return self.step_offset + self.state.step

    def _log(self, metrics: dict[str, float], bar) -> None:
        # Seven significant digits, not decimals: a rate of 2e-5 keeps its schedule's shape in metrics.jsonl.
        record = {"step": self.run_step, **{k: float(f"{v:.7g}") if isinstance(v, float) else v for k, v in metrics.items()}}
        self.state.history.append(record)
        if self.rank != 0:
            return
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
        if self.state.step % self.recipe.train.log_every == 0 or self.state.step == self.total_steps:
            for logger in self.loggers:
                logger.log_metrics(metrics, self.run_step)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    # --- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self, directory: Path, metrics: dict | None = None, final: bool = False) -> Path:
        """Model (save_pretrained form), optimizer, schedule, data position and every rank's RNG state.

        Written to a staging name and renamed, so a failure while writing (a full disk) leaves
        the previous checkpoint as the latest complete one.
        """
        rng = gather_rng_states(self.world_size)
        staging = directory.with_name(directory.name + ".partial")
        if self.rank == 0:
            shutil.rmtree(staging, ignore_errors=True)  # a write killed earlier at this step must not leak into this one
        barrier(self.world_size)
        try:
            self.engine.save_extra(staging)
            with self.engine.consolidated():
                full = self.engine.model_state()  # FSDP2's gathered weights; None where the module holds them whole
                if self.rank == 0:
                    self.model.save_pretrained(staging / "model", state_dict=full)
                    state = {
                        "engine": self.engine.state_dict(),
                        "step": self.state.step, "epoch": self.state.epoch, "batches_in_epoch": self.state.batches_in_epoch,
                        "skipped_samples": self.state.skipped_samples, "rng": rng,
                        "fingerprint": self.recipe.fingerprint(),
                    }
                    torch.save(state, staging / "trainer_state.pt")
        except OSError as error:  # a full disk, a lost mount
            shutil.rmtree(staging, ignore_errors=True)
            kept = sorted(p for p in directory.parent.glob("step-*") if not p.name.endswith(".partial")) if directory.parent.exists() else []
            raise TrainingError(
                f"step {self.state.step}: the checkpoint could not be written to {directory} ({error.strerror or error}); "
                f"{'the previous checkpoint ' + str(kept[-1]) + ' is intact' if kept else 'no earlier checkpoint exists'}. "
                "Free space (or point train.output_dir elsewhere) and resume"
            ) from None
        if staging.exists():  # rank 0 always; other ranks when their engine wrote shards (DeepSpeed)
            if directory.exists():
                shutil.rmtree(directory)
            staging.replace(directory)
        barrier(self.world_size)
        if self.on_checkpoint is not None:
            self.on_checkpoint(directory if directory.exists() else None, {**(metrics or {}), "step": self.run_step}, final)
        return directory

    def resume(self, directory: Path) -> None:
        """Continue from ``save_checkpoint(directory)``: weights, optimizer, schedule, data order and RNG."""
        directory = Path(directory)
        if not (directory / "trainer_state.pt").is_file():
            raise RecipeError(f"--resume {directory}: not a checkpoint of a training run (no trainer_state.pt)")
        state = read_trainer_state(directory / "trainer_state.pt")
        self.check_same_recipe(directory, state.get("fingerprint"))
        # Into the bare model, before an engine wraps it: ZeRO-3 partitions the parameters when it starts.
        load_checkpoint_weights(self.model, directory / "model" / "model.safetensors", self.device)
        self.prepare()
        self.check_same_strategy(directory, state["engine"])
        self.engine.load_extra(directory)
        self.engine.load_state_dict(state["engine"])
        self.state.step, self.state.epoch = state["step"], state["epoch"]
        self.state.batches_in_epoch, self.state.skipped_samples = state["batches_in_epoch"], state["skipped_samples"]
        rng = state["rng"]
        torch.set_rng_state(rng[self.rank if self.rank < len(rng) else 0].cpu())
        self.forget_logged_steps_after(self.run_step)

    def check_same_recipe(self, directory: Path, fingerprint: str | None) -> None:
        """A checkpoint of another recipe with the same shapes would load silently: refuse it unless asked."""
        mine = self.recipe.fingerprint()
        if fingerprint is not None and fingerprint != mine and not self.resume_anyway:
            raise CheckpointError(f"--resume {directory}: written by a different recipe (fingerprint {fingerprint}, this "
                                  f"recipe's is {mine}: its model, data, prompt or training settings differ); resume "
                                  "with the recipe that wrote it, or pass --resume-anyway to continue under this one")

    def check_same_strategy(self, directory: Path, engine_state: dict) -> None:
        """Optimizer states do not carry over between DeepSpeed's ZeRO stages and plain/DDP training."""
        written = engine_state.get("format") or ("torch" if "optimizer" in engine_state else "deepspeed")
        if written != self.engine.state_format:
            raise CheckpointError(f"--resume {directory}: its optimizer state was written as {written} and this recipe "
                                  f"trains as {self.engine.state_format} (scaling.strategy / scaling.deepspeed_config); "
                                  "resume with the strategy that wrote it")

    def forget_logged_steps_after(self, step: int) -> None:
        """metrics.jsonl without the steps after ``step``: they are trained again and logged then, once."""
        log = self.output_dir / "metrics.jsonl"
        if self.rank != 0 or not log.is_file():
            return
        kept = [line for line in log.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        log.write_text("".join(line + "\n" for line in kept))


def read_trainer_state(path: Path) -> dict:
    """trainer_state.pt read as data only (tensors, numbers, strings); a damaged file is one sentence."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        detail = torch_load_problem(error, "tensors and numbers")
        raise CheckpointError(f"{path}: unreadable as a training state ({detail}); it is truncated or was not written by "
                              "STZoo: resume from an earlier checkpoint") from None
    if not isinstance(state, dict) or not {"engine", "step", "epoch", "rng"} <= set(state):
        raise CheckpointError(f"{path}: not an STZoo training state (engine, step, epoch and rng are expected); "
                              "resume from a checkpoint directory a training run wrote")
    return state


def load_checkpoint_weights(model, path: Path, device: torch.device) -> None:
    try:
        load_model(model, str(path), strict=True, device=str(device))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: unreadable ({error}); the file is corrupt or truncated: resume from an "
                              "earlier checkpoint") from None
    except RuntimeError as error:  # missing, unexpected or differently shaped weights
        raise CheckpointError(f"{path} does not fit this recipe's model ({error_reason(error, 240)}); "
                              "resume with the recipe that wrote it") from None


def gather_rng_states(world_size: int) -> list[torch.Tensor]:
    """Every rank's CPU RNG state (ranks draw differently: masking, dropout), gathered on all ranks."""
    state = torch.get_rng_state()
    if world_size == 1 or not torch.distributed.is_initialized():
        return [state]
    gathered: list = [None] * world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def barrier(world_size: int) -> None:
    if world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def publish_model(model_dir: Path, final_dir: Path) -> None:
    """The final model at output/final: hard links to the checkpoint's files (no second copy on disk)."""
    if final_dir.exists():
        shutil.rmtree(final_dir)
    try:
        shutil.copytree(model_dir, final_dir, copy_function=os.link)
    except OSError:  # another filesystem: copy instead
        shutil.rmtree(final_dir, ignore_errors=True)
        shutil.copytree(model_dir, final_dir)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
