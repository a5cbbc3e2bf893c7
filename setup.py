"""Builds the C kernels of the winograd backend (pyfusion/backends/_winograd.c); everything else is in pyproject.toml.

PYFUSION_MARCH (default ``native``) is passed as ``-march``: the kernels are vectorised for the CPU they are built
on. Set ``PYFUSION_MARCH=x86-64-v3`` (AVX2 + FMA) for a build that runs on other machines, or to an empty string
for the compiler's default. The scores are the same function either way, rounded differently (< 1e-5).
"""
import os

from setuptools import Extension, setup

march = os.environ.get("PYFUSION_MARCH", "native")
flags = ["-O3", "-fopenmp", "-std=gnu11"] + ([f"-march={march}"] if march else [])
setup(ext_modules=[Extension("pyfusion.backends._winograd", ["pyfusion/backends/_winograd.c"], extra_compile_args=flags,
                             extra_link_args=["-fopenmp"], libraries=["m"])])
