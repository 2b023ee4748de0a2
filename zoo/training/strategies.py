"""How a training step runs: plain PyTorch, DDP (gloo on CPU, NCCL on GPU), FSDP2, or DeepSpeed ZeRO.

The training loop calls, for each optimizer step with k micro-batches:
    forward(batch, i, k) and backward(loss, i, k) for i = 0..k-1, then step() -> grad norm.
The engine owns what differs: loss scaling over micro-batches (DeepSpeed scales by itself),
gradient synchronisation (DDP syncs only on the last micro-batch), mixed precision,
clipping, checkpoint state, and a consolidated model for save_pretrained (ZeRO-3 gathers
its partitioned parameters).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import warnings
from pathlib import Path

import torch

from components.config import RecipeError
from components.weights import CheckpointError, torch_load_problem
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel


class PlainEngine:
    def __init__(self, model, optimizer, scheduler, precision: str, grad_clip: float | None):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.grad_clip = grad_clip
        self.device = model.device
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    @property
    def module(self):
        """The model itself, unwrapped."""
        return self.model

    def _call(self, batch):
        return self.model(batch)

    def forward(self, batch, micro_index: int = 0, micro_count: int = 1):
        if self.autocast_dtype is None:
            return self._call(batch)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return self._call(batch)

    def backward(self, loss: torch.Tensor, micro_index: int = 0, micro_count: int = 1) -> None:
        loss = loss / micro_count
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self) -> float:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.module.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip else float("inf"))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(norm)

    def last_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    # What the optimizer state in a checkpoint looks like; resuming needs the same (DDP reads plain's and back).
    state_format = "torch"

    def state_dict(self) -> dict:
        return {"format": self.state_format, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save_extra(self, directory: Path) -> None:
        """Engine state kept outside trainer_state.pt (DeepSpeed's sharded optimizer)."""

    def load_extra(self, directory: Path) -> None:
        """Counterpart of save_extra."""

    def consolidated(self):
        """A context in which ``module`` holds every full parameter (ZeRO-3 gathers them)."""
        return contextlib.nullcontext()

    def model_state(self) -> dict | None:
        """The full weights to save, where the module's own state dict holds shards (FSDP2); else None."""
        return None


class DDPEngine(PlainEngine):
    """PyTorch DistributedDataParallel; gradients are all-reduced on the last micro-batch only."""

    def __init__(self, model, optimizer, scheduler, precision, grad_clip, find_unused_parameters: bool = False):
        super().__init__(model, optimizer, scheduler, precision, grad_clip)

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.wrapped = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)

    def _call(self, batch):
        return self.wrapped(batch)

    def forward(self, batch, micro_index: int = 0, micro_count: int = 1):
        # What no_sync() toggles; set per micro-batch because forward and backward are separate calls.
        self.wrapped.require_backward_grad_sync = micro_index == micro_count - 1
        return super().forward(batch, micro_index, micro_count)


def shard_model(model, precision: str) -> None:
    """torch's FSDP2 (``fully_shard``) over the process group: each LLM decoder layer a unit of its own, then the
    rest of the model (encoder, projector, compressor, embeddings, head) as the root unit. Parameters become
    DTensors sharded across the workers, so the optimizer must be built after this."""
    if precision == "fp16":
        raise RecipeError("scaling.strategy fsdp2 trains in bf16 or fp32; set train.precision to bf16 (or auto)")
    ensure_process_group()
    # FSDP2 wants one dtype per unit, and a recipe may build its LLM in bf16 beside an fp32 projector: the weights
    # are kept in fp32 (the optimizer's master copy) and the bf16 policy below casts them for compute.
    if len({p.dtype for p in model.parameters()}) > 1:
        model.to(torch.float32)
    # Every worker starts from rank 0's weights, as DDP's wrapper makes them: each built its model from its own seed.
    for tensor in model.state_dict().values():
        torch.distributed.broadcast(tensor, src=0)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" \
        else MixedPrecisionPolicy()
    for layer in model.llm.decoder.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


class FSDP2Engine(PlainEngine):
    """FSDP2: the bf16 policy replaces autocast; gradients are reduce-scattered (averaged, as DDP averages) on the
    last micro-batch only; checkpoints hold the full model and the full optimizer state, gathered from the shards,
    so `stzoo export`, evaluation and a resume on any number of workers read them."""

    state_format = "fsdp2"

    def __init__(self, model, optimizer, scheduler, precision, grad_clip):
        super().__init__(model, optimizer, scheduler, precision, grad_clip)
        self.autocast_dtype = None  # the MixedPrecisionPolicy casts; autocast on top would cast twice
        self.full_model: dict | None = None
        self.full_optimizer: dict | None = None

    def forward(self, batch, micro_index: int = 0, micro_count: int = 1):
        self.model.set_requires_gradient_sync(micro_index == micro_count - 1)
        return self._call(batch)

    def step(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip else float("inf"))
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(norm)

    @contextlib.contextmanager
    def consolidated(self):
        """Every worker takes part in gathering the full weights and optimizer state (collectives); rank 0 saves them."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        self.full_model = get_model_state_dict(self.model, options=options)
        self.full_optimizer = get_optimizer_state_dict(self.model, self.optimizer, options=options)
        try:
            yield
        finally:
            self.full_model = self.full_optimizer = None

    def model_state(self) -> dict | None:
        return self.full_model

    def state_dict(self) -> dict:
        return {"format": self.state_format, "optimizer": self.full_optimizer, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(state["scheduler"])


def fill_deepspeed_config(path: str | Path, *, micro_batch: int, accumulation: int, world_size: int,
                          precision: str, grad_clip: float | None, hidden_size: int) -> dict:
    """A DeepSpeed JSON config with its "auto" fields filled from the recipe (as HF's integration does)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"scaling.deepspeed_config: {path} not found")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RecipeError(f"scaling.deepspeed_config: {path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    values = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch * accumulation * world_size,
        "gradient_clipping": grad_clip or 0.0,
    }
    for key, value in values.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
    for name, wanted in (("bf16", precision == "bf16"), ("fp16", precision == "fp16")):
        section = config.setdefault(name, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = wanted
    zero = config.get("zero_optimization", {})
    sizes = {"reduce_bucket_size": hidden_size * hidden_size,
             "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
             "stage3_param_persistence_threshold": 10 * hidden_size}
    for key, value in sizes.items():
        if zero.get(key) == "auto":
            zero[key] = value
    leftover = [k for k, v in _walk(config) if v == "auto"]
    if leftover:
        raise RecipeError(f"scaling.deepspeed_config: {path} leaves {', '.join(leftover)} as 'auto', which STZoo cannot fill; give a value")
    return config


def _walk(config: dict, prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def ensure_process_group() -> None:
    """A one-process group on loopback when none exists (NCCL where a GPU is, gloo elsewhere): DeepSpeed and FSDP2
    need one even for a single process (``stzoo train``); Ray Train and torchrun have set theirs up before."""
    if torch.distributed.is_initialized():
        os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed asserts it; Ray Train sets it, other launchers may not
        return
    with socket.socket() as probe:  # a free port on loopback only
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port)), ("RANK", "0"),
                       ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1)


