"""Fuzz the image readers: seeded mutations of valid JPEG, PNG, TIFF (8/16-bit) and DNG files through the reader,
``pyfusion fuse`` and ``pyfusion batch``; atheris (coverage-guided) on the reader.

Every case must end in success or a one-line error (exit status 2 for ``pyfusion fuse``) within the per-case
timeout, with no traceback, no crash, no output or temporary file left behind by a failure, and (batch) the good
stack of the batch fused. The cases run in a child process (``--child``) that the parent watches: a case that
kills the child (a crash in a decoder) or runs past ``--timeout`` is reported and the child restarted after it.

    python -m fusionlab fuzz-readers --cases 2000 --batch-cases 100 --atheris-runs 2000 --json fuzz.json

Seeds: a 40x56 textured image written as JPEG (colour, gray, progressive), PNG (8/16-bit, colour/gray/alpha),
TIFF (8-bit colour/gray/LZW/2-channel, 16-bit colour/gray) and DNG (a 12-bit Bayer mosaic, written with
tifffile). Mutations (1-3 per case, seeded by ``--seed`` and the case number): bit flips, interesting bytes,
truncation, swapped or duplicated blocks, swapped PNG chunks, zero/huge sizes in the header (PNG IHDR, JPEG SOF,
TIFF/DNG image width and length), wrong channel counts and bit depths (PNG colour type, JPEG component count,
TIFF SamplesPerPixel/BitsPerSample), and any TIFF/DNG tag's value set to 0, 1 or a huge number.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

FORMATS = ("jpeg", "png", "tiff8", "tiff16", "dng")
EXT = {"jpeg": ".jpg", "png": ".png", "tiff8": ".tif", "tiff16": ".tif", "dng": ".dng"}
PATHS = ("reader", "fuse", "batch")
#: Values written into header fields and bytes.
_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 127, 128, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF)

# ---------------------------------------------------------------------------------------------- seed files
XYZ_TO_SRGB = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])


def write_dng(path, rgb, *, black: int = 64, white: int = 4095, pattern=(0, 1, 1, 2), neutral=(1.0, 1.0, 1.0)):
    """Write a camera's linear RGB response (floats in [0, 1]) as an uncompressed Bayer DNG that LibRaw reads.

    The camera is linear sRGB (ColorMatrix1 is the XYZ -> linear sRGB matrix, D65), so LibRaw's linear output
    (``postprocess(gamma=(1, 1), no_auto_bright=True, use_camera_wb=True)``) gives the scene back up to the
    demosaicing error, scaled by 65535.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (``.dng``).
    rgb : numpy.ndarray
        ``(H, W, 3)`` scene, H and W even.
    black, white : int, optional
        BlackLevel and WhiteLevel of the 16-bit samples.
    pattern : tuple of int, optional
        CFAPattern of the 2x2 repeat (0 red, 1 green, 2 blue), default RGGB.
    neutral : tuple of float, optional
        AsShotNeutral: the camera's response to a neutral object under the light of the shot (the camera white
        balance is its inverse).
    """
    import tifffile

    rgb = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0)
    h, w = rgb.shape[:2]
    cfa = np.empty((h, w))
    for k, c in enumerate(pattern):
        y, x = divmod(k, 2)
        cfa[y::2, x::2] = rgb[y::2, x::2, c]
    raw = np.floor(black + cfa * (white - black) + 0.5).astype(np.uint16)
    matrix = [v for x in XYZ_TO_SRGB.ravel() for v in (int(round(x * 10000)), 10000)]
    as_shot = [v for x in neutral for v in (int(round(x * 10000)), 10000)]
    tags = [(50706, "B", 4, (1, 4, 0, 0), True),            # DNGVersion
            (50707, "B", 4, (1, 1, 0, 0), True),            # DNGBackwardVersion
            (50708, "s", 0, "pyfusion test camera", True),  # UniqueCameraModel
            (33421, "H", 2, (2, 2), True),                  # CFARepeatPatternDim
            (33422, "B", 4, tuple(pattern), True),          # CFAPattern
            (50714, "H", 1, black, True),                   # BlackLevel
            (50717, "H", 1, white, True),                   # WhiteLevel
            (50721, "2i", 9, matrix, True),                 # ColorMatrix1
            (50778, "H", 1, 21, True),                      # CalibrationIlluminant1: D65
            (50728, "2I", 3, as_shot, True)]                # AsShotNeutral
    tifffile.imwrite(path, raw, photometric=32803, extratags=tags, subfiletype=0, metadata=None)


def _texture(h=40, w=56, seed=0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.random((h, w, 3)), (0, 0), 1.0)


def _encode(ext: str, img: np.ndarray, params=()) -> bytes:
    import cv2

    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img), list(params))
    assert ok, ext
    return buf.tobytes()


def seed_files() -> dict[str, list[bytes]]:
    """The valid files each format's cases mutate (format -> variants)."""
    import cv2
    import tifffile

    t = _texture()
    u8, u16 = (np.floor(t * 255 + 0.5).astype(np.uint8), np.floor(t * 65535 + 0.5).astype(np.uint16))
    gray8, gray16 = u8[:, :, 1], u16[:, :, 1]
    alpha = np.dstack([u8, np.full(u8.shape[:2], 200, np.uint8)])

    def tif(img, **kw):
        buf = io.BytesIO()
        tifffile.imwrite(buf, img, metadata=None, **kw)
        return buf.getvalue()

    def dng(**kw):
        with tempfile.TemporaryDirectory() as d:
            write_dng(Path(d) / "s.dng", t, **kw)
            return (Path(d) / "s.dng").read_bytes()

    return {
        "jpeg": [_encode(".jpg", u8, (cv2.IMWRITE_JPEG_QUALITY, 90)), _encode(".jpg", gray8),
                 _encode(".jpg", u8, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))],
        "png": [_encode(".png", u8), _encode(".png", u16), _encode(".png", gray8), _encode(".png", alpha),
                _png_split(_encode(".png", u16[:, :, 0]))],
        "tiff8": [_encode(".tif", u8), tif(gray8), tif(u8, compression="zlib"), tif(u8[:, :, :2], photometric="minisblack",
                                                                                  planarconfig="contig")],
        "tiff16": [_encode(".tif", u16), tif(gray16), tif(u16, tile=(16, 16))],
        "dng": [dng(), dng(pattern=(2, 1, 1, 0), neutral=(0.5, 1.0, 0.7), black=0, white=65535)],
    }


