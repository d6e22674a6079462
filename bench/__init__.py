"""hrbench: benchmark and crowd-study toolkit for high-resolution image inpainting."""

__version__ = "0.1.0"
