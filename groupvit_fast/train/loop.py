"""The training run: set-up from a config, the epoch loop, checkpoints, logs and evaluation.

``train(cfg)`` (``cfg`` from ``config.load_config``) is what ``groupvit-fast train`` and
``python -m groupvit_fast.train`` call, in one process or in each of torchrun's processes. An epoch
is ``length // (batch * world * accumulation)`` optimiser steps (NVlabs; no partial batches); the
learning rate follows ``optim.CosineWarmup`` per step. Everything that can be wrong with the config
or the data is found before the model is built.
"""

from __future__ import annotations

import os
import random
import resource
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..common.precision import autocast_dtype
from .checkpointing import (
    LATEST,
    atomic_save,
    epoch_file,
    find_latest,
    load_training_checkpoint,
    prune_epoch_files,
    rng_state,
    set_rng_state,
)
from .data import TrainData
from .distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    checkpoint_state_to_fsdp,
    fsdp_state_to_checkpoint,
    init_distributed,
    unwrap,
    wrap_model,
)
from .grad_cache import chunk_size_from_config
from .hooks import EvaluationHook
from .optim import CosineWarmup, build_optimizer, scaled_lrs
from .run_log import RunLog
from .step import train_step

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from collections.abc import Callable

    from omegaconf import DictConfig

__all__ = ["train", "Trainer", "autocast_dtype_for"]