def _png_split(data: bytes, size: int = 200) -> bytes:
    """The PNG with its image data in ``size``-byte IDAT chunks and a tEXt chunk before them."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")

    d = bytearray(data)
    spans = _png_chunks(d)
    idat = b"".join(bytes(d[a + 8:b - 4]) for a, b in spans if d[a + 4:a + 8] == b"IDAT")
    head = bytes(d[:spans[0][1]])  # signature and IHDR
    return (head + chunk(b"tEXt", b"Comment\x00fuzz seed") + b"".join(chunk(b"IDAT", idat[i:i + size])
            for i in range(0, len(idat), size)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------------------- mutations
def _png_chunks(d: bytearray) -> list[tuple[int, int]]:
    """(start, end) of each chunk after the PNG signature."""
    out, i = [], 8
    while i + 12 <= len(d):
        n = int.from_bytes(d[i:i + 4], "big")
        end = i + 12 + n
        if end > len(d):
            break
        out.append((i, end))
        i = end
    return out


def _png_fix_crc(d: bytearray, start: int) -> None:
    n = int.from_bytes(d[start:start + 4], "big")
    if start + 12 + n <= len(d):
        d[start + 8 + n:start + 12 + n] = zlib.crc32(bytes(d[start + 4:start + 8 + n])).to_bytes(4, "big")


def _jpeg_sof(d: bytearray) -> int | None:
    i = 2
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            return None
        m = d[i + 1]
        if m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return i
        if m == 0xDA:
            return None
        i += 2 + int.from_bytes(d[i + 2:i + 4], "big")
    return None


def _tiff_entries(d: bytearray) -> tuple[str, list[int]]:
    """Byte order and the offsets of the first IFD's 12-byte entries."""
    if bytes(d[:4]) not in (b"II*\x00", b"MM\x00*") or len(d) < 8:
        return "<", []
    o = "<" if d[:2] == b"II" else ">"
    ifd = struct.unpack(o + "I", d[4:8])[0]
    if ifd + 2 > len(d):
        return o, []
    n = struct.unpack(o + "H", d[ifd:ifd + 2])[0]
    return o, [e for e in (ifd + 2 + 12 * k for k in range(n)) if e + 12 <= len(d)]


