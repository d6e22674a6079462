"""LPIPS v0.1 from locally cached weights, and ``fetch_backbone`` to put them there.

The lpips package would ask torchvision to download the ImageNet backbone on first use; this
project never lets a metric touch the network at run time. ``fetch_backbone`` (the
``hrbench weights fetch lpips`` command) downloads the file once, through torch's own
mechanism (``torch.hub.download_url_to_file`` into ``torch.hub.get_dir()/checkpoints``, with
the hash check torch applies to its own downloads), where torchvision and this module look.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UserError
from bench.io import display_path, sha256_file

from .pixel import check_pair

_LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}


def backbone_file(net: str) -> tuple[Path, str]:
    """Where torchvision caches the ImageNet backbone of ``net``, and its download URL."""
    import torch.hub
    import torchvision.models as tvm

    url = getattr(tvm, _LPIPS_BACKBONES[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def _lpips_linear_file(net: str) -> Path:
    """The lpips package's own calibrated linear-layer weights (shipped inside the package)."""
    import lpips

    return Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"


def _check_net(net: str) -> None:
    if net not in _LPIPS_BACKBONES:
        raise UserError(f"LPIPS: unknown network {net!r}; use one of {', '.join(_LPIPS_BACKBONES)}")


def lpips_available(net: str = "alex") -> str | None:
    """``None`` when LPIPS can be computed here, else one line "LPIPS unavailable: …".

    Only looks at files; never downloads.
    """
    if net not in _LPIPS_BACKBONES:
        return f"LPIPS unavailable: unknown network {net!r}; use one of {sorted(_LPIPS_BACKBONES)}"
    try:
        path, url = backbone_file(net)
        linear = _lpips_linear_file(net)
    except ImportError as err:
        return f"LPIPS unavailable: {err.name or err} is not installed; pip install lpips torchvision"
    if not linear.is_file():
        return f"LPIPS unavailable: the lpips package lacks {linear}; reinstall it (pip install lpips)"
    if not path.is_file():
        return (
            f"LPIPS unavailable: torchvision backbone weights {path.name} not found in "
            f"{display_path(path.parent)}; run `hrbench weights fetch lpips`, or download {url} "
            "and put it there (or set TORCH_HOME)"
        )
    return None


def fetch_backbone(net: str = "alex", progress: bool = False) -> Path:
    """Download ``net``'s torchvision backbone into torch's cache; return its path.

    Already present: nothing is downloaded. Any failure (no network, proxy, bad hash) raises
    ``UserError`` with one line naming the URL and where the file must go.
    """
    _check_net(net)
    try:
        import torch.hub

        path, url = backbone_file(net)
    except ImportError as err:
        raise UserError(f"LPIPS: {err.name or err} is not installed; pip install lpips torchvision") from None
    if path.is_file():
        return path
    match = torch.hub.HASH_REGEX.search(path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Writes a temporary file and renames it only after the hash prefix checked out.
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress)
    except Exception as exc:  # urllib, ssl, socket and hash errors all mean the same to a user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"could not download the LPIPS backbone {url} ({reason}); download it elsewhere "
            f"and put it in {display_path(path.parent)}"
        ) from None
    return path


class LPIPSMetric:
    """LPIPS v0.1 (lower is better) from cached weights only; raises ``UserError`` if absent.

    The network is built with a random backbone and the cached torchvision checkpoint is
    loaded into it, so no network access can happen. ``__call__(out, gt)`` takes uint8 RGB
    images (any size; VGG at 2048 px needs several GB of memory).
    """

    def __init__(self, net: str = "alex", device: str = "cpu") -> None:
        reason = lpips_available(net)
        if reason is not None:
            raise UserError(reason)
        import lpips
        import torch

        self.net = net
        self.device = torch.device(device)
        self.backbone_path, _ = backbone_file(net)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's notice about lpips' `pretrained=`
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        state = torch.load(self.backbone_path, map_location="cpu", weights_only=True)
        # lpips splits torchvision's `features` into slices that keep the layer indices:
        # slice2.3.weight is features.3.weight.
        trunk = {key: state[f"features.{key.split('.', 1)[1]}"] for key in model.net.state_dict()}
        model.net.load_state_dict(trunk)
        self.model = model.eval().to(self.device)

    def metadata(self) -> dict[str, Any]:
        """Record of what was used (for run.json)."""
        return {
            "net": self.net,
            "version": "0.1",
            "backbone_file": self.backbone_path.name,
            "backbone_sha256": sha256_file(self.backbone_path),
        }

    def _tensor(self, img: np.ndarray) -> Any:
        import torch

        t = torch.from_numpy(img).permute(2, 0, 1)[None]
        return (t.to(self.device, torch.float32) / 127.5 - 1.0).contiguous()

    def __call__(self, out: np.ndarray, gt: np.ndarray) -> float:
        import torch

        out, gt = check_pair(out, gt)
        with torch.inference_mode():
            value = self.model(self._tensor(out), self._tensor(gt))
        return float(value.item())
