"""The training loop: AdamW (the release's optimiser, no weight decay: Adam), gradient clipping,
bf16 autocast on CUDA, DistributedDataParallel under torchrun, resumable checkpoints, CSV logs."""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ..model import Samwise
from ..model.memory import StreamMemory
from ..model.samwise import TRAINABLE_MODULES
from .batches import ClipTensors, clip_tensors
from .losses import cme_loss, mask_losses, object_score_loss

STATE_FILE = "training_state.pt"
BATCH_NORM_CALIBRATION_CLIPS = 32
LAST = "last"
# Without cuDNN: its attention backward returned NaN in SAM2's mask decoder under bf16 autocast (H100,
# torch 2.11, the demo model) while its forward was fine; the other kernels are exact.
TRAINING_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class TrainSettings:
    output: Path
    epochs: int = 1
    batch_size: int = 2
    lr: float = 1e-5
    clip_max_norm: float = 1.0
    from_scratch: bool = False  # train every parameter (tiny models), not only the release's modules
    # else the release's modules, or only these of them (e.g. ("cme",): the CME on a finished model)
    modules: tuple[str, ...] = TRAINABLE_MODULES
    # learning-rate multipliers by parameter-name prefix, e.g. {"sam.memory_encoder": 20}: a module whose
    # inputs are on another scale than the rest's learns at its own pace
    lr_scales: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    workers: int = 0
    log_every: int = 10
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    cosine: bool = False  # then cosine decay to 0 at the last step (else constant)
    # focal + dice on the memory-less decodings the CME compares against (not in the release's recipe:
    # its memory-less path comes trained with SAM2; from scratch it is otherwise trained on first frames only)
    memoryless_mask_loss: bool = False
    precision: str = "bf16"  # on CUDA: "bf16" autocast (the release's) or "fp32"; the CPU always computes fp32
    # streams instead of clips: each sample holds history_clips + 1 clips; the earlier ones run through
    # the inference forward without gradients to fill the memory, the losses are on the last one
    # (single clips never need the memory, so a model trained from scratch on them ignores it)
    history_clips: int = 0


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0
    history: list[dict] = field(default_factory=list)  # one row per epoch


def collate_list(items):
    return list(items)


