"""The optional C accelerator of the span hot path; everything else is in pyproject.toml.

``optional=True``: without a C compiler the build goes on and tomograph runs in pure Python,
with the same behaviour (see docs/performance.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tomograph._speedups", ["src/tomograph/_speedups.c"], optional=True),
    ]
)
