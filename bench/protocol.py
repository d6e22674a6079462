"""Constants of the benchmark protocol, kept import-light (the CLI reads them at start-up)."""

PROTOCOL_RESOLUTIONS = (1024, 1536, 1792, 2048)
DEFAULT_HOLE_FRACTION = 1 / 3