def autocast_dtype_for(train_cfg: DictConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: ``None`` (fp32) with ``amp_opt_level: O0``; ``auto`` is bf16 on CUDA, fp32 elsewhere."""
    dtype = autocast_dtype(str(train_cfg.amp_dtype), device, key="train.amp_dtype")
    return None if str(train_cfg.amp_opt_level).upper() == "O0" else dtype


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _gather(obj) -> list:
    """Every rank's ``obj`` (a list of one in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


class Trainer:
    """A configured run (see ``train``); ``run()`` trains and returns the last logged metrics."""

    def __init__(
        self,
        cfg: DictConfig,
        *,
        resume: str | None = None,
        init: str | None = None,
        device: str | None = None,
        quiet: bool = False,
        text_transform: Callable | None = None,
    ) -> None:
        from omegaconf import OmegaConf

        self.cfg = cfg
        self.info: DistInfo = init_distributed(device)
        info = self.info
        tcfg = cfg.train
        self.accum = max(1, int(tcfg.accumulation_steps))
        self.chunk_size = chunk_size_from_config(cfg, info.world)  # before any work: a bad value is one line
        if int(tcfg.epochs) <= 0 or int(tcfg.warmup_epochs) < 0:
            raise ValueError("train.epochs must be positive and train.warmup_epochs >= 0")
        if int(cfg.print_freq) <= 0:
            raise ValueError(f"print_freq must be positive, got {cfg.print_freq}")
        self.autocast_dtype = autocast_dtype_for(tcfg, info.device)
        self.output = cfg.output
        # everything about the data is checked here, before the model exists
        self.data = TrainData(cfg, info.rank, info.world, accumulation=self.accum, text_transform=text_transform)
        self.steps_per_epoch = self.data.steps_per_epoch
        self.total_steps = int(tcfg.epochs) * self.steps_per_epoch
        resume_path = self._resume_path(resume)

        seed = int(tcfg.seed) + info.rank
        # the initial weights from the same seed on every rank: DDP would broadcast rank 0's anyway,
        # FSDP2's fully_shard keeps each rank's own shard of what that rank drew
        torch.manual_seed(int(tcfg.seed))
        random.seed(seed)
        np.random.seed(seed % 2**32)

        from ..models.registry import build_model

        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        if info.world > 1 and info.device.type != "cuda" and model_cfg.get("proj_num_layers", 2) > 1:
            model_cfg.setdefault("sync_bn", False)  # SyncBatchNorm refuses CPU tensors
        try:
            model = build_model(model_cfg)
        except (TypeError, ValueError) as err:
            raise ValueError(f"model: {err}") from None
        if info.rank:  # then each rank its own stream (Gumbel noise, drop path); rank 0's goes on as it was
            torch.manual_seed(seed)
        if init:
            from ..checkpoint import load_checkpoint

            load_checkpoint(init, model, strict=False)
        self.model_cfg = model_cfg
        model = model.to(info.device)
        self.model = wrap_model(model, info, str(tcfg.strategy))
        if tcfg.compile:
            self.model = torch.compile(self.model)
        # the rule counts the contrastive batch, batch x world: accumulation does not enlarge it (optim.py)
        self.contrastive_batch = self.data.batch_size * info.world
        base_lr, warmup_lr, min_lr = scaled_lrs(tcfg, self.contrastive_batch)
        self.optimizer = build_optimizer(self.model, tcfg, warmup_lr)
        self.scheduler = CosineWarmup(
            self.optimizer, base_lr, warmup_lr, min_lr, self.total_steps, int(tcfg.warmup_epochs) * self.steps_per_epoch
        )
        self.scaler = torch.amp.GradScaler(info.device.type) if self.autocast_dtype == torch.float16 else None
        self.step, self.epoch, self.epoch_step = 0, int(tcfg.start_epoch), 0
        self.positions: list[int] | None = None
        self.worker_offset = 0
        self.skipped = 0
        self.metrics: dict = {}
        if resume_path:
            self._load(resume_path)
        self.log = RunLog(self.output, info.is_main, total_steps=self._stop_step(), start_step=self.step, quiet=quiet)
        self.hook = EvaluationHook(cfg, is_main=info.is_main, log=self.log.info)
        if resume_path:
            self.log.info(f"resumed from {resume_path} at epoch {self.epoch}, step {self.step}")
        self._write_config()

    # ---- set-up helpers --------------------------------------------------------------------

    def _resume_path(self, resume: str | None) -> str | None:
        if resume and resume != "auto":
            if not os.path.isfile(resume):
                raise ValueError(f"--resume {resume}: no such file")
            return resume
        if resume == "auto" or self.cfg.checkpoint.auto_resume:
            return find_latest(self.output)
        if self.cfg.checkpoint.resume:
            return str(self.cfg.checkpoint.resume)
        return None

    def _stop_step(self) -> int:
        max_steps = int(self.cfg.train.max_steps)
        return min(self.total_steps, max_steps) if max_steps > 0 else self.total_steps

    def _write_config(self) -> None:
        if not self.info.is_main:
            return
        from omegaconf import OmegaConf

        os.makedirs(self.output, exist_ok=True)
        OmegaConf.save(self.cfg, os.path.join(self.output, "config.yaml"), resolve=True)

    def _load(self, path: str) -> None:
        state = load_training_checkpoint(path)
        if str(self.cfg.train.strategy) == "fsdp" and self.info.world > 1:
            # every rank read the full state; set_state_dict keeps its own shards of it
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            checkpoint_state_to_fsdp(self.model, state["model"], state["optimizer"])
            set_state_dict(
                self.model,
                self.optimizer,
                model_state_dict=state["model"],
                optim_state_dict=state["optimizer"],
                options=StateDictOptions(full_state_dict=True),
            )
        else:
            unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.epoch_step = int(state["step"]), int(state["epoch"]), int(state["epoch_step"])
        self.metrics = dict(state.get("metrics") or {})
        rank = self.info.rank
        rngs, datas = state.get("rng") or [], state.get("data") or []
        if len(rngs) == self.info.world:
            set_rng_state(rngs[rank])
        data = datas[rank] if len(datas) == self.info.world else None
        if data and data["num_workers"] == max(1, self.data.num_workers):
            self.positions, self.worker_offset = list(data["positions"]), int(data["worker_offset"])
        elif self.epoch_step:
            # another world size or worker count: the data order differs; restart this epoch's stream
            self.positions, self.worker_offset = None, 0
        if self.epoch_step >= self.steps_per_epoch:
            self.epoch, self.epoch_step, self.positions, self.worker_offset = self.epoch + 1, 0, None, 0

    # ---- checkpoints -----------------------------------------------------------------------

    def save(self, epoch_done: bool = False) -> None:
        """``checkpoint.pth`` (and ``ckpt_epoch_<E>.pth`` at the end of an epoch) from rank 0."""
        from omegaconf import OmegaConf

        workers = max(1, self.data.num_workers)
        data = {
            "positions": list(self.positions or [0] * workers),
            "worker_offset": self.worker_offset,
            "num_workers": workers,
        }
        rngs, datas = _gather(rng_state()), _gather(data)
        model_state, optim_state = self._state_dicts()
        if self.info.is_main:
            state = {
                "model": model_state,
                "optimizer": optim_state,
                "lr_scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "epoch": self.epoch,
                "step": self.step,
                "epoch_step": self.epoch_step,
                "config": {**OmegaConf.to_container(self.cfg, resolve=True), "model": self.model_cfg},
                "metrics": self.metrics,
                "rng": rngs,
                "data": datas,
            }
            atomic_save(state, os.path.join(self.output, LATEST))
            save_freq = int(self.cfg.checkpoint.save_freq)
            if epoch_done and save_freq > 0 and (self.epoch + 1) % save_freq == 0:
                atomic_save(state, epoch_file(self.output, self.epoch))
                prune_epoch_files(self.output, int(self.cfg.checkpoint.max_kept))
        barrier()

    def _state_dicts(self) -> tuple[dict, dict]:
        if str(self.cfg.train.strategy) == "fsdp" and self.info.world > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_state, optim_state = get_state_dict(self.model, self.optimizer, options=options)
            fsdp_state_to_checkpoint(self.model, model_state, optim_state)
            return model_state, optim_state
        return unwrap(self.model).state_dict(), self.optimizer.state_dict()

    # ---- the loop --------------------------------------------------------------------------

    def run(self) -> dict:
        """Train to the end of the schedule (or ``train.max_steps``); returns the last metrics record."""
        info, cfg = self.info, self.cfg
        stop = self._stop_step()
        workers = max(1, self.data.num_workers)
        self.log.info(
            f"run {cfg.model_name}: {info.world} process(es) on {info.device.type}, batch "
            f"{self.data.batch_size} per process = global batch {self.contrastive_batch} (the contrastive "
            f"batch), x {self.accum} accumulation step(s) = {self.data.global_batch} pairs per optimiser "
            f"step; {self.steps_per_epoch} steps per epoch, {self.total_steps} in all; output {self.output}"
        )
        if self.accum > 1:  # docs/training.md, "Batch sizes and the learning rate"
            self.log.info(
                f"accumulation: each of the {self.accum} micro-batches is its own contrastive batch of "
                f"{self.contrastive_batch} pairs (its own negatives), not one of {self.data.global_batch}; "
                f"the learning rate is scaled by {self.contrastive_batch} / 4096 (train.grad_cache."
                f"chunk_size makes a larger contrastive batch fit)"
            )
        if self.chunk_size:
            self.log.info(
                f"gradient caching: the encoders run {self.chunk_size} pairs at a time, the loss sees "
                f"the contrastive batch of {self.contrastive_batch}"
            )
        if cfg.evaluate.eval_only:
            result = self.hook(unwrap(self.model))
            self.log.metrics({"eval": result, "epoch": self.epoch})
            self.log.close()
            return result
        if self.step >= stop:
            self.log.info(f"nothing to do: the checkpoint is at step {self.step} of {stop}")
            self.log.close()
            return self.metrics
        self.model.train()
        last: dict = {}
        print_freq = int(cfg.print_freq)
        tick, tick_step = time.perf_counter(), self.step
        try:
            while self.epoch < int(cfg.train.epochs) and self.step < stop:
                loader = self.data.loader(self.epoch, self.positions, self.worker_offset)
                batches = iter(loader)
                self.positions = list(self.positions or [0] * workers)
                while self.epoch_step < self.steps_per_epoch and self.step < stop:
                    micro = []
                    for _ in range(self.accum):
                        batch = next(batches)
                        self.positions[batch["worker"]] = batch["position"]
                        self.skipped += batch["skipped"]
                        self.worker_offset = (batch["worker"] + 1) % workers
                        micro.append(batch)
                    out = train_step(
                        self.model,
                        micro,
                        self.optimizer,
                        device=info.device,
                        autocast_dtype=self.autocast_dtype,
                        scaler=self.scaler,
                        clip_grad=float(cfg.train.clip_grad),
                        chunk_size=self.chunk_size,
                    )
                    lr = self.scheduler.get_last_lr()
                    self.scheduler.step()
                    self.step += 1
                    self.epoch_step += 1
                    if self.step % print_freq == 0 or self.step == stop:
                        last = self._log_step(out, lr, tick, tick_step)
                        tick, tick_step = time.perf_counter(), self.step
                    step_freq = int(cfg.checkpoint.step_freq)
                    if step_freq > 0 and self.step % step_freq == 0 and self.epoch_step < self.steps_per_epoch:
                        self.save()
                del batches, loader
                if self.epoch_step < self.steps_per_epoch:  # stopped by train.max_steps
                    self.save()
                    break
                self.save(epoch_done=True)
                if self.hook.due(self.epoch):
                    result = self.hook(unwrap(self.model))
                    self.metrics.update(result)
                    self.log.metrics({"epoch": self.epoch, "step": self.step, "eval": result})
                    self.log.info(f"epoch {self.epoch}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()))
                self.epoch, self.epoch_step, self.positions, self.worker_offset = self.epoch + 1, 0, None, 0
            if self.skipped:
                self.log.info(f"skipped {self.skipped} sample(s) on rank {info.rank} (corrupt image or empty caption)")
            self.log.info(f"done at step {self.step}; checkpoint {os.path.join(self.output, LATEST)}")
        finally:
            self.log.close()
        return last

    def _log_step(self, out: dict, lr: float, tick: float, tick_step: int) -> dict:
        keys = sorted(k for k in out if k != "grad_norm")
        values = all_reduce_mean(torch.stack([out[k] for k in keys]).float())
        skipped = torch.tensor(float(self.skipped))
        skipped = all_reduce_mean(skipped) * self.info.world
        elapsed = max(time.perf_counter() - tick, 1e-9)
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "lr": lr,
            "grad_norm": float(out["grad_norm"]),
            **{k: float(v) for k, v in zip(keys, values, strict=True)},
            "images_per_s": (self.step - tick_step) * self.data.global_batch / elapsed,
            "peak_memory_mb": _peak_memory_mb(self.info.device),
            "skipped": int(skipped),
        }
        self.metrics["last_loss"] = record["total_loss"]
        self.log.metrics(record)
        self.log.advance(
            self.step - tick_step,
            loss=f"{record['total_loss']:.4f}",
            lr=f"{lr:.2e}",
            img_s=f"{record['images_per_s']:.1f}",
        )
        return record


def train(
    cfg: DictConfig,
    *,
    resume: str | None = None,
    init: str | None = None,
    device: str | None = None,
    quiet: bool = False,
    text_transform: Callable | None = None,
) -> dict:
    """Train the model of ``cfg`` (``config.load_config``); returns the last logged metrics.

    ``resume``: a checkpoint path or ``'auto'`` (the run folder's latest; also the default when
    ``checkpoint.auto_resume``); ``init``: weights to start from (any format ``load_checkpoint``
    reads, e.g. an NVlabs ``.pth``), optimiser and schedule fresh; ``device``: ``cpu``, ``cuda``
    (default: CUDA when available); ``text_transform``: replaces the caption transform
    (``prompts.TextTransform``), e.g. with a tagger of one's own.
    """
    trainer = Trainer(cfg, resume=resume, init=init, device=device, quiet=quiet, text_transform=text_transform)
    return trainer.run()
