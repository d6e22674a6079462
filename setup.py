"""Build hook: ship the embedded sample set inside the wheel.

The photos live in the repository folder ``datasets/sample`` (the single source of truth; it
is not a Python package, since a top-level ``datasets`` package would shadow the popular
library of that name). Building copies them to ``bench/sample_data/`` in the build tree, so an
installed hrbench finds them with ``importlib.resources`` (``bench.datasets.sample_dir``).
An editable install reads ``datasets/sample`` in place instead.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "datasets" / "sample"
TARGET = ("bench", "sample_data")  # keep in sync with bench.datasets.SAMPLE_RESOURCE


class BuildPyWithSamples(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            shutil.copytree(SOURCE, Path(self.build_lib, *TARGET), dirs_exist_ok=True)

    def get_outputs(self, include_bytecode=True):
        extra = [] if self.editable_mode else [
            str(Path(self.build_lib, *TARGET, p.name)) for p in SOURCE.iterdir() if p.is_file()
        ]
        return super().get_outputs(include_bytecode) + extra


setup(cmdclass={"build_py": BuildPyWithSamples})