def _tiff_set(d: bytearray, o: str, e: int, value: int) -> None:
    """Set a TIFF entry's (first) value: SHORT in place, LONG in place, else the 4-byte value/offset field."""
    typ = struct.unpack(o + "H", d[e + 2:e + 4])[0]
    if typ == 3:
        d[e + 8:e + 10] = struct.pack(o + "H", value & 0xFFFF)
    else:
        d[e + 8:e + 12] = struct.pack(o + "I", value & 0xFFFFFFFF)


def _header_size(d: bytearray, rng: random.Random) -> str:
    """Width, height (both: large, under the decoder limit, or one: 0, 1, huge, random) or a TIFF strip size."""
    both = rng.random() < 0.3
    big = rng.choice((4096, 20000, 30000, 32767))
    v = rng.choice((0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1, 1 << 16), rng.randrange(1 << 32)))
    if d.startswith(b"\x89PNG") and len(d) >= 33:
        for at in (16, 20) if both else (rng.choice((16, 20)),):
            d[at:at + 4] = (big if both else v).to_bytes(4, "big")
        if rng.random() < 0.8:
            _png_fix_crc(d, 8)
        return f"png-size={big if both else v}"
    sof = _jpeg_sof(d) if d.startswith(b"\xff\xd8") else None
    if sof is not None and sof + 9 <= len(d):
        for at in (sof + 5, sof + 7) if both else (rng.choice((sof + 5, sof + 7)),):
            d[at:at + 2] = ((big if both else v) & 0xFFFF).to_bytes(2, "big")
        return f"jpeg-size={(big if both else v) & 0xFFFF}"
    o, entries = _tiff_entries(d)
    sized = [e for e in entries if struct.unpack(o + "H", d[e:e + 2])[0] in ((256, 257) if both else
                                                                               (256, 257, 278, 279))]
    for e in sized if both else rng.sample(sized, min(1, len(sized))):
        _tiff_set(d, o, e, big if both else v)
    if sized:
        return f"tiff-size={big if both else v}"
    return _bitflip(d, rng)


def _channels(d: bytearray, rng: random.Random) -> str:
    if d.startswith(b"\x89PNG") and len(d) >= 33:
        d[24] = rng.choice((1, 2, 4, 8, 16, 3, 0))
        d[25] = rng.choice((0, 2, 3, 4, 6, 1, 5, 7))
        if rng.random() < 0.8:
            _png_fix_crc(d, 8)
        return f"png-depth={d[24]},colour={d[25]}"
    sof = _jpeg_sof(d) if d.startswith(b"\xff\xd8") else None
    if sof is not None and sof + 10 <= len(d):
        d[sof + 9] = rng.choice((0, 1, 2, 3, 4, 5, 255))
        if rng.random() < 0.3:
            d[sof + 4] = rng.choice((8, 12, 16, 0))  # sample precision
        return f"jpeg-components={d[sof + 9]}"
    o, entries = _tiff_entries(d)
    chan = [e for e in entries if struct.unpack(o + "H", d[e:e + 2])[0] in (258, 262, 277, 284, 338, 33421, 33422)]
    if chan:
        e = rng.choice(chan)
        v = rng.choice((0, 1, 2, 3, 4, 5, 8, 12, 16, 32, 64, 255, 32803))
        _tiff_set(d, o, e, v)
        return f"tiff-tag{struct.unpack(o + 'H', d[e:e + 2])[0]}={v}"
    return _bitflip(d, rng)


def _tiff_tag(d: bytearray, rng: random.Random) -> str:
    o, entries = _tiff_entries(d)
    if not entries:
        return _bytes(d, rng)
    e = rng.choice(entries)
    part = rng.choice(("value", "count", "type"))
    v = rng.choice(_INTERESTING)
    if part == "value":
        _tiff_set(d, o, e, v)
    elif part == "count":
        d[e + 4:e + 8] = struct.pack(o + "I", v & 0xFFFFFFFF)
    else:
        d[e + 2:e + 4] = struct.pack(o + "H", rng.randrange(0, 20))
    return f"tiff-{part}@tag{struct.unpack(o + 'H', d[e:e + 2])[0]}"