# The only classes DeepSpeed's ZeRO-2/3 checkpoints hold besides tensors, containers and numbers (found with
# torch.serialization.get_unsafe_globals_in_checkpoint); plain data, so allowing them runs no code.
DEEPSPEED_DATA_CLASSES = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
)


def read_deepspeed_file(path: str, map_location=None):
    """A DeepSpeed checkpoint file read with weights_only=True and DeepSpeed's own data classes allowed."""
    classes = [_named_class(name) for name in DEEPSPEED_DATA_CLASSES]
    try:
        with torch.serialization.safe_globals(classes):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # UnpicklingError for foreign objects, RuntimeError/EOFError for damaged files
        detail = torch_load_problem(error, "DeepSpeed's states")
        raise CheckpointError(f"{path}: unreadable as a DeepSpeed state ({detail}); it is damaged or was not written "
                              "by STZoo's DeepSpeed strategy: resume from an earlier checkpoint") from None


def _named_class(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def skip_inference_comm_op(deepspeed) -> None:
    """Keep DeepSpeed from compiling its shared-memory op (deepspeed_shm_comm) when its CPU backend starts. Only its
    inference_all_reduce (tensor-parallel inference) uses that op; ZeRO training reduces through torch.distributed.
    The C++ compile took 40 s alone and 6 minutes beside the test suite at the first DeepSpeed step on a fresh
    machine, every DeepSpeed process waiting on its lock, and ran again whenever another checkout (another
    venv path) had built it last. DeepSpeed skips an op marked not compatible; it keeps this dict for the process."""
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class DeepSpeedEngine(PlainEngine):
    """DeepSpeed ZeRO-2/3: it scales the loss over micro-batches, clips, steps at the accumulation boundary."""

    def __init__(self, model, optimizer, scheduler, config: dict):
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # named, so DeepSpeed does not warn that it guessed
        # DeepSpeed 0.19's ZeRO calls torch collectives that torch deprecates, at every step: noise, not news.
        warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
        import deepspeed

        skip_inference_comm_op(deepspeed)
        ensure_process_group()
        self.model = model
        self.device = model.device
        self.config = config
        self.stage = config.get("zero_optimization", {}).get("stage", 0)
        self.state_format = f"deepspeed-zero{self.stage}"
        if config.get("bf16", {}).get("enabled"):
            model.to(torch.bfloat16)  # DeepSpeed keeps fp32 master weights in its optimizer
        elif config.get("fp16", {}).get("enabled"):
            model.to(torch.float16)
        self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        self.step_lr = self.scheduler.get_last_lr()[0]

    def _call(self, batch):
        return self.ds(batch)

    def forward(self, batch, micro_index: int = 0, micro_count: int = 1):
        return self._call(batch)  # DeepSpeed's bf16/fp16 modes replace autocast

    def backward(self, loss, micro_index: int = 0, micro_count: int = 1) -> None:
        self.ds.backward(loss)
        # Read before ds.step(): at the accumulation boundary it steps the schedule on to the next step's rate.
        self.step_lr = self.scheduler.get_last_lr()[0]
        self.ds.step()  # a real optimizer step only at the accumulation boundary

    def last_lr(self) -> float:
        return self.step_lr

    def step(self) -> float:
        norm = self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def state_dict(self) -> dict:
        return {"format": self.state_format, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])

    def save_extra(self, directory: Path) -> None:
        self.ds.save_checkpoint(str(directory / "deepspeed"), tag="state")

    def load_extra(self, directory: Path) -> None:
        folder = directory / "deepspeed" / "state"
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: missing; the checkpoint's DeepSpeed states (optimizer shards) were not "
                                  "copied with it: copy the whole checkpoint directory again")
        # DeepSpeed reads its files with torch.load(weights_only=False), which runs whatever a pickle asks;
        # a resume folder may come from anyone, so its files are read as data only.
        self.ds.checkpoint_engine.load = read_deepspeed_file
        loaded, _ = self.ds.load_checkpoint(str(directory / "deepspeed"), tag="state", load_module_strict=True)
        if loaded is None:
            raise CheckpointError(f"{folder}: DeepSpeed found no checkpoint it could load there; the checkpoint is "
                                  "damaged: resume from an earlier one")

    def consolidated(self):
        if self.stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None)
