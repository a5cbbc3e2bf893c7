"""Focus stacks with occlusions and ground truth, and a halo measure: where a near object's blur spreads over the
background.

Scene (:func:`make_occlusion_stack`): P = 2-4 fronto-parallel planes, plane 0 the nearest, plane P - 1 the
background (a whole photo). Each nearer plane is a shape cut from another photo: the photo, fitted to the frame,
with a hard 0/1 alpha, a random smooth blob (:func:`fusionlab.synthetic.random_field` above one of its quantiles)
covering 15-35 % of the image. Plane p lies at depth ``z_p = p / (P - 1)``; the N = max(3, P) frames are focused
at ``f_k = k / (N - 1)`` (so with P = N each frame is focused on one plane; with P = 2 the middle frame is focused
between the two), and plane p is defocused in frame k by a uniform disk (:func:`fusionlab.synthetic.disk_kernel`,
the thin-lens geometric point-spread function) of radius ``R |z_p - f_k|``, R the stack's largest radius.

Image formation, the layered defocus model ([1]_, Sec. 3; the compositing is Porter and Duff's *over* [2]_):
render back to front, each plane's colour premultiplied by its alpha and the alpha itself blurred by that
plane's disk ``D_p``, composited over the farther planes::

    I = D_{P-1}(C_{P-1});  for p = P-2 .. 0:  I = D_p(a_p C_p) + (1 - D_p(a_p)) I

(:func:`composite`), so in a frame focused behind a near object its blurred alpha covers the background beside
its edge (the near object's blur spreads over the sharp background: what a fusion that takes that frame near the
edge shows as a halo), and in a frame focused on the near object the background, blurred, is cut sharply by it.
Ground truth: every plane sharp, composited with the hard alphas (each pixel the nearest plane's colour). The
frame in focus at a pixel of the truth (:attr:`OcclusionStack.labels`) is the frame focused nearest to the
depth of the plane seen there. Frames are rounded to 8 bits; a hand-held copy moves them as the stack
benchmark's does (:func:`fusionlab.synthetic.shake`). A ``scale`` K (:func:`make_occlusion_stack`) makes the same
scene at K times the pixels per side as the stack benchmark's does (:mod:`fusionlab.synthetic`): the photos enlarged,
the shapes' random fields drawn at the photo's size, interpolated and cut at the same level, R and the shake's
shift times K.

Halo measure (:func:`halo_scores`): the *band* is every pixel within ``w`` pixels of a pixel of another visible
plane (:func:`band_mask`; a straight edge gives a band ``2 w`` pixels wide, ``w`` each side), ``w = ceil(R) + 1``
from R, the largest blur radius of the stack (the disk's reach with its anti-aliased rim); PSNR and SSIM in the
band and in the rest of the image, and the whole image's PSNR and SSIM (:func:`fusionlab.synthetic.scores`).
The *halo side* of the band (:func:`halo_side_mask`) is its part on the farther plane of an edge (within ``w`` of
a nearer plane's pixel), where the near object's blur falls.

References
----------
.. [1] S. W. Hasinoff, K. N. Kutulakos, "A layer-based restoration framework for variable-aperture photography",
   Proc. IEEE ICCV 2007, doi:10.1109/ICCV.2007.4408898.
.. [2] T. Porter, T. Duff, "Compositing digital images", Proc. SIGGRAPH 1984, Computer Graphics 18(3) 253-259.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from fusionlab import ROOT, stackbench, synthetic
from pyfusion.io import read_image, write_image

__all__ = ["OCC_PLANES", "OCC_RADII", "OCC_COVER", "OCC_FUSERS", "FOCUS_STACK", "OcclusionStack", "fit_photo",
           "occluder_alpha", "composite", "make_occlusion_stack", "occlusion_stacks", "band_mask", "halo_side_mask",
           "halo_scores", "focus_stack_fuse", "fuse", "fuse_with_labels", "edge_labels", "best_frame_labels",
           "oracle_selection", "select", "enfuse_labels", "enfuse_blend", "DIAGNOSES", "diagnose", "label_agreement",
           "HALO_DECISIONS", "HALO_BLENDS", "HALO_CANDIDATES", "BASE_CANDIDATE", "candidates_fused",
           "choose_candidate", "available", "machine"]

#: Planes per stack and the stack's largest disk radius (px), cycled over the stacks (12 combinations).
OCC_PLANES = (2, 3, 4)
OCC_RADII = (4.0, 6.0, 8.0, 12.0)
#: The share of the image each occluding shape covers (uniform in this range).
OCC_COVER = (0.15, 0.35)
#: The fusers compared: :data:`fusionlab.stackbench.FUSERS` labels and ``focus-stack`` (:func:`focus_stack_fuse`).
OCC_FUSERS = ("one-pass", "one-pass exact", "one-pass guided", "series", "wavelet-cnn", "dwt", "enfuse",
              "focus-stack")
#: Where ``focus-stack`` is built (docs/stacks.md: from ``../shared/peers/focus-stack``).
FOCUS_STACK = ROOT / "build/peers/focus-stack/build/focus-stack"


@dataclass(frozen=True)
class OcclusionStack:
    """An occlusion focus stack (:func:`make_occlusion_stack`)."""

    name: str
    sharp: np.ndarray      # uint8 (H, W, 3): the ground truth
    frames: tuple          # uint8, frame k focused at depth k / (N - 1), registered
    planes: np.ndarray     # int32 (H, W): the plane seen at each pixel of the truth (0 = nearest)
    labels: np.ndarray     # int32 (H, W): the frame in focus at each pixel of the truth
    radii: np.ndarray      # float64 (P, N): the disk radius of plane p in frame k
    radius: float          # the largest radius R
    moved: tuple           # the frames moved by shake (hand-held)
    transforms: tuple      # 2x3 reference pixel -> moved-frame pixel, per frame

    @property
    def width(self) -> int:
        """The band's half-width ``w = ceil(R) + 1`` (:func:`band_mask`): the reach of the largest disk with its
        anti-aliased rim (:func:`fusionlab.synthetic.disk_kernel` weighs pixels whose centres lie up to
        ``R + sqrt(2) / 2`` away)."""
        return int(math.ceil(self.radius)) + 1


def fit_photo(img: np.ndarray, shape) -> np.ndarray:
    """``img`` turned a quarter where its orientation differs from ``shape`` ``(H, W)``, then resized to it (area
    interpolation where it differs)."""
    h, w = shape
    if (img.shape[0] > img.shape[1]) != (h > w) and img.shape[0] != img.shape[1]:
        img = np.rot90(img)
    if img.shape[:2] != (h, w):
        img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def occluder_alpha(shape, rng: np.random.Generator, *, cover=OCC_COVER, scale: int = 1) -> np.ndarray:
    """A hard 0/1 float64 alpha: :func:`fusionlab.synthetic.random_field` above its ``1 - c`` quantile, ``c``
    uniform in ``cover`` (the share of the image it covers). ``scale``: at ``scale`` times ``shape`` per side, the
    field drawn at ``shape`` and interpolated (:func:`fusionlab.synthetic.upsample`) before the cut."""
    field = synthetic.random_field(shape, rng)
    level = np.quantile(field, 1.0 - rng.uniform(*cover))
    return (synthetic.upsample(field, scale) > level).astype(np.float64)


def composite(colours, alphas, radii) -> np.ndarray:
    """The layered defocus model (module docstring): planes nearest first, each colour (float64 ``(H, W[, C])``)
    premultiplied by its alpha (``(H, W)`` in [0, 1]) and both blurred by the disk of its radius
    (:func:`fusionlab.synthetic.defocus`), composited back to front with *over*. The farthest alpha should be 1
    everywhere (the result is then a whole image)."""
    out = np.zeros(np.shape(colours[0]), np.float64)
    for c, a, r in reversed(list(zip(colours, alphas, radii))):
        a = np.asarray(a, np.float64)
        a3 = a[..., None] if np.ndim(c) == 3 else a
        cover = synthetic.defocus(a, r)
        out = synthetic.defocus(a3 * c, r) + (1.0 - (cover[..., None] if np.ndim(c) == 3 else cover)) * out
    return out


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_occlusion_stack(photos, rng: np.random.Generator, *, radius: float, name: str = "", scale: int = 1,
                         **motion) -> OcclusionStack:
    """An occlusion stack (module docstring) from P >= 2 photos, nearest plane first, the last the background.

    Parameters
    ----------
    photos : sequence of numpy.ndarray
        uint8 RGB photos; the nearer planes' are fitted to the background's shape (:func:`fit_photo`).
    rng : numpy.random.Generator
        Draws the P - 1 shapes (:func:`occluder_alpha`, nearest first), then the motion (:func:`shake`).
    radius : float
        R, the largest disk radius (the nearest plane in the frame focused on the farthest and back).
    name : str, optional
    scale : int, optional
        The same scene at ``scale`` times the pixels per side (module docstring; the stack's ``radius`` is then
        ``scale * radius``); default 1.
    **motion
        Options of :func:`fusionlab.synthetic.shake`.

    Returns
    -------
    OcclusionStack
    """
    p_count = len(photos)
    if p_count < 2:
        raise ValueError(f"need two or more planes, got {p_count}")
    alphas = [occluder_alpha(photos[-1].shape[:2], rng, scale=scale) for _ in range(p_count - 1)]
    photos, radius = [synthetic.enlarge(p, scale) for p in photos], radius * scale
    shape = photos[-1].shape[:2]
    colours = [fit_photo(p, shape).astype(np.float64) for p in photos]
    alphas.append(np.ones(shape))
    n = max(3, p_count)
    z = np.arange(p_count) / (p_count - 1)
    f = np.arange(n) / (n - 1)
    radii = radius * np.abs(z[:, None] - f[None, :])
    planes = np.full(shape, p_count - 1, np.int32)
    for p in range(p_count - 2, -1, -1):               # nearer planes over farther ones
        planes[alphas[p] > 0.5] = p
    in_focus = np.argmin(np.abs(z[:, None] - f[None, :]), axis=1).astype(np.int32)
    sharp = _to_uint8(composite(colours, alphas, np.zeros(p_count)))
    frames = [_to_uint8(composite(colours, alphas, radii[:, k])) for k in range(n)]
    moved, transforms = synthetic.shake(frames, rng, **synthetic.scaled_motion(motion, scale))
    return OcclusionStack(name, sharp, tuple(frames), planes, in_focus[planes], radii, float(radius), tuple(moved),
                          tuple(transforms))


def occlusion_stacks(photos, *, count: int = 20, seed: int = 0, start: int = 0, crop: int | None = None,
                     scale: int = 1):
    """``count`` occlusion stacks from the photos (paths, sorted order, cycled): stack k has
    ``OCC_PLANES[k % 3]`` planes and the largest radius ``OCC_RADII[k % 4]``; its background is photo
    ``start + k`` and its nearer planes photos ``start + k + 1, ...`` (nearest first); drawn from
    ``numpy.random.default_rng([seed, k])``: deterministic for a seed, and stack k the same whatever ``count``.
    The benchmark is ``start=0, seed=0``; tuning stacks take other photos and another seed (e.g. ``start=50,
    seed=1``). ``crop``: the middle ``crop x crop`` of each photo (small stacks for tests); ``scale``: the same
    stacks at ``scale`` times the pixels per side (:func:`make_occlusion_stack`)."""
    photos = sorted(photos)
    for k in range(count):
        p_count = OCC_PLANES[k % len(OCC_PLANES)]
        paths = [Path(photos[(start + k + j) % len(photos)]) for j in range(p_count)]
        imgs = [synthetic.read_photo(p, crop=crop) for p in paths[1:] + paths[:1]]   # nearest first, background last
        yield make_occlusion_stack(imgs, np.random.default_rng([seed, k]), radius=OCC_RADII[k % len(OCC_RADII)],
                                   name=f"{k:02d}_{paths[0].stem}", scale=scale)


# ----------------------------------------------------------------------------------------------- the halo measure
def band_mask(planes: np.ndarray, width: float) -> np.ndarray:
    """Pixels within ``width`` pixels (Euclidean, centre to centre) of a pixel of another plane: a straight edge
    gives a band of ``2 width`` columns, ``width`` on each side."""
    dist = np.full(planes.shape, np.inf)
    for p in np.unique(planes):
        sel = planes == p
        if not sel.all():
            dist[sel] = ndimage.distance_transform_edt(sel)[sel]
    return dist <= width


def halo_side_mask(planes: np.ndarray, width: float) -> np.ndarray:
    """The halo side of the band: pixels within ``width`` of a pixel of a *nearer* plane (lower index)."""
    out = np.zeros(planes.shape, bool)
    for p in np.unique(planes):
        nearer = planes < p
        if nearer.any():
            out |= (planes == p) & (ndimage.distance_transform_edt(~nearer) <= width)
    return out


def halo_scores(img: np.ndarray, truth: np.ndarray, planes: np.ndarray, width: float) -> dict:
    """PSNR (dB) and SSIM of ``img`` against ``truth`` (8-bit) in the band (:func:`band_mask`), in the rest, on
    the whole image, and PSNR on the band's halo side (:func:`halo_side_mask`) and on its near side (the rest of
    the band): ``band_psnr``, ``band_ssim``, ``rest_psnr``, ``rest_ssim``, ``psnr``, ``ssim``, ``halo_psnr``,
    ``near_psnr``. The band and rest SSIM are the means of the SSIM map (:data:`fusionlab.synthetic.SSIM_OPTIONS`,
    averaged over the channels) over their pixels."""
    from skimage.metrics import structural_similarity

    x, y = img.astype(np.float64), truth.astype(np.float64)
    ssim, smap = structural_similarity(x, y, channel_axis=-1 if x.ndim == 3 else None, full=True,
                                       **synthetic.SSIM_OPTIONS)
    smap = smap.mean(axis=-1) if smap.ndim == 3 else smap
    band, halo = band_mask(planes, width), halo_side_mask(planes, width)
    near = band & ~halo
    return {"band_psnr": synthetic.psnr(x[band], y[band]), "band_ssim": float(smap[band].mean()),
            "rest_psnr": synthetic.psnr(x[~band], y[~band]), "rest_ssim": float(smap[~band].mean()),
            "psnr": synthetic.psnr(x, y), "ssim": float(ssim), "halo_psnr": synthetic.psnr(x[halo], y[halo]),
            "near_psnr": synthetic.psnr(x[near], y[near])}


# --------------------------------------------------------------------------------------------------- the fusers
def focus_stack_fuse(frames, *, exe=FOCUS_STACK, threads: int | None = 1, options=()) -> np.ndarray:
    """``frames`` (uint8) fused by focus-stack (its default options, so with its alignment; ``threads`` its worker
    threads, OpenCL off, ``--align-keep-size`` so that the result keeps the frames' size instead of losing the
    alignment's border; ``options``: more of its command-line options), through PNG files; RuntimeError when it is
    not built or fails, or returns another size."""
    if not Path(exe).is_file():
        raise RuntimeError(f"focus-stack is not built at {exe} (docs/stacks.md says how)")
    with tempfile.TemporaryDirectory(prefix="focus-stack.") as tmp:
        names = [str(write_image(Path(tmp) / f"f{k:02d}.png", f)) for k, f in enumerate(frames)]
        out = Path(tmp) / "fused.png"
        opts = [f"--threads={threads}"] if threads else []
        run = subprocess.run([str(exe), *opts, "--no-opencl", "--align-keep-size", *options, f"--output={out}",
                              *names],
                             capture_output=True, text=True)
        if run.returncode != 0 or not out.is_file():
            raise RuntimeError(f"focus-stack failed ({run.returncode}): {run.stderr.strip()[-300:]}")
        fused = read_image(out)
    if fused.shape != frames[0].shape:
        raise RuntimeError(f"focus-stack returned {fused.shape}, frames are {frames[0].shape}")
    return fused


def fuse(frames, fuser: str, *, threads: int | None = 1) -> dict:
    """Registered ``frames`` fused by one of :data:`OCC_FUSERS`: ``fused``, ``seconds`` (wall), ``depth`` (the
    one-pass depth map, else None); :func:`fusionlab.stackbench.fuse_frames` but for ``focus-stack``."""
    if fuser != "focus-stack":
        return stackbench.fuse_frames(list(frames), fuser, threads=threads)
    t0 = time.perf_counter()
    fused = focus_stack_fuse(frames, threads=threads)
    return {"fused": fused, "seconds": time.perf_counter() - t0, "depth": None}


# ------------------------------------------------------------------------------------------------- the diagnosis
def fuse_with_labels(frames, labels: np.ndarray, **options) -> np.ndarray:
    """The one-pass path (``pyfusion.fuse(frames, method="cnn")``, :mod:`pyfusion.methods.stack`) with its label
    map after small-region removal replaced by ``labels`` (int32 frame indices): the library's own guide, guided
    filter and blend (step 7, ``edge_fix=False``) on a given decision. A diagnosis: with the true labels it separates the error
    of the decision from that of the blend. ``options``: :func:`pyfusion.fuse`'s (e.g. ``gf_radius``)."""
    from unittest import mock

    import pyfusion
    from pyfusion.methods import stack

    given = np.asarray(labels, np.int32)
    with mock.patch.object(stack, "remove_small_label_regions", lambda *a, **k: given.copy()):
        return pyfusion.fuse(list(frames), method="cnn", **{"edge_fix": False, **options}).fused


def edge_labels(stack: OcclusionStack) -> np.ndarray:
    """The true labels with the halo taken from the occluder's frame: a pixel of plane q whose nearest pixel of a
    nearer plane p is within the reach of p's blur in q's frame (``radii[p, k_q] + 1`` px) takes the frame in focus
    on p, in which the edge is sharp and nothing nearer spreads over q (only q's own blur). A diagnosis: the
    decision "near a depth edge, the frame in which the edge is sharpest", with the true planes."""
    planes, labels = stack.planes, stack.labels
    in_focus = {int(q): int(labels[planes == q][0]) for q in np.unique(planes)}
    out = labels.copy()
    for q in np.unique(planes):
        nearer = planes < q
        if not nearer.any():
            continue
        dist, (iy, ix) = ndimage.distance_transform_edt(~nearer, return_indices=True)
        p = planes[iy, ix]
        reach = stack.radii[p, in_focus[int(q)]] + 1.0
        sel = (planes == q) & (dist <= reach)
        out[sel] = labels[iy, ix][sel]
    return out


def best_frame_labels(frames, truth: np.ndarray) -> np.ndarray:
    """int32 ``(H, W)``: at each pixel the frame closest to ``truth`` (sum of absolute differences over the
    channels; ties to the lower index)."""
    err = np.stack([np.abs(f.astype(np.int32) - truth).reshape(truth.shape[:2] + (-1,)).sum(-1) for f in frames])
    return np.argmin(err, axis=0).astype(np.int32)


def oracle_selection(frames, truth: np.ndarray) -> np.ndarray:
    """Each pixel from the frame closest to ``truth`` there (:func:`best_frame_labels`, :func:`select`): the best
    any per-pixel selection of frames can do (a bound, not a fuser)."""
    return select(frames, best_frame_labels(frames, truth))


def enfuse_labels(frames) -> np.ndarray:
    """enfuse's decision (:data:`fusionlab.stackbench.ENFUSE_OPTIONS`, one thread): the argmax of the hard masks
    it saves (``--save-masks``; where it shares a pixel between frames, the lower index), int32 ``(H, W)``."""
    with tempfile.TemporaryDirectory(prefix="enfuse-masks.") as tmp:
        stackbench._enfuse(frames, threads=1, extra=(f"--save-masks={tmp}/soft%n.tif:{tmp}/hard%n.tif",))
        masks = [cv2.imread(f"{tmp}/hard{k + 1}.tif", cv2.IMREAD_UNCHANGED) for k in range(len(frames))]
    return np.argmax(np.stack(masks), axis=0).astype(np.int32)


def enfuse_blend(frames, labels: np.ndarray) -> np.ndarray:
    """enfuse's multiresolution blend (Burt-Adelson spline) of the frames with the hard masks of ``labels``
    (``--load-masks``, one thread): its blend on a given decision."""
    with tempfile.TemporaryDirectory(prefix="enfuse-masks.") as tmp:
        for k in range(len(frames)):
            cv2.imwrite(f"{tmp}/m{k + 1}.tif", ((labels == k) * 255).astype(np.float32))
        return stackbench._enfuse(frames, threads=1, extra=(f"--load-masks={tmp}/m%n.tif:{tmp}/m%n.tif",))


def select(frames, labels: np.ndarray) -> np.ndarray:
    """Each pixel from the frame ``labels`` names (a hard selection, no blend)."""
    pick = labels[None, ..., None] if frames[0].ndim == 3 else labels[None]
    return np.take_along_axis(np.stack(frames), pick, 0)[0]


#: One-pass variants and bounds of :func:`diagnose`: label -> (decision, blend, options). Decision: None = the
#: one-pass method's own (run with ``edge_fix=False`` and the options: the paper's guided-filter path),
#: ``"one-pass"`` its depth map with ``edge_fix=False``, ``"true"``
#: :attr:`OcclusionStack.labels`, ``"edge"`` :func:`edge_labels`, ``"best"`` :func:`best_frame_labels`,
#: ``"enfuse"`` :func:`enfuse_labels`. Blend: ``"one-pass"`` (:func:`fuse_with_labels` with the options),
#: ``"enfuse"`` (:func:`enfuse_blend`), ``"select"`` (:func:`select`). The enfuse rows need the program.
DIAGNOSES = {"one-pass, gf_radius=2": (None, "one-pass", {"gf_radius": 2}),
             "one-pass, gf_radius=0 (hard blend)": (None, "one-pass", {"gf_radius": 0}),
             "one-pass, region_ratio=0 (no small-region step)": (None, "one-pass", {"region_ratio": 0.0}),
             "one-pass labels, enfuse's blend": ("one-pass", "enfuse", {}),
             "enfuse's labels, one-pass blend": ("enfuse", "one-pass", {}),
             "enfuse's labels, gf_radius=0 (hard blend)": ("enfuse", "one-pass", {"gf_radius": 0}),
             "enfuse's labels, enfuse's blend (its masks reloaded)": ("enfuse", "enfuse", {}),
             "true labels, one-pass blend": ("true", "one-pass", {}),
             "true labels, gf_radius=0 (hard blend)": ("true", "one-pass", {"gf_radius": 0}),
             "true labels, halo side from the occluder's frame": ("edge", "one-pass", {}),
             "best-frame labels, one-pass blend": ("best", "one-pass", {}),
             "best frame per pixel (bound)": ("best", "select", {})}


def diagnose(stack: OcclusionStack, *, depth: np.ndarray | None = None, threads: int | None = 1) -> dict:
    """:data:`DIAGNOSES` on one stack (the enfuse rows only where the program is installed): label ->
    :func:`halo_scores`. ``depth``: the depth map of the one-pass path with the guided filter (``edge_fix=False``), when already
    computed."""
    import pyfusion

    decisions = {"true": lambda: stack.labels, "edge": lambda: edge_labels(stack),
                 "best": lambda: best_frame_labels(stack.frames, stack.sharp),
                 "enfuse": lambda: enfuse_labels(stack.frames),
                 "one-pass": lambda: depth if depth is not None else
                 pyfusion.fuse(list(stack.frames), method="cnn", threads=threads, edge_fix=False).maps["depth_map"]}
    made = {}
    out = {}
    for label, (decision, blend, options) in DIAGNOSES.items():
        if "enfuse" in (decision, blend) and shutil.which("enfuse") is None:
            continue
        if decision is None:
            fused = pyfusion.fuse(list(stack.frames), method="cnn", threads=threads,
                                  **{"edge_fix": False, **options}).fused
        else:
            if decision not in made:
                made[decision] = decisions[decision]()
            given = made[decision]
            fused = {"one-pass": lambda: fuse_with_labels(stack.frames, given, threads=threads, **options),
                     "enfuse": lambda: enfuse_blend(stack.frames, given),
                     "select": lambda: select(stack.frames, given)}[blend]()
        out[label] = halo_scores(fused, stack.sharp, stack.planes, stack.width)
    return out


def label_agreement(depth: np.ndarray, stack: OcclusionStack) -> dict:
    """Shares of the band and of its halo side where a depth map (frame indices) equals the true labels
    (``band_true``, ``halo_true``) and :func:`edge_labels` (``halo_edge``)."""
    band, halo = band_mask(stack.planes, stack.width), halo_side_mask(stack.planes, stack.width)
    edge = edge_labels(stack)
    return {"band_true": float(np.mean(depth[band] == stack.labels[band])),
            "halo_true": float(np.mean(depth[halo] == stack.labels[halo])),
            "halo_edge": float(np.mean(depth[halo] == edge[halo]))}


# -------------------------------------------------------------------------------------------- the halo-fix candidates
#: Decisions of the halo-fix candidates: label -> None (the one-pass depth map as is) or ``(width, focus_radius)`` of
#: :func:`pyfusion.refine_stack.redecide_band` (the depth map's boundary band re-decided by the local focus measure).
HALO_DECISIONS = {"depth map": None, **{f"band {b} r={r}": (b, r) for b in (4, 8, 16) for r in (1, 2)}}
#: Blends of the halo-fix candidates: label -> ``("guided", gf_radius)`` (:func:`pyfusion.refine_stack.guided_blend`,
#: the one-pass blend) or ``("pyramid", levels)`` (:func:`pyfusion.refine_stack.pyramid_blend`; None: all levels).
HALO_BLENDS = {"gf r=8": ("guided", 8), "gf r=2": ("guided", 2), "pyramid 4": ("pyramid", 4),
               "pyramid all": ("pyramid", None)}
#: Every decision with every blend, named ``"DECISION + BLEND"``; the first is the one pass with the paper's guided
#: filter (``edge_fix=False``), the base the candidates are judged against.
HALO_CANDIDATES = tuple(f"{d} + {b}" for d in HALO_DECISIONS for b in HALO_BLENDS)
BASE_CANDIDATE = HALO_CANDIDATES[0]


def candidates_fused(frames, depth: np.ndarray, names, *, threads: int | None = 1) -> dict:
    """The named :data:`HALO_CANDIDATES` on registered ``frames`` and the one-pass ``depth`` map (each decision made
    once): name -> the fused image. ``BASE_CANDIDATE`` reproduces the image of the one pass with ``edge_fix=False``,
    ``band 16 r=1 + pyramid 4`` the default's (the edge fix)."""
    from pyfusion import refine_stack

    decided, out = {}, {}
    for name in names:
        decision, blend = name.split(" + ")
        if decision not in decided:
            spec = HALO_DECISIONS[decision]
            decided[decision] = depth if spec is None else refine_stack.redecide_band(
                frames, depth, width=spec[0], focus_radius=spec[1])
        kind, value = HALO_BLENDS[blend]
        out[name] = (refine_stack.guided_blend(frames, decided[decision], gf_radius=value, threads=threads)
                     if kind == "guided" else refine_stack.pyramid_blend(frames, decided[decision], levels=value))
    return out


def choose_candidate(band: dict, whole: dict, layered: dict | None = None, *, tolerance: float = 0.1) -> str | None:
    """The halo fix's selection rule (fixed before any tuning run): among the candidates whose mean whole-image PSNR
    is not lower than :data:`BASE_CANDIDATE`'s by more than ``tolerance`` dB on the occlusion stacks
    (``whole``: name -> mean PSNR) and on the layered stacks of the stack benchmark (``layered``, where given), the
    one with the highest mean band PSNR (``band``); None when none is admissible."""
    ok = [c for c in band if whole[c] >= whole[BASE_CANDIDATE] - tolerance and
          (layered is None or layered[c] >= layered[BASE_CANDIDATE] - tolerance)]
    return max(ok, key=band.get) if ok else None


def available(fusers) -> tuple[list, dict]:
    """The fusers of ``fusers`` that can run here, and fuser -> why not for the others."""
    why = {}
    if "enfuse" in fusers and shutil.which("enfuse") is None:
        why["enfuse"] = "the `enfuse` program (Enblend-Enfuse) is not installed"
    if "focus-stack" in fusers and not FOCUS_STACK.is_file():
        why["focus-stack"] = f"not built at {FOCUS_STACK.relative_to(ROOT)}"
    return [f for f in fusers if f not in why], why


def machine() -> str:
    """The CPU model (``/proc/cpuinfo``) and the cores this process may use."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores"
