"""The display model: the viewing condition the perceptual metrics assume (a run setting).

cvvdp needs the display's geometry (pixels per degree of visual angle, from size, resolution
and viewing distance) and photometry (peak luminance, contrast, ambient light); FLIP needs
the same pixels per degree. Both metrics of a run use this one model, recorded in run.json.

A display is given as

- a name from ColorVideoVDP's ``display_models.json``, e.g. ``standard_fhd`` (the default:
  24-inch 1920x1080 monitor, 200 cd/m², 250 lux office light, seen from 0.6 m: ~38 px per
  degree), ``standard_4k`` (30-inch 3840x2160, 0.75 m: ~64 px/deg); only sRGB (SDR) models,
  since benchmark images are 8-bit sRGB; or
- a geometry ``WxH,DIAGin,DISTm[,PEAKcd][,AMBlux][,CONTRAST:1]``, e.g.
  ``2560x1440,27in,0.7m,250cd`` (peak 200 cd/m², 250 lux and 1000:1 when omitted).

How it relates to the crowd study: the study shows images at 1:1, one image pixel per
screen pixel (zoom 1), so the angle a pixel subtends is the participant's monitor's. The
display model should therefore be the typical participant's monitor and distance; votes
record the viewport and device-pixel ratio (``vw``, ``vh``, ``dpr``), from which a study's
actual screens can be checked against the model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import UserError

DEFAULT_DISPLAY = "standard_fhd"
_CUSTOM_DEFAULTS = {"peak_cd_m2": 200.0, "ambient_lux": 250.0, "contrast": 1000.0}
_FORMAT_HINT = "a cvvdp display name (e.g. standard_fhd) or WxH,DIAGin,DISTm[,PEAKcd][,AMBlux]"


@dataclass(frozen=True)
class DisplayModel:
    spec: str  # as the user gave it
    name: str  # cvvdp's name, or "custom"
    description: str
    resolution: tuple[int, int]  # width, height of the display in pixels
    diagonal_in: float | None
    distance_m: float
    peak_cd_m2: float
    contrast: float
    ambient_lux: float
    ppd: float  # pixels per degree of visual angle at the centre of the screen

    @property
    def summary(self) -> str:
        """E.g. "24-inch 1920×1080 display seen from 0.6 m, 200 nit peak, 250 lux (38 px/deg)"."""
        size = f"{self.diagonal_in:g}-inch " if self.diagonal_in else ""
        w, h = self.resolution
        return (
            f"{size}{w}×{h} display seen from {self.distance_m:g} m, {self.peak_cd_m2:g} nit peak, "
            f"{self.ambient_lux:g} lux ({self.ppd:.0f} px/deg)"
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        d["ppd"] = round(self.ppd, 4)
        d["summary"] = self.summary
        return d

    def cvvdp_models(self) -> tuple[Any, Any]:
        """(photometry, geometry) objects for ``pycvvdp.cvvdp``."""
        pycvvdp = _pycvvdp()

        if self.name != "custom":
            return (
                pycvvdp.vvdp_display_photometry.load(self.name, []),
                pycvvdp.vvdp_display_geometry.load(self.name),
            )
        return (
            pycvvdp.vvdp_display_photo_eotf(
                self.peak_cd_m2, contrast=self.contrast, source_colorspace="sRGB", E_ambient=self.ambient_lux
            ),
            pycvvdp.vvdp_display_geometry(
                self.resolution, distance_m=self.distance_m, diagonal_size_inches=self.diagonal_in
            ),
        )


def _pycvvdp(what: str = "display model"):
    """The pycvvdp module (the one place it is imported), or one clear line."""
    # pycvvdp imports torch.utils.cpp_extension, which warns "No CUDA runtime is found" on every
    # machine without CUDA: noise in front of every run's output and every worker's.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import pycvvdp
    except ImportError:
        raise UserError(f"{what}: the cvvdp package is not installed; pip install cvvdp") from None
    return pycvvdp


def _named(name: str) -> DisplayModel:
    pycvvdp = _pycvvdp()
    from pycvvdp import utils

    models = utils.json2dict(utils.config_files.find("display_models.json", []))
    if name not in models:
        sdr = sorted(k for k, m in models.items() if m.get("colorspace", "sRGB") == "sRGB")
        raise UserError(f"--display {name!r}: unknown; use {_FORMAT_HINT}; names: {', '.join(sdr)}")
    model = models[name]
    if model.get("colorspace", "sRGB") != "sRGB":
        raise UserError(
            f"--display {name!r}: an HDR model ({model['colorspace']}); benchmark images are "
            "8-bit sRGB, choose an sRGB display such as standard_fhd"
        )
    photo = pycvvdp.vvdp_display_photometry.load(name, [])
    geo = pycvvdp.vvdp_display_geometry.load(name)
    diag = model.get("diagonal_size_inches")
    return DisplayModel(
        spec=name,
        name=name,
        description=model["name"],
        resolution=tuple(model["resolution"]),
        diagonal_in=float(diag) if diag is not None else None,
        distance_m=float(geo.distance_m),
        peak_cd_m2=float(photo.Y_peak),
        contrast=float(photo.contrast),
        ambient_lux=float(photo.E_ambient),
        ppd=float(geo.get_ppd()),
    )


_TOKENS = {
    "resolution": re.compile(r"^(\d+)x(\d+)$"),
    "diagonal_in": re.compile(r"^(\d+(?:\.\d+)?)in$"),
    "distance_m": re.compile(r"^(\d+(?:\.\d+)?)m$"),
    "peak_cd_m2": re.compile(r"^(\d+(?:\.\d+)?)cd$"),
    "ambient_lux": re.compile(r"^(\d+(?:\.\d+)?)lux$"),
    "contrast": re.compile(r"^(\d+(?:\.\d+)?):1$"),
}


def _custom(text: str) -> DisplayModel:
    values: dict[str, Any] = {}
    for token in (t.strip().lower() for t in text.split(",")):
        key = next((k for k, rx in _TOKENS.items() if rx.match(token)), None)
        if key is None or key in values:
            why = "repeated" if key else "not understood"
            raise UserError(f"--display {text!r}: {token!r} {why}; use {_FORMAT_HINT}")
        groups = _TOKENS[key].match(token).groups()
        values[key] = (int(groups[0]), int(groups[1])) if key == "resolution" else float(groups[0])
    missing = [k for k in ("resolution", "diagonal_in", "distance_m") if k not in values]
    if missing:
        raise UserError(f"--display {text!r}: missing {', '.join(missing)}; use {_FORMAT_HINT}")
    if min(values["resolution"]) <= 0 or values["diagonal_in"] <= 0 or values["distance_m"] <= 0:
        raise UserError(f"--display {text!r}: sizes and distance must be positive")
    values = {**_CUSTOM_DEFAULTS, **values}
    geo = _pycvvdp().vvdp_display_geometry(
        values["resolution"], distance_m=values["distance_m"], diagonal_size_inches=values["diagonal_in"]
    )
    w, h = values["resolution"]
    return DisplayModel(
        spec=text,
        name="custom",
        description=f"{values['diagonal_in']:g}-inch {w}x{h} display, {values['peak_cd_m2']:g} cd/m^2, "
        f"{values['ambient_lux']:g} lux, seen from {values['distance_m']:g} m",
        ppd=float(geo.get_ppd()),
        **values,
    )


def parse_display(text: str | None) -> DisplayModel:
    """The display model named or described by ``text`` (``None`` = the default)."""
    text = (text or DEFAULT_DISPLAY).strip()
    return _custom(text) if "," in text else _named(text)