def _bitflip(d: bytearray, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(d))
        d[i] ^= 1 << rng.randrange(8)
    return "bitflip"


def _bytes(d: bytearray, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(d))
        v = rng.choice(_INTERESTING)
        w = rng.choice((1, 2, 4))
        d[i:i + w] = (v & ((1 << 8 * w) - 1)).to_bytes(w, rng.choice(("big", "little")))
    return "bytes"


def _truncate(d: bytearray, rng: random.Random) -> str:
    n = rng.choice((rng.randrange(len(d)), rng.randrange(min(len(d), 64)), len(d) - rng.randint(1, 16)))
    del d[max(n, 0):]
    if not d:
        d.append(0)
    return f"truncate@{n}"


def _swap(d: bytearray, rng: random.Random) -> str:
    if d.startswith(b"\x89PNG") and rng.random() < 0.5:
        chunks = _png_chunks(d)
        if len(chunks) >= 2:
            (a0, a1), (b0, b1) = sorted(rng.sample(chunks, 2))
            d[a0:b1] = d[b0:b1] + d[a1:b0] + d[a0:a1]
            return "png-chunk-swap"
    n = rng.randint(1, max(1, len(d) // 8))
    a, b = sorted((rng.randrange(len(d)), rng.randrange(len(d))))
    if b - a < n:
        return _bitflip(d, rng)
    d[a:a + n], d[b:b + n] = d[b:b + n], d[a:a + n]
    return "block-swap"


def _duplicate(d: bytearray, rng: random.Random) -> str:
    a = rng.randrange(len(d))
    n = rng.randint(1, 256)
    at = rng.randrange(len(d))
    d[at:at] = d[a:a + n]
    return "duplicate"


MUTATIONS = {"bitflip": _bitflip, "bytes": _bytes, "truncate": _truncate, "size": _header_size,
             "channels": _channels, "tag": _tiff_tag, "swap": _swap, "duplicate": _duplicate}


def mutate(fmt: str, index: int, seed: int, seeds: dict) -> tuple[bytes, int, str]:
    """Case ``index`` of ``fmt``: ``(bytes, seed variant, mutations applied)``; deterministic."""
    rng = random.Random(f"{seed}:{fmt}:{index}")
    variant = rng.randrange(len(seeds[fmt]))
    d = bytearray(seeds[fmt][variant])
    names = [k for k in MUTATIONS if k != "tag" or fmt in ("tiff8", "tiff16", "dng")]
    done = [MUTATIONS[rng.choice(names)](d, rng) for _ in range(rng.choice((1, 1, 2, 3)))]
    if fmt == "png" and rng.random() < 0.5:  # valid chunk CRCs: the mutation reaches libpng's decoding
        for start, _ in _png_chunks(d):
            _png_fix_crc(d, start)
        done.append("crc")
    return bytes(d), variant, "+".join(done)


# ------------------------------------------------------------------------------------------------ the child
@contextlib.contextmanager
def _captured_fds(path: Path):
    """Send file descriptors 1 and 2 (Python's and native code's output) to ``path`` for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "wb") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _leftovers(folder: Path, keep=()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep) if folder.is_dir() else []


def _check_reader(case: Path, seed: Path) -> tuple[str, str]:
    from pyfusion.io import FusionInputError, read_image, validate_images

    try:
        img = read_image(case)
        validate_images([img, read_image(seed)], names=[case.name, seed.name], min_size=16)
        return "ok", f"{img.shape} {img.dtype}"
    except FusionInputError as e:
        msg = str(e)
        return ("error", msg) if msg and "\n" not in msg else ("bad-message", repr(msg))
    except Exception as e:  # noqa: BLE001 - what the fuzzer looks for
        import traceback

        return "traceback", f"{type(e).__name__}: {e} | " + " | ".join(traceback.format_exc().splitlines()[-4:])


def _check_fuse(case: Path, seed: Path, work: Path, ext: str) -> tuple[str, str]:
    from pyfusion.cli import main

    out_dir = work / "fuse_out"
    out_dir.mkdir()
    output = out_dir / f"fused{'.tif' if ext in ('.tif', '.dng') else '.png'}"
    log = work / "fuse.log"
    with _captured_fds(log):
        try:
            rc = main(["fuse", str(case), str(seed), "-o", str(output)])
        except BaseException as e:  # noqa: BLE001 - main must not raise
            rc = f"raised {type(e).__name__}: {e}"
    text = log.read_text(errors="replace")
    lines = text.splitlines()
    left = _leftovers(out_dir, keep=(output.name,) if rc == 0 else ())
    written = output.is_file()
    shutil.rmtree(out_dir)
    if rc == 0:
        if not written or left or lines:
            return "bad-success", f"left {left}, output {text[:300]!r}"
        return "ok", ""
    if rc == 2 and len(lines) == 1 and lines[0].startswith("pyfusion fuse: error: ") and not left:
        return "error", lines[0]
    return ("traceback" if "Traceback" in text else "bad-exit"), f"rc {rc}, left {left}, output {text[-400:]!r}"


def _check_batch(case: Path, seed: Path, work: Path, ext: str, scheduler: str) -> tuple[str, str]:
    from pyfusion.cli import main

    src, out = work / "batch_in", work / "batch_out"
    for name, first in (("good", seed), ("bad", case)):
        (src / name).mkdir(parents=True)
        shutil.copyfile(first, src / name / f"frame_0{ext}")
        shutil.copyfile(seed, src / name / f"frame_1{ext}")
    log = work / "batch.log"
    with _captured_fds(log):
        try:
            rc = main(["batch", str(src), str(out), "--scheduler", scheduler, "--no-progress", "--ext", ".tif"])
        except BaseException as e:  # noqa: BLE001 - main must not raise
            rc = f"raised {type(e).__name__}: {e}"
    text = log.read_text(errors="replace")
    try:
        rows = {r["name"]: r for r in json.loads((out / "summary.json").read_text())["stacks"]}
    except (OSError, ValueError, KeyError) as e:
        rows = {"?": str(e)}
    files = set(_leftovers(out)) - {"summary.json", "summary.csv"}
    shutil.rmtree(src)
    shutil.rmtree(out, ignore_errors=True)
    good, bad = rows.get("good", {}), rows.get("bad", {})
    problems = []
    if rc not in (0, 1) or "Traceback" in text:
        problems.append(f"rc {rc}")
    if good.get("status") != "ok" or "good.tif" not in files:
        problems.append(f"good stack {good.get('status')}: {good.get('error')}")
    expected = {"good.tif"} | ({"bad.tif"} if bad.get("status") == "ok" else set())
    if files != expected:
        problems.append(f"files {sorted(files)}")
    if bad.get("status") not in ("ok", "failed") or "\n" in str(bad.get("error", "")):
        problems.append(f"bad stack {bad!r}")
    if problems:
        return "bad-batch", "; ".join(problems) + f" | {text[-300:]!r}"
    return ("ok", "") if bad.get("status") == "ok" else ("error", bad.get("error", ""))


def child(args) -> int:
    """Run the cases named on stdin (``FORMAT INDEX PATH`` lines), reporting to file descriptor ``--report-fd``."""
    import pyfusion.cli  # noqa: F401 - import before the first case (its time is not a case's)

    report = os.fdopen(args.report_fd, "w", buffering=1)
    seeds = seed_files()
    work = Path(tempfile.mkdtemp(prefix="fuzz-child-"))
    scheduler = None
    if "batch" in args.paths:
        from distributed import LocalCluster

        # threads in this process: a crash in a decoder kills this child, which the parent sees
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
        scheduler = cluster.scheduler_address
    seed_paths = {}
    for fmt, variants in seeds.items():
        for k, data in enumerate(variants):
            p = work / f"seed_{fmt}_{k}{EXT[fmt]}"
            p.write_bytes(data)
            seed_paths[fmt, k] = p
    report.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        path, fmt, index = line.split()
        index = int(index)
        data, variant, how = mutate(fmt, index, args.seed, seeds)
        case = work / f"case{EXT[fmt]}"
        case.write_bytes(data)
        report.write(json.dumps({"start": [path, fmt, index]}) + "\n")
        t0 = time.perf_counter()
        seed = seed_paths[fmt, variant]
        if path == "reader":
            status, detail = _check_reader(case, seed)
        elif path == "fuse":
            status, detail = _check_fuse(case, seed, work, EXT[fmt])
        else:
            status, detail = _check_batch(case, seed, work, EXT[fmt], scheduler)
        report.write(json.dumps({"path": path, "fmt": fmt, "index": index, "status": status, "how": how,
                                 "detail": detail[:500], "sec": round(time.perf_counter() - t0, 4)}) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


# ----------------------------------------------------------------------------------------------- the parent
class _Child:
    def __init__(self, args, paths):
        r, w = os.pipe()
        cmd = [sys.executable, "-m", "fusionlab.commands.fuzz_readers", "--child", "--report-fd", str(w),
               "--seed", str(args.seed), "--paths", ",".join(paths)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(w,), text=True)
        os.close(w)
        self.fd, self.buf = r, b""

    def line(self, timeout: float):
        """The next report line as a dict; None on timeout; {"eof": rc} when the child died."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return {"eof": self.proc.wait()}
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send(self, path, fmt, index):
        self.proc.stdin.write(f"{path} {fmt} {index}\n")
        self.proc.stdin.flush()

    def close(self):
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.fd)


def run_cases(cases, args, *, log=print) -> list[dict]:
    """Run ``(path, fmt, index)`` cases in a watched child; returns one record per case (crash/hang included)."""
    records, todo = [], list(cases)
    paths = sorted({c[0] for c in todo})
    while todo:
        child_proc = _Child(args, paths)
        ready = child_proc.line(120)
        if not ready or not ready.get("ready"):
            child_proc.close()
            raise RuntimeError(f"the fuzz child did not start: {ready}")
        try:
            while todo:
                path, fmt, index = todo[0]
                child_proc.send(path, fmt, index)
                started = child_proc.line(args.timeout)
                rec = child_proc.line(args.timeout) if started and "start" in started else started
                if rec is None or "eof" in rec:
                    status = "hang" if rec is None else f"crash (exit {rec['eof']})"
                    records.append({"path": path, "fmt": fmt, "index": index, "status": status, "how": "",
                                    "detail": "", "sec": args.timeout if rec is None else None})
                    log(f"{path} {fmt} #{index}: {status}")
                    todo.pop(0)
                    break
                records.append(rec)
                todo.pop(0)
                if rec["status"] not in ("ok", "error"):
                    log(f"{path} {fmt} #{index}: {rec['status']} ({rec['how']}): {rec['detail']}")
        finally:
            child_proc.close()
    return records


def run_atheris(fmt: str, runs: int, args, work: Path) -> dict:
    """Atheris (libFuzzer, coverage of pyfusion.io's Python code) on the reader for ``runs`` inputs of ``fmt``."""
    corpus = work / f"corpus_{fmt}"
    corpus.mkdir(parents=True)
    for k, data in enumerate(seed_files()[fmt]):
        (corpus / f"seed{k}").write_bytes(data)
    cmd = [sys.executable, "-m", "fusionlab.commands.fuzz_readers", "--atheris-child", fmt, "--", "fuzz",
           str(corpus), f"-runs={runs}", f"-seed={args.seed + 1}", f"-timeout={int(args.timeout)}",
           "-rss_limit_mb=4096", "-max_len=65536", f"-artifact_prefix={work}/crash_{fmt}_"]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout * 10 + runs)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = str(e.stderr or ""), "timeout"
    done = [ln for ln in out.splitlines() if ln.startswith("Done ")]
    n = int(done[-1].split()[1]) if done else 0
    failure = "" if rc == 0 else " | ".join(out.strip().splitlines()[-6:])
    return {"fmt": fmt, "runs": n, "rc": rc, "sec": round(time.monotonic() - t0, 1), "failure": failure[:800]}


