"""The refinement training loop: Adam, resumable checkpoints, CSV logs, validation, plot.

Output folder (``TrainConfig.out``)::

    config.json            every setting, seeds, training / validation / excluded image names
    losses.csv             step, elapsed_s, total, hole_l1, tv[, perceptual, style] (mean of the
                           last ``log_every`` steps)
    validation.csv         step, elapsed_s, image, size, base_l1, base_psnr, model_l1, model_psnr;
                           one row per held-out item and one ``image = "mean"`` row per check
    loss.png               losses and validation gain over the base against the step
    checkpoints/last.pt    model + optimiser + step + every RNG state (resume from here)
    checkpoints/best.pt    the same for the check with the lowest mean validation L1
    best_model.pth         the best weights alone in the shipped format (see :func:`save_model`)

Validation runs the real two-stage pipeline (:func:`bench.methods.two_stage.refine`) on the
benchmark protocol (centre square, nearest reduction, centred N/3 hole) for held-out photos
and compares against the coarse base upscaled from 512, which is what the net starts from.
``steps`` is the total: a resumed run continues to it, so a later session extends training by
passing a larger ``steps`` with ``resume`` (optionally with a lower ``lr``: the learning rate
of the resumed command replaces the saved one).
"""

from __future__ import annotations

import csv
import logging
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..devices import resolve_device
from ..errors import UserError
from ..io import atomic_path, list_images, save_figure, write_json
from ..methods.nets.slim import DEFAULT_HEAD, DEFAULT_WIDTHS, SlimRefineNet, parameter_count
from ..methods.two_stage import refine as run_refinement
from ..metrics import l1, psnr
from .data import (
    DataConfig,
    PatchSampler,
    ValItem,
    load_squares,
    select_images,
    validation_items,
)
from .losses import LossWeights, RefinementLoss, VGG16Features, find_vgg16_weights

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("total", "hole_l1", "tv", "perceptual", "style")
VAL_COLUMNS = ("step", "elapsed_s", "image", "size", "base_l1", "base_psnr", "model_l1", "model_psnr")
# Settings that must not change when a run is resumed (they define the model or its data).
_RESUME_FIXED = ("widths", "head", "coarse", "no_shift", "seed")


@dataclass
class TrainConfig:
    images: Path
    out: Path
    steps: int
    batch: int = 4
    lr: float = 2e-4
    seed: int = 0
    coarse: str = "telea"
    device: str = "cpu"
    threads: int = 0  # 0 = torch's default
    val_every: int = 250
    val_count: int = 3
    val_images: list[str] = field(default_factory=list)  # names; empty = the last val_count
    val_sizes: tuple[int, ...] = (1024, 2048)
    log_every: int = 10
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    exclude: list[str] = field(default_factory=list)  # names excluded from training and validation
    exclude_sample_set: bool = True  # also exclude the embedded sample set (by name and content)
    vgg_weights: Path | None = None
    no_shift: bool = False
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    head: int = DEFAULT_HEAD
    resume: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    weights: LossWeights = field(default_factory=LossWeights)

    def as_json(self) -> dict:
        d = asdict(self)
        d["images"], d["out"] = str(self.images), str(self.out)
        d["vgg_weights"] = str(self.vgg_weights) if self.vgg_weights else None
        return d


