"""Only the native walker lives here; everything else is declared in pyproject.toml.

``exporter/scan/_walker.c`` is optional: without a C compiler the install still succeeds and
``exporter.scan.walk`` falls back to its Python loop (same numbers, about three times slower);
``conda-env-exporter --version`` and ``conda_exporter_build_info{walker}`` say which one runs.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "exporter.scan._walker",
            sources=["exporter/scan/_walker.c"],
            depends=["exporter/scan/_owned.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
