"""One declaration of every method's options: ``pyfusion.fuse`` keywords, ``pyfusion fuse`` flags and the options
table of the docs (docs/options.md) all come from it.

Each method module declares ``OPTIONS``, a tuple of :class:`Option`; the option groups below are shared so that the
same thing has the same name, type, unit and help in every method: every method takes :data:`COMMON`
(``threads``, ``progress``), every net-based method :data:`NET` (``model``, ``backend``, ``gpu``,
``max_memory``), and the methods built on the paper's consistency steps :data:`CONSISTENCY`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pyfusion.backends import BACKENDS
from pyfusion.constants import GF_EPS, GF_RADIUS, REGION_RATIO, THRESHOLD

__all__ = ["Option", "COMMON", "NET", "CONSISTENCY", "check", "resolve", "replace", "gb_to_bytes", "table"]


@dataclass(frozen=True)
class Option:
    """One keyword option of a method.

    Attributes
    ----------
    name : str
        The keyword of :func:`pyfusion.fuse` (the command line's flag is ``--name`` with dashes).
    type : type or callable
        Converts a command-line string to the value (``int``, ``float``, ``str``, :func:`bool_flag`, ...).
    default : object
        The value when the option is not given (None: the method's own default, said in ``help``).
    help : str
        One line.
    choices : tuple, optional
        The values it takes, where they are a short list.
    cli : bool
        Whether ``pyfusion fuse`` has a flag for it (False for Python callables such as ``score_fn``).
    metavar : str
        The value's name in ``--help``.
    """

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple = ()
    cli: bool = True
    metavar: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def bool_flag(text: str) -> bool:
    """A command-line flag without a value is True (``--series``)."""
    return True


def on_off(text) -> bool:
    """``on``/``off`` (also yes/no, true/false, 1/0) -> bool: an option whose default is on."""
    t = str(text).strip().lower()
    if t in ("on", "yes", "true", "1"):
        return True
    if t in ("off", "no", "false", "0"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


def pair(text: str) -> tuple[str, str]:
    """``"LOW,HIGH"`` -> ``("LOW", "HIGH")``: the two nets of a two-net method."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"expected two models separated by a comma, got {text!r}")
    return parts[0], parts[1]


def gb_to_bytes(gb) -> int | None:
    """``max_memory`` (GB, 2**30 bytes) as bytes; None stays None."""
    if gb is None:
        return None
    if not float(gb) > 0:
        raise ValueError(f"max_memory must be > 0 GB, got {gb}")
    return int(float(gb) * 2**30)


#: Every method's options.
COMMON = (
    Option("threads", int, None, "threads (default $PYFUSION_THREADS, else every core); the output does not depend "
           "on it", metavar="N"),
    Option("progress", bool_flag, False, "show a progress bar on standard error"),
)
#: Every net-based method's options.
NET = (
    Option("model", str, None, "registered model name or weights file (.onnx / .caffemodel); default the method's "
           "shipped model", metavar="NAME|PATH"),
    Option("backend", str, None, "inference backend (default: the fastest available here)", choices=BACKENDS,
           metavar="NAME"),
    Option("gpu", int, None, "run the net on CUDA device N (torch, caffe or onnx with CUDA; default the CPU)",
           metavar="N"),
    Option("max_memory", float, None, "memory in GB: the score-map stage's (tiles the images; default a share of the "
           "free memory); for cnn on three or more files, the whole fusion's cap (default 3.5)", metavar="GB"),
)
#: The paper's consistency steps (Sec. 3.3.2-3.3.3 of Liu et al. 2017).
CONSISTENCY = (
    Option("region_ratio", float, REGION_RATIO, "small-region removal area as a fraction of H*W", metavar="R"),
    Option("gf_radius", int, GF_RADIUS, "guided filter radius in pixels", metavar="R"),
    Option("gf_eps", float, GF_EPS, "guided filter regularisation (images in [0, 1])", metavar="E"),
    Option("threshold", float, THRESHOLD, "focus map threshold: focus > T takes the first source", metavar="T"),
)


def replace(options: tuple, **changes) -> tuple:
    """``options`` with some options' fields changed: ``replace(CONSISTENCY, gf_radius={"default": 2})``."""
    from dataclasses import replace as _replace

    return tuple(_replace(o, **changes[o.name]) if o.name in changes else o for o in options)


def resolve(declared: tuple, given: dict):
    """The options of a method call: ``given`` with the declared defaults filled in, as attributes
    (``o.threads``). The keys are checked by :func:`check` in :func:`pyfusion.fuse`; here an unknown key is a
    TypeError (a programming error of a direct caller of a method module)."""
    from types import SimpleNamespace

    names = {o.name for o in declared}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TypeError(f"unexpected option(s) {', '.join(unknown)}")
    return SimpleNamespace(**{o.name: given.get(o.name, o.default) for o in declared})


def check(method: str, declared: tuple, given: dict) -> dict:
    """``given`` if every key is a declared option of ``method``; else a one-line ValueError naming the options it
    takes."""
    names = [o.name for o in declared]
    unknown = [k for k in given if k not in names]
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise ValueError(f"method {method!r} takes no option{s} {', '.join(map(repr, unknown))}; its options: "
                         f"{', '.join(names)}")
    return dict(given)


def table(methods: dict) -> str:
    """The markdown options table of ``methods`` (name -> declared options): docs/options.md."""
    rows = ["| method | option | command line | default | what |", "|---|---|---|---|---|"]
    for method, declared in methods.items():
        for o in declared:
            flag = f"`{o.flag}`" if o.cli else "(Python only)"
            default = "" if o.default is None else f"`{o.default!r}`"
            what = o.help + (f" ({', '.join(map(str, o.choices))})" if o.choices else "")
            rows.append(f"| `{method}` | `{o.name}` | {flag} | {default} | {what} |")
    return "\n".join(rows)