# -- helpers -------------------------------------------------------------------------------------
def make_coarse(name: str, device: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The registered method ``name`` as the coarse base (run at 512 by the pipeline helpers)."""
    from ..methods.base import MethodContext, create

    return create(name, MethodContext(device=device))


def _sample_set_exclusions() -> tuple[set[str], set[str]]:
    """Names and sha256 of the embedded sample set's photos (empty if it is not installed)."""
    from ..datasets import sample_dir
    from ..io import sha256_file

    try:
        folder = sample_dir()
    except UserError:
        return set(), set()
    files = [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return {p.name for p in files}, {sha256_file(p) for p in files}


def split_images(cfg: TrainConfig) -> tuple[list[Path], list[Path], list[str]]:
    """(training files, validation files, excluded names) for ``cfg``."""
    files = list_images(cfg.images)
    names, hashes = set(cfg.exclude), set()
    if cfg.exclude_sample_set:
        s_names, s_hashes = _sample_set_exclusions()
        names |= s_names
        hashes |= s_hashes
    kept, excluded = select_images(files, names, hashes)
    by_name = {p.name: p for p in kept}
    if cfg.val_images:
        missing = [n for n in cfg.val_images if n not in by_name]
        if missing:
            raise UserError(f"--val-images: {', '.join(missing)} not among the usable images in {cfg.images}")
        val = [by_name[n] for n in cfg.val_images]
    else:
        val = kept[-cfg.val_count :] if cfg.val_count else []
    train = [p for p in kept if p not in val]
    if not train:
        raise UserError(f"{cfg.images}: no training images left after exclusions and validation hold-out")
    return train, val, sorted(p.name for p in excluded)


def save_model(net: SlimRefineNet, path: Path, meta: dict) -> None:
    """The shipped format: ``{"state_dict", "config", "meta"}`` written atomically."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": net.state_dict(), "config": net.config(), "meta": meta}, tmp)


def _rng_states(np_rng: np.random.Generator) -> dict:
    return {
        "numpy": np_rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }


def _append_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def evaluate(net: torch.nn.Module, items: list[ValItem], device: str, no_shift: bool) -> list[dict]:
    """Base vs model L1/PSNR on validation items (model through the real pipeline)."""
    rows = []
    net.eval()
    for it in items:
        out = run_refinement(net, it.matched, it.hole, device=device, no_shift=no_shift)
        out = np.where(it.hole[..., None], out, it.gt)  # the benchmark pastes the known region
        rows.append({"image": it.name, "size": it.size,
                     "base_l1": l1(it.matched, it.gt), "base_psnr": psnr(it.matched, it.gt),
                     "model_l1": l1(out, it.gt), "model_psnr": psnr(out, it.gt)})
    net.train()
    return rows


def _mean_row(rows: list[dict]) -> dict:
    keys = ("base_l1", "base_psnr", "model_l1", "model_psnr")
    return {"image": "mean", "size": 0, **{k: float(np.mean([r[k] for r in rows])) for k in keys}}


def plot_log(out: Path) -> None:
    """loss.png: training losses (left) and validation change over the base (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    losses_path, val_path = out / "losses.csv", out / "validation.csv"
    if not losses_path.exists():
        return
    losses = pd.read_csv(losses_path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for col in ("total", "hole_l1", "tv", "perceptual", "style"):
        if col in losses and losses[col].notna().any():
            axes[0].plot(losses["step"], losses[col], label=col)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training losses")
    axes[0].legend()
    if val_path.exists():
        val = pd.read_csv(val_path)
        mean = val[val["image"] == "mean"]
        axes[1].plot(mean["step"], mean["model_l1"] - mean["base_l1"], "o-", label="ΔL1 (lower is better)")
        ax2 = axes[1].twinx()
        ax2.plot(mean["step"], mean["model_psnr"] - mean["base_psnr"], "s--", color="C1",
                 label="ΔPSNR dB (higher is better)")
        ax2.set_ylabel("ΔPSNR (dB)")
        axes[1].axhline(0, color="grey", lw=0.5)
        axes[1].set_ylabel("ΔL1 (0–255)")
        axes[1].legend(loc="upper left")
        ax2.legend(loc="upper right")
    axes[1].set_xlabel("step")
    axes[1].set_title("held-out validation: model − coarse base")
    fig.subplots_adjust(left=0.07, right=0.92, bottom=0.13, top=0.92, wspace=0.3)  # tight_layout is slow
    save_figure(fig, out / "loss", formats=("png",), dpi=100, tight=False)


class _StopFlag:
    """Set by SIGTERM/SIGINT so the loop checkpoints and exits at the end of a step."""

    def __init__(self):
        self.stop = False

    def __call__(self, signum, frame):  # noqa: ARG002 - signal handler signature
        self.stop = True


# -- the loop ------------------------------------------------------------------------------------
def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) per ``cfg``; returns a summary dict (steps, best validation, paths)."""
    cfg.data.check()
    if cfg.steps < 0:
        raise UserError(f"--steps {cfg.steps}: must be >= 0")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    if last_path.exists() and not cfg.resume:
        raise UserError(f"{out}: holds a training run already; pass --resume to continue it or a new --out")
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    state = None
    if cfg.resume and last_path.exists():
        # our own checkpoint: it holds RNG states and the config, not only tensors
        state = torch.load(last_path, map_location="cpu", weights_only=False)
    if state is not None:
        old = state["config"]
        changed = [k for k in _RESUME_FIXED if old.get(k) != cfg.as_json().get(k)]
        if changed:
            raise UserError(f"--resume: {', '.join(changed)} differ from the saved run in {out}; "
                            "keep them or use a new --out")

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)

    train_files, val_files, excluded = split_images(cfg)
    coarse = make_coarse(cfg.coarse, device)
    squares = load_squares(train_files, cfg.data.squares_per_image, min(cfg.data.sizes), np_rng)
    val_items = validation_items(val_files, cfg.val_sizes, coarse)

    net = SlimRefineNet(tuple(cfg.widths), cfg.head).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    vgg_path = None
    try:
        vgg_path = find_vgg16_weights(cfg.vgg_weights)
    except FileNotFoundError as exc:
        raise UserError(f"--vgg-weights {exc}: file not found; "
                        "pass torchvision's vgg16 state_dict file") from None
    if vgg_path is None:
        log.warning("VGG16 weights not found (no --vgg-weights, none in torch's hub cache); "
                    "training without perceptual/style terms")
        vgg = None
    else:
        vgg = VGG16Features(vgg_path).to(device)
    criterion = RefinementLoss(cfg.weights, vgg)

    step, elapsed_before, best = 0, 0.0, math.inf
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for group in opt.param_groups:  # the learning rate given now wins (e.g. a lower one late)
            group["lr"] = cfg.lr
        step, elapsed_before, best = state["step"], state["elapsed_s"], state["best_val_l1"]
        np_rng.bit_generator.state = state["rng"]["numpy"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        log.info("resumed %s at step %d", out, step)
    sampler = PatchSampler(squares, coarse, cfg.data, np_rng, no_shift=cfg.no_shift)

    run_info = {
        **cfg.as_json(),
        "device_resolved": device,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "parameters": parameter_count(net),
        "train_images": [p.name for p in train_files],
        "val_images": [p.name for p in val_files],
        "excluded_images": excluded,
        "training_squares": len(squares),
        "vgg16_weights": str(vgg_path) if vgg_path else None,
        "loss_terms": ["hole_l1", "tv"] + (["perceptual", "style"] if vgg else []),
    }
    write_json(out / "config.json", run_info)

    def checkpoint(path: Path, elapsed: float) -> None:
        with atomic_path(path) as tmp:
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "elapsed_s": elapsed, "best_val_l1": best, "config": cfg.as_json(),
                        "rng": _rng_states(np_rng)}, tmp)

    def model_meta(elapsed: float, val_mean: dict | None) -> dict:
        return {"step": step, "elapsed_s": round(elapsed, 1), "device": device,
                "coarse": cfg.coarse, "no_shift": cfg.no_shift, "seed": cfg.seed,
                "train_images": run_info["train_images"], "val_images": run_info["val_images"],
                "validation_mean": val_mean, "loss_terms": run_info["loss_terms"]}

    def validate(elapsed: float) -> None:
        nonlocal best
        if not val_items:
            return
        rows = evaluate(net, val_items, device, cfg.no_shift)
        mean = _mean_row(rows)
        _append_csv(out / "validation.csv", VAL_COLUMNS,
                    [{"step": step, "elapsed_s": round(elapsed, 1), **r} for r in [*rows, mean]])
        log.info("step %d validation: L1 %.4f (base %.4f), PSNR %.3f (base %.3f)", step,
                 mean["model_l1"], mean["base_l1"], mean["model_psnr"], mean["base_psnr"])
        if mean["model_l1"] < best:
            best = mean["model_l1"]
            checkpoint(ckpt_dir / "best.pt", elapsed)
            save_model(net, out / "best_model.pth", model_meta(elapsed, mean))

    stop = _StopFlag()
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    t0 = time.monotonic()
    elapsed = elapsed_before
    try:
        if step == 0:
            validate(0.0)  # step 0 = the coarse base exactly (zero-initialised last layer)
            checkpoint(last_path, 0.0)
        pending: list[dict[str, float]] = []
        plotted = -1
        bar = tqdm(total=cfg.steps, initial=step, desc="train refine", unit="step", disable=not progress)
        net.train()
        while step < cfg.steps and not stop.stop:
            batch = sampler.batch(cfg.batch)
            stack, gt, hole = batch.stack.to(device), batch.gt.to(device), batch.hole.to(device)
            outp = net.forward_stack(stack)
            loss, terms = criterion(outp, gt, hole)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            pending.append(terms)
            elapsed = elapsed_before + time.monotonic() - t0
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, "elapsed_s": round(elapsed, 1)}
                for k in LOSS_COLUMNS:
                    vals = [p[k] for p in pending if k in p]
                    row[k] = float(np.mean(vals)) if vals else ""
                _append_csv(out / "losses.csv", ("step", "elapsed_s", *LOSS_COLUMNS), [row])
                bar.set_postfix(loss=f"{row['total']:.4f}")
                pending = []
            if cfg.max_minutes and elapsed - elapsed_before > cfg.max_minutes * 60:
                log.info("--max-minutes %.1f reached at step %d", cfg.max_minutes, step)
                stop.stop = True
            if step % cfg.val_every == 0 or step == cfg.steps or stop.stop:
                validate(elapsed)
                checkpoint(last_path, elapsed)
                plot_log(out)
                plotted = step
        bar.close()
        elapsed = elapsed_before + time.monotonic() - t0
        checkpoint(last_path, elapsed)
        if plotted != step:
            plot_log(out)
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    return {"step": step, "elapsed_s": elapsed, "best_val_l1": best, "out": str(out),
            "best_model": str(out / "best_model.pth") if (out / "best_model.pth").exists() else None,
            "stopped_early": stop.stop and step < cfg.steps}
