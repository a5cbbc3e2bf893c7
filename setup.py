"""Builds the C kernels of the winograd backend (pyfusion/backends/_winograd.c); everything else is in pyproject.toml.

Default (portable): on x86-64 the kernels are compiled twice, for x86-64-v3 (AVX2 + FMA) and for plain x86-64
(SSE2), and the faster variant this CPU runs is chosen at run time (``__builtin_cpu_supports``), so one build runs
on any x86-64 machine (e.g. Dask workers on other CPUs) and never stops with SIGILL. On other architectures the
compiler's default target is used. ``pyfusion.backends.winograd.isa()`` names the variant in use.

``PYFUSION_MARCH=native`` (opt-in; or any other ``-march`` value, e.g. ``x86-64-v3``, ``znver3``) compiles the
kernels once with ``-march=$PYFUSION_MARCH`` instead: tuned for one CPU family, *not portable* (on a CPU without
the extensions it used, ``winograd.available()`` is False and says why). The two builds compute the same function,
rounded alike on AVX2 + FMA machines (docs/winograd_build.md has the measured speeds and score differences)::

    pip install --no-deps -e .                           # portable (runtime dispatch)
    PYFUSION_MARCH=native pip install --no-deps -e .     # this CPU only
"""
import os
import re

from setuptools import Extension, setup

march = os.environ.get("PYFUSION_MARCH", "").strip()
if march and not re.fullmatch(r"[A-Za-z0-9_.+-]+", march):
    raise SystemExit(f"PYFUSION_MARCH={march!r} is not a -march value")
flags = ["-O3", "-fopenmp", "-std=gnu11", "-Wno-psabi"]
if march:
    flags += [f"-march={march}", "-DPYFUSION_SINGLE_ISA", f'-DPYFUSION_MARCH_NAME="{march}"']
setup(ext_modules=[Extension("pyfusion.backends._winograd", ["pyfusion/backends/_winograd.c"], extra_compile_args=flags,
                             extra_link_args=["-fopenmp"], libraries=["m"])])