class BatchLosses(nn.Module):
    """A step's forward: every clip of the batch through the model, and the losses.

    One module, called once per step, is what DistributedDataParallel wraps: called once per clip it
    re-broadcast the BatchNorm buffers between clips of one step, under tensors the previous clip had
    saved for backward (seen on a GPU), and an auxiliary text loss outside it never synced its gradients."""

    def __init__(self, model: Samwise, text_loss: nn.Module | None, train_object_scores: bool,
                 memoryless_mask_loss: bool, autocast: Callable, history_clips: int = 0,
                 clip_losses: dict[str, nn.Module] | None = None):
        super().__init__()
        self.model = model
        self.text_loss = text_loss
        self.clip_losses = nn.ModuleDict(clip_losses or {})
        self.train_object_scores = train_object_scores
        self.memoryless_mask_loss = memoryless_mask_loss
        self.autocast = autocast
        self.history_clips = history_clips

    def forward(self, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Mean focal and dice over the batch's clips, the CME loss over its decided frames and, from
        scratch, SAM2's object-score loss (is the object in the frame?); optionally focal and dice on
        the memory-less decodings, and the auxiliary clip losses. Also the CME's labels of the batch
        (None without decided frames)."""
        focal, dice, objectness, cme_logits, cme_labels = [], [], [], [], []
        memoryless_focal, memoryless_dice = [], []
        auxiliary = {name: [] for name in self.clip_losses}
        device = self.model.device
        for clip in batch:
            # per-pixel attribute maps are read by the clip losses only: resized for them, not on every step
            attributes = clip.attributes if self.clip_losses else None
            tensors = clip_tensors(clip.frames, clip.masks, clip.expression, self.model.image_size, device, attributes)
            query = self.model.tokenize(tensors.expression)
            tensors, memory, first_index = self.clip_to_train(tensors, query)
            masks = tensors.masks
            with self.autocast(), sdpa_kernel(TRAINING_ATTENTION):
                outputs = self.model.forward_train(
                    tensors.frames, query, train_object_scores=self.train_object_scores,
                    train_memoryless=self.memoryless_mask_loss, memory=memory, first_index=first_index)
            clip_focal, clip_dice = mask_losses([out.mask_logits for out in outputs], masks)
            focal.append(clip_focal)
            dice.append(clip_dice)
            decided = [i for i, out in enumerate(outputs) if out.memoryless_mask_logits is not None]
            if self.memoryless_mask_loss and decided:
                clip_focal, clip_dice = mask_losses([outputs[i].memoryless_mask_logits for i in decided],
                                                    masks[decided])
                memoryless_focal.append(clip_focal)
                memoryless_dice.append(clip_dice)
            if self.train_object_scores:
                objectness.append(presence_loss(outputs, masks))
            for name, loss in self.clip_losses.items():
                auxiliary[name].append(loss(self.model, outputs, tensors))
            cme_logits += [out.cme_logits for out in outputs if out.cme_logits is not None]
            cme_labels += [out.cme_label for out in outputs if out.cme_label is not None]
        losses = {"loss_mask": torch.stack(focal).mean(), "loss_dice": torch.stack(dice).mean()}
        if self.text_loss is not None:
            losses["loss_text"] = self.text_loss(self.model, [clip.expression for clip in batch])
        if objectness:
            losses["loss_object"] = torch.stack(objectness).mean()
        losses |= {f"loss_{name}": torch.stack(values).mean() for name, values in auxiliary.items()}
        if memoryless_focal:
            losses["loss_memoryless"] = torch.stack(memoryless_focal).mean() + torch.stack(memoryless_dice).mean()
        labels = torch.cat(cme_labels).to(device) if cme_labels else None
        if cme_logits:
            losses["loss_cme"] = cme_loss(torch.cat([logits.float() for logits in cme_logits]), labels)
        return losses, labels

    def clip_to_train(self, tensors: ClipTensors, query) -> tuple[ClipTensors, StreamMemory | None, int]:
        """(tensors, memory, first frame index) of the clip the losses are on: the whole sample with a
        fresh memory, or with history clips the last clip and the memory the others leave."""
        if not self.history_clips:
            return tensors, None, 0
        clip_length = tensors.frames.shape[0] // (self.history_clips + 1)
        first_index = clip_length * self.history_clips
        memory = self.history_memory(tensors.frames[:first_index], query, clip_length)
        return tensors.frames_from(first_index), memory, first_index

    def history_memory(self, frames: torch.Tensor, query, clip_length: int) -> StreamMemory:
        """The stream's earlier clips through the inference forward, without gradients: the memory the
        trained clip starts from."""
        memory = self.model.new_stream_memory()
        with torch.no_grad(), self.autocast():
            for start in range(0, frames.shape[0], clip_length):
                self.model.forward_clip(frames[start:start + clip_length], query,
                                        range(start, start + clip_length), memory)
        return memory


class Trainer:
    """Trains `model` on a dataset of ReferringClip; `evaluate(model) -> dict` scores an epoch.

    Auxiliary losses bring training-only parameters of their own, which train with the model's and
    are saved with the optimiser state: `text_loss(model, texts)` on the expressions, and each of
    `clip_losses` as `loss(model, frame_outputs, clip_tensors)` on each clip's forward, logged as
    loss_<name>."""

    def __init__(self, model: Samwise, dataset: Dataset, settings: TrainSettings,
                 evaluate: Callable[[Samwise], dict] | None = None, text_loss: nn.Module | None = None,
                 clip_losses: dict[str, nn.Module] | None = None):
        self.settings = settings
        self.rank, self.world_size = init_distributed()
        self.device = model.device
        self.model = model
        if settings.from_scratch:
            for param in model.parameters():
                param.requires_grad_(True)
        else:
            model.freeze_for_training(settings.modules)
        batch_losses = BatchLosses(model, text_loss, train_object_scores=settings.from_scratch,
                                   memoryless_mask_loss=settings.memoryless_mask_loss, autocast=self._autocast,
                                   history_clips=settings.history_clips, clip_losses=clip_losses)
        text = {"text": text_loss} if text_loss is not None else {}
        self.auxiliary = nn.ModuleDict({"clip": batch_losses.clip_losses} | text)
        groups = parameter_groups(model, self.auxiliary, settings.lr, settings.lr_scales)
        self.parameters = [param for group in groups for param in group["params"]]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        # the CME is unused on clips shorter than its window (image data): hence find_unused_parameters
        self.network = (DistributedDataParallel(batch_losses, find_unused_parameters=True)
                        if self.world_size > 1 else batch_losses)
        self.sampler = DistributedSampler(dataset, shuffle=True, seed=settings.seed) if self.world_size > 1 else None
        generator = torch.Generator().manual_seed(settings.seed)
        self.loader = DataLoader(dataset, batch_size=settings.batch_size, shuffle=self.sampler is None,
                                 sampler=self.sampler, num_workers=settings.workers, collate_fn=collate_list,
                                 generator=generator, drop_last=False)
        total_steps = settings.epochs * len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total_steps, settings.warmup_steps, settings.cosine))
        self.evaluate = evaluate
        self.progress = Progress()
        settings.output.mkdir(parents=True, exist_ok=True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- one step ---------------------------------------------------------------------------

    def step(self, batch) -> dict[str, float]:
        self.network.train()
        freeze_batch_norm_statistics(self.model, everywhere=self.settings.from_scratch)
        losses, cme_labels = self.network(batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss is {total.item()} at step {self.progress.step}: {losses}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, self.settings.clip_max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.progress.step += 1
        values = {name: value.item() for name, value in losses.items()} | {"loss": total.item()}
        if cme_labels is not None:
            values |= cme_label_shares(cme_labels)
        return values

    def _autocast(self):
        enabled = self.device.type == "cuda" and self.settings.precision == "bf16"
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)

    def calibrate_batch_norm(self, clips: int = BATCH_NORM_CALIBRATION_CLIPS) -> None:
        """Set every BatchNorm's running statistics to the population statistics of `clips` training
        clips under the current weights (frozen statistics train from there: see step)."""
        norms = batch_norms(self.model)
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average
            norm.train()
        dataset = self.loader.dataset
        with torch.no_grad():
            for index in range(min(clips, len(dataset))):
                clip = dataset[index]
                tensors = clip_tensors(clip.frames, clip.masks, clip.expression, self.model.image_size, self.device)
                self.model.encode_clip(tensors.frames, self.model.tokenize(tensors.expression))
        for norm in norms:
            norm.momentum = 0.1
            norm.eval()

    # ---- epochs -------------------------------------------------------------------------------

    def fit(self) -> Progress:
        log_path = self.settings.output / "train_log.csv"
        if self.settings.from_scratch and self.progress.step == 0:
            self.calibrate_batch_norm()
        for epoch in range(self.progress.epoch, self.settings.epochs):
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)
            if hasattr(self.loader.dataset, "set_epoch"):  # video datasets draw new frames each epoch
                self.loader.dataset.set_epoch(epoch)
            sums, count, started = {}, 0, time.perf_counter()
            bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.settings.epochs}", disable=not self.is_main)
            for batch in bar:
                values = self.step(batch)
                count += 1
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + value
                bar.set_postfix(loss=f"{values['loss']:.4f}", clips_per_s=f"{count * len(batch) / (time.perf_counter() - started):.2f}")
                if self.is_main and self.progress.step % self.settings.log_every == 0:
                    append_csv(log_path, {"epoch": epoch + 1, "step": self.progress.step, **values})
            self.progress.epoch = epoch + 1
            row = {"epoch": epoch + 1, "step": self.progress.step, **{k: v / max(count, 1) for k, v in sums.items()}}
            if self.evaluate is not None and self.is_main:
                self.model.eval()
                row.update(self.evaluate(self.model))
            self.progress.history.append(row)
            if self.is_main:
                append_csv(self.settings.output / "epochs.csv", row)
                self.save(self.settings.output / LAST)
            barrier(self.world_size)
        if self.is_main:
            plot_curves(log_path, self.settings.output / "epochs.csv", self.settings.output / "curves.png")
        return self.progress

    # ---- checkpoints ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """The model as a self-contained directory, plus optimiser state and progress to resume from."""
        self.model.save(directory)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "auxiliary": self.auxiliary.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.progress.epoch,
            "step": self.progress.step,
            "history": self.progress.history,
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, directory / STATE_FILE)

    def _read_state(self, directory: Path) -> dict:
        """The optimiser state, auxiliary heads and progress `save` wrote (tensors only, no pickled code)."""
        return torch.load(directory / STATE_FILE, map_location=self.device, weights_only=True)

    def warm_start_auxiliary(self, directory: Path) -> bool:
        """The auxiliary heads a run saved in `directory` (its `--init`), if it saved the same ones: a
        fine-tuning run then starts from heads that fit the features instead of random ones, whose
        first large gradients reshape the features they read. False where there are none to take."""
        if not (directory / STATE_FILE).is_file():
            return False
        saved = self._read_state(directory).get("auxiliary", {})
        if not saved or set(saved) != set(self.auxiliary.state_dict()):
            return False
        self.auxiliary.load_state_dict(saved)
        return True

    def resume(self, directory: Path) -> None:
        """Continue from a directory written by `save` (weights, optimiser, epoch and step)."""
        from ..model.checkpoint import load_state_strict, read_directory

        _, weights, _ = read_directory(directory)
        load_state_strict(self.model, weights, f"resume directory {directory}")
        state = self._read_state(directory)
        if "auxiliary" in state:  # saved before the auxiliary heads were
            self.auxiliary.load_state_dict(state["auxiliary"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.progress = Progress(state["epoch"], state["step"], list(state["history"]))


def presence_loss(frame_outputs: list, masks: torch.Tensor) -> torch.Tensor:
    """SAM2's object-score loss over a clip: is the object visible in each frame (masks [T, h, w])?"""
    scores = torch.cat([out.object_score_logits.float() for out in frame_outputs]).flatten()
    return object_score_loss(scores, masks.flatten(1).any(dim=1))


def batch_norms(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def freeze_batch_norm_statistics(model: nn.Module, everywhere: bool) -> None:
    """BatchNorm layers of frozen modules normalise with their running statistics, as at inference;
    `everywhere`: every BatchNorm does, trained or not.

    The CMT adapters' BatchNorm sees one clip per forward. A model trained from scratch with batch
    statistics learns to rely on that per-clip normalisation, and with running statistics at
    inference its masks vanish (measured on held-out clips: the same weights give masks with batch
    statistics and almost none with running ones, even recalibrated). With the statistics frozen,
    training optimises what inference runs.
    The release's fine-tuning keeps PyTorch's default for the modules it trains (its adapters sit on
    pre-trained SAM2 features); a frozen module must not drift."""
    for norm in batch_norms(model):
        if everywhere or not any(param.requires_grad for param in norm.parameters()):
            norm.eval()


def cme_label_shares(labels: torch.Tensor) -> dict[str, float]:
    """Of the CME's decided frames, the shares labelled switch (1) and ignored (-1): a CME whose labels
    are never 1 learns never to switch, so training logs them."""
    count = labels.numel()
    return {"cme_switch_labels": (labels == 1).sum().item() / count,
            "cme_ignored_labels": (labels == -1).sum().item() / count}


def parameter_groups(model: nn.Module, auxiliary: nn.Module, lr: float, lr_scales: dict[str, float]) -> list[dict]:
    """The trainable parameters as optimiser groups: one per prefix of `lr_scales` (at lr times its
    factor), one for the rest and the auxiliary heads (at lr). A prefix matching nothing trainable is an error."""
    scaled = {prefix: [] for prefix in lr_scales}
    rest = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            prefix = next((prefix for prefix in lr_scales if name.startswith(prefix)), None)
            (rest if prefix is None else scaled[prefix]).append(param)
    empty = [prefix for prefix, params in scaled.items() if not params]
    if empty:
        raise ValueError(f"no trainable parameter starts with {empty}")
    groups = [{"params": params, "lr": lr * lr_scales[prefix]} for prefix, params in scaled.items()]
    return [*groups, {"params": rest + list(auxiliary.parameters()), "lr": lr}]


def lr_factor(step: int, total_steps: int, warmup_steps: int, cosine: bool) -> float:
    """Multiplier of the base learning rate at `step`: linear warm-up, then constant or cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def init_distributed() -> tuple[int, int]:
    """(rank, world size): torchrun's environment when present, else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(distributed_backend(world_size, torch.cuda.device_count()))
    return (dist.get_rank(), world_size) if world_size > 1 else (0, 1)


def distributed_backend(world_size: int, gpus: int) -> str:
    """NCCL when every process has a GPU of its own; gloo on CPUs and for several processes sharing a
    GPU (NCCL refuses two ranks on one device; a tiny model leaves a GPU idle between one process's
    small kernels, so several processes per GPU train faster)."""
    return "nccl" if gpus >= world_size else "gloo"


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def append_csv(path: Path, row: dict) -> None:
    """Append `row`; a row with columns the file lacks (a loss added on resuming) rewrites the file
    with the union of the columns, earlier rows leaving the new ones empty."""
    row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
    columns = read_header(path)
    if columns and set(row) <= set(columns):
        with open(path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=columns).writerow(row)
        return
    rows = read_csv(path)
    columns += [name for name in row if name not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows([*rows, row])


def read_header(path: Path) -> list[str]:
    """The column names of a CSV log (empty when there is none): appending reads nothing more."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return next(csv.reader(handle), [])


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as handle:
        return list(csv.DictReader(handle))


def plot_curves(step_log: Path, epoch_log: Path, output: Path) -> None:
    """Loss per logged step and the per-epoch scores, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, epochs = read_csv(step_log), read_csv(epoch_log)
    figure, (losses, scores) = plt.subplots(1, 2, figsize=(10, 4))
    for name in [column for column in (steps[0] if steps else {}) if column.startswith("loss")]:
        points = [(int(r["step"]), float(r[name])) for r in steps if r.get(name)]
        if points:
            losses.plot(*zip(*points), label=name)
    losses.set_xlabel("step"), losses.set_yscale("log"), losses.set_title("training losses")
    for name in sorted({k for r in epochs for k in r if k.startswith("eval_")}):
        points = [(int(r["epoch"]), float(r[name])) for r in epochs if r.get(name)]
        scores.plot(*zip(*points), marker="o", label=name.removeprefix("eval_"))
    scores.set_xlabel("epoch"), scores.set_title("held-out scores")
    for axes in (losses, scores):
        if axes.lines:
            axes.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)