def atheris_child(fmt: str, argv) -> None:
    import atheris

    with atheris.instrument_imports(include=["pyfusion.io"]):
        from pyfusion.io import FusionInputError, read_image, validate_images
    work = Path(tempfile.mkdtemp(prefix="fuzz-atheris-"))
    path = work / f"case{EXT[fmt]}"

    def one(data: bytes) -> None:
        path.write_bytes(data)
        try:
            img = read_image(path)
            validate_images([img, img], min_size=1)
        except FusionInputError as e:
            if "\n" in str(e) or not str(e):
                raise AssertionError(f"not a one-line message: {e!r}") from None

    atheris.Setup(argv, one)
    atheris.Fuzz()


def summarize(records) -> dict:
    table: dict = {}
    for r in records:
        row = table.setdefault(r["path"], {}).setdefault(r["fmt"], {"cases": 0, "ok": 0, "error": 0, "failed": 0,
                                                                      "max_sec": 0.0})
        row["cases"] += 1
        key = r["status"] if r["status"] in ("ok", "error") else "failed"
        row[key] += 1
        row["max_sec"] = max(row["max_sec"], r["sec"] or 0.0)
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="fusionlab fuzz-readers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000, help="seeded cases per format through the reader and "
                    "through pyfusion fuse (default 2000)")
    ap.add_argument("--batch-cases", type=int, default=100, help="seeded cases per format through pyfusion batch "
                    "(a good and a mutated stack per batch; default 100)")
    ap.add_argument("--atheris-runs", type=int, default=2000, help="atheris inputs per format on the reader "
                    "(0: none; default 2000)")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {', '.join(FORMATS)}")
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of reader, fuse, batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds a case may take (default 10)")
    ap.add_argument("--json", type=Path, help="write the counts and every failed case here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--atheris-child", metavar="FORMAT", help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
    if "--atheris-child" in argv:  # python -m ... --atheris-child FMT -- fuzz CORPUS -runs=N ...
        cut = argv.index("--")
        atheris_child(argv[argv.index("--atheris-child") + 1], argv[cut + 1:])
        return 0
    args = ap.parse_args(argv)
    args.paths = [p for p in args.paths.split(",") if p]
    if args.child:
        return child(args)
    formats = [f for f in args.formats.split(",") if f]
    unknown = sorted(set(formats) - set(FORMATS)) + sorted(set(args.paths) - set(PATHS))
    if unknown:
        ap.error(f"unknown format or path: {', '.join(unknown)}")
    from pyfusion.batch import IMAGE_EXTS

    skipped = [fmt for fmt in formats if "batch" in args.paths and EXT[fmt] not in IMAGE_EXTS]
    if skipped:
        print(f"batch: skipping {', '.join(skipped)} (pyfusion batch does not read {EXT[skipped[0]]} frames)")
    t0 = time.monotonic()
    cases = [(path, fmt, k) for path in args.paths for fmt in formats
             if not (path == "batch" and fmt in skipped)
             for k in range(args.batch_cases if path == "batch" else args.cases)]
    records = run_cases(cases, args, log=lambda m: print(m, flush=True))
    report = {"seed": args.seed, "timeout_s": args.timeout, "counts": summarize(records),
              "failures": [r for r in records if r["status"] not in ("ok", "error")], "atheris": []}
    if args.atheris_runs > 0:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as d:
            for fmt in formats:
                res = run_atheris(fmt, args.atheris_runs, args, Path(d))
                report["atheris"].append(res)
                print(f"atheris {fmt}: {res['runs']} runs, exit {res['rc']}, {res['sec']} s {res['failure']}",
                      flush=True)
    report["seconds"] = round(time.monotonic() - t0, 1)
    print(f"{'path':<7} {'format':<7} {'cases':>6} {'ok':>6} {'error':>6} {'failed':>6} {'max s':>6}")
    for path, per_fmt in report["counts"].items():
        for fmt, row in per_fmt.items():
            print(f"{path:<7} {fmt:<7} {row['cases']:>6} {row['ok']:>6} {row['error']:>6} {row['failed']:>6} "
                  f"{row['max_sec']:>6.2f}")
    bad_atheris = [a for a in report["atheris"] if a["rc"] != 0]
    print(f"{len(report['failures'])} failed cases, {len(bad_atheris)} atheris failures, {report['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if report["failures"] or bad_atheris else 0


if __name__ == "__main__":
    sys.exit(main())
