"""`synthnet`: the embedded dataset's stand-in for an ImageNet-pretrained CNN.

Real captioning pipelines freeze a CNN pretrained on a large labelled corpus (VGG16, ResNet-101 on
ImageNet) and caption from its features. No such weights can be downloaded here, and hand-made
features (`grid`) carry too little shape information for captions to be grounded (an MLP probe on
grid's global vector names the largest object's shape 27% of the time). So CapBench pretrains a
small CNN the same way, on its own labelled corpus: images drawn by the synthetic generator from a
seed no dataset uses (PRETRAIN_SEED), never the captioning images, with dense labels from the
generator's exact object masks: for every 16x16-pixel cell of the 8x8 grid, the shape, colour and
size of the object covering most of it (or none). Its last feature map is the `spatial` feature
[64, 96]; mean and max pooling give the `global` vector [192].

The pretrained weights ship with the package (synthnet.safetensors, 1.3 MB, its sha256 below): every
machine extracts its features with the same weights, and a first prepare does not pretrain.
Pretraining is float32 training whose last bits depend on the CPU's kernels, so weights pretrained
on another machine differ; `python -m backends.torch.synthnet OUT.safetensors` reruns the pretraining
that made the shipped file (about 6 minutes on 2 cores; identical on the same kind of CPU).

    3x128x128 -> conv 3x3/2 (24) -> 64x64
              -> conv 3x3/2 (48) -> conv 3x3 (48) -> 32x32
              -> conv 3x3/2 (96) -> conv 3x3 (96) -> 16x16
              -> conv 3x3/2 (96) -> conv 3x3 (96) -> 8x8x96 features  -> 1x1 heads: shape, colour, size
    (every conv: BatchNorm, ReLU)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared_data import files, synthetic, synthetic_render, synthetic_scene
from shared_data.dataset_format import sha256_file

SHIPPED_WEIGHTS = Path(__file__).with_name("synthnet.safetensors")
SHIPPED_SHA256 = "e6dda9727372047244f3088633ed329d0853cf02c720892103305dbc4391a126"
PRETRAIN_SEED = 90_210  # datasets use seeds 0, 1, ...; this corpus shares no image with them
SETTINGS = dict(version=1, images=3000, epochs=15, batch=64, lr=2e-3, width=(24, 48, 96, 96), grid=8)
SHAPES, COLOURS, SIZES = synthetic_scene.SHAPES, tuple(synthetic_scene.COLOURS), tuple(synthetic_scene.SIZE_RADIUS)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SynthNet(nn.Module):
    def __init__(self, width: tuple[int, ...] = SETTINGS["width"]):
        super().__init__()
        a, b, c, d = width
        self.trunk = nn.Sequential(_conv(3, a, 2), _conv(a, b, 2), _conv(b, b), _conv(b, c, 2), _conv(c, c),
                                   _conv(c, d, 2), _conv(d, d))
        # heads exist only for pretraining; "none" is the last class of each
        self.heads = nn.Conv2d(d, len(SHAPES) + 1 + len(COLOURS) + 1 + len(SIZES) + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


def cell_labels(scene: synthetic_scene.Scene, grid: int = 8) -> np.ndarray:
    """[3, grid, grid] int64 targets (shape, colour, size) from the generator's object masks; a cell
    belongs to the object covering most of it if that covers at least a quarter, else to "none"."""
    labels = synthetic_render.label_map(scene)
    cell = labels.shape[0] // grid
    blocks = labels.reshape(grid, cell, grid, cell).transpose(0, 2, 1, 3).reshape(grid, grid, -1)
    share = np.stack([(blocks == k).mean(-1) for k in range(1, len(scene.objects) + 1)])  # [K, g, g]
    best, covered = share.argmax(0), share.max(0) >= 0.25
    table = np.array([[SHAPES.index(o.shape), COLOURS.index(o.colour), SIZES.index(o.size)]
                      for o in scene.objects] + [[len(SHAPES), len(COLOURS), len(SIZES)]])  # last row: none
    return table[np.where(covered, best, len(scene.objects))].transpose(2, 0, 1).astype(np.int64)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W], per-channel standardised with fixed constants."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.25


def pretrain(log=print) -> SynthNet:
    """Train on PRETRAIN_SEED images with per-cell labels; returns the model (train mode off)."""
    torch.manual_seed(0)
    n = SETTINGS["images"]
    t0 = time.perf_counter()
    images, targets = [], []
    for i in range(n):
        scene, _ = synthetic.generate_scene(PRETRAIN_SEED, i)
        images.append(np.asarray(synthetic_render.render_image(scene, PRETRAIN_SEED, i)))
        targets.append(cell_labels(scene, SETTINGS["grid"]))
    x_all = torch.from_numpy(np.stack(images))
    y_all = torch.from_numpy(np.stack(targets))
    log(f"synthnet: pretraining on {n} generated images (seed {PRETRAIN_SEED}, drawn in "
        f"{time.perf_counter() - t0:.0f}s), {SETTINGS['epochs']} epochs")
    model = SynthNet()
    opt = torch.optim.Adam(model.parameters(), lr=SETTINGS["lr"])
    steps = SETTINGS["epochs"] * -(-n // SETTINGS["batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=SETTINGS["lr"], total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    splits = (len(SHAPES) + 1, len(COLOURS) + 1, len(SIZES) + 1)
    for epoch in range(SETTINGS["epochs"]):
        model.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(SETTINGS["batch"]):
            x = _normalise(x_all[idx])
            if torch.rand((), generator=gen) < 0.5:  # horizontal flips: labels flip with the image
                x, y = x.flip(-1), y_all[idx].flip(-1)
            else:
                y = y_all[idx]
            logits = model.heads(model(x)).split(splits, dim=1)
            loss = sum(F.cross_entropy(lg, y[:, k]) for k, lg in enumerate(logits))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log(f"synthnet: epoch {epoch + 1}/{SETTINGS['epochs']}, loss {total / n:.3f} "
            f"({time.perf_counter() - t0:.0f}s)")
    return model.eval()


class SynthNetExtractor:
    """Callable: uint8 [B, 128, 128, 3] -> (global [B, 192] mean+max pooled, spatial [B, 64, 96])."""

    def __init__(self, model: SynthNet, weights_sha256: str):
        self.model = model.eval()
        self.weights_sha256 = weights_sha256  # recorded in the manifest: which weights made the features

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images)
        if images.shape[1:] != (synthetic_scene.IMAGE_SIZE, synthetic_scene.IMAGE_SIZE, 3):
            raise ValueError(f"synthnet expects {synthetic_scene.IMAGE_SIZE}px RGB images, got {images.shape}")
        with torch.inference_mode():
            fmap = self.model(_normalise(torch.from_numpy(images)))  # [B, C, 8, 8]
            spatial = fmap.flatten(2).transpose(1, 2)
            global_ = torch.cat([spatial.mean(1), spatial.amax(1)], dim=1)
        return global_.numpy().astype(np.float32), spatial.numpy().astype(np.float32)


def synthnet(weights: str) -> SynthNetExtractor:
    """weights: "imagenet"/"pretrained" (the shipped file, checked against its sha256), "none"
    (seeded random), or a .safetensors path."""
    from safetensors.torch import load_file

    from shared_data.errors import UserError

    if weights == "none":
        torch.manual_seed(0)
        return SynthNetExtractor(SynthNet(), "none")
    shipped = weights in ("imagenet", "pretrained")
    path = SHIPPED_WEIGHTS if shipped else Path(weights)
    if not path.is_file():
        raise UserError(f"synthnet weights file {path} does not exist"
                        + (" (it ships with CapBench: reinstall the package)" if shipped else ""))
    digest = sha256_file(path)
    if shipped and digest != SHIPPED_SHA256:
        raise UserError(f"{path} is not the shipped synthnet weights (sha256 {digest[:12]}, expected "
                        f"{SHIPPED_SHA256[:12]}): restore it with git checkout, or pass --weights PATH")
    model = SynthNet()
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:  # safetensors' own errors and a state dict that does not fit
        raise UserError(f"synthnet weights file {path} is not a synthnet safetensors file "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return SynthNetExtractor(model, digest)


def main(argv: list[str] | None = None) -> int:
    """Rerun the pretraining that made the shipped weights; print the new file's sha256."""
    import argparse

    from safetensors.torch import save_file

    p = argparse.ArgumentParser(prog="python -m backends.torch.synthnet", description=main.__doc__)
    p.add_argument("out", type=Path, help="where to write the weights (.safetensors)")
    out = p.parse_args(argv).out
    model = pretrain()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    files.write_atomic(out, lambda tmp: save_file(state, str(tmp)))
    same = "the shipped file's" if sha256_file(out) == SHIPPED_SHA256 else "not the shipped file's " \
        f"({SHIPPED_SHA256[:12]}): another CPU's float32 kernels, or changed settings"
    print(f"wrote {out}: sha256 {sha256_file(out)}, {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
