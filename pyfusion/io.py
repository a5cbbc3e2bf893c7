"""Image input/output and input validation for the fusion pipeline.

Conventions
-----------
* Images are NumPy arrays of shape ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB, channel order R, G, B).
  ``(H, W, 1)`` arrays are accepted by :func:`validate_images` and keep their shape through the pipeline.
* Pixel types: ``uint8`` (scale 255), ``uint16`` (scale 65535), ``float32``/``float64`` (already in [0, 1]).
  :func:`to_unit` maps each to float64 in [0, 1], as the authors' code does with ``double(A)/255`` before
  anything else; :func:`from_unit` maps back with MATLAB's ``uint8()``/``uint16()`` rounding (half away from
  zero, saturating).
* Reading (:func:`read_image`) decodes with OpenCV ``IMREAD_UNCHANGED`` (8- and 16-bit PNG/TIFF, JPEG, ...),
  converts BGR to RGB and **drops an alpha channel** (BGRA -> RGB). EXIF orientation is not applied.
* RAW frames (the extensions in :data:`RAW_EXTENSIONS`: DNG and the camera formats LibRaw reads) are read with
  ``rawpy`` (the optional extra ``pyfusion-mfif[raw]``): demosaiced (LibRaw's default AHD), camera white
  balance, camera colour to sRGB primaries, **linear** (gamma 1, no auto-brightening), 16-bit RGB, the camera's
  orientation applied. Without rawpy, or for a file LibRaw does not read, a one-line :class:`FusionInputError`.
  Truncated (PNG without IEND, or anything the decoder refuses) or undecodable files raise
  :class:`FusionInputError`.
* Decoder limits: a PNG's (IHDR), JPEG's (SOFn) or TIFF's (first IFD) declared size is read from its header
  before anything is
  decoded and compared with OpenCV's own limits (:data:`MAX_IMAGE_PIXELS`, :data:`MAX_IMAGE_SIDE`: 2^30 pixels
  and 2^20 per side unless ``$CV_IO_MAX_IMAGE_PIXELS``/``$CV_IO_MAX_IMAGE_WIDTH``/``$CV_IO_MAX_IMAGE_HEIGHT``
  say otherwise, as for OpenCV); a larger image raises the one-line :class:`FusionInputError`
  ``"<file>: image of WxH exceeds the decoder limit (...)"``. Other formats (BigTIFF, WebP, ...) are left to
  OpenCV, whose refusal (an exception) becomes the same kind of one-line error. A PNG or Huffman-coded JPEG
  whose header declares more pixels than its bytes can encode is refused from the header too
  (:func:`_check_data_size`).
* What the native decoders print on standard error while decoding is captured (:func:`_native_stderr`): a failed
  decode's one-line error ends with the decoder's reason; warnings on a file that decodes are dropped, except a
  JPEG scan that ends early (libjpeg fills the rest with grey), which is refused as truncated.
* Writing is atomic (:func:`write_atomic`, which :func:`write_image` uses for the encoded image): the bytes go
  to a temporary file in the destination's directory, which is fsync'ed and moved over the destination with
  :func:`os.replace`; on any failure the temporary file is removed and an existing destination is left untouched.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import contextlib
import io
import operator
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from pyfusion.constants import RGB2GRAY

__all__ = [
    "FusionInputError",
    "read_image",
    "write_image",
    "write_atomic",
    "to_gray",
    "gray_unit32",
    "validate_images",
    "to_unit",
    "from_unit",
    "map_to_uint8",
    "SUPPORTED_DTYPES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "image_header_size",
    "RAW_EXTENSIONS",
    "check_output_format",
    "frame_header",
    "FrameSequence",
]

#: Pixel types accepted by the pipeline.
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))

_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}

# Pixel types each output format stores without silent conversion.
_WRITE_DTYPES = {
    ".png": ("uint8", "uint16"),
    ".tif": ("uint8", "uint16", "float32"),
    ".tiff": ("uint8", "uint16", "float32"),
    ".jpg": ("uint8",),
    ".jpeg": ("uint8",),
    ".bmp": ("uint8",),
    ".webp": ("uint8",),
    ".ppm": ("uint8", "uint16"),
    ".pgm": ("uint8", "uint16"),
    ".pnm": ("uint8", "uint16"),
}


#: File extensions read as RAW frames through rawpy (LibRaw's camera formats and DNG).
RAW_EXTENSIONS = (".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
                  ".rwl", ".pef", ".srw", ".x3f", ".3fr", ".fff", ".iiq", ".erf", ".kdc", ".dcr", ".mef", ".mos",
                  ".mrw", ".raw")

RAW_NEEDS_RAWPY = "RAW frames need rawpy: pip install pyfusion-mfif[raw]"


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, "").strip() or default)
    except ValueError:
        return default
    return value if value > 0 else default


#: Largest image (pixels) :func:`read_image` decodes: OpenCV's ``CV_IO_MAX_IMAGE_PIXELS`` (default 2^30; the
#: environment variable of that name, read at import as OpenCV reads it once, changes both).
MAX_IMAGE_PIXELS = _env_int("CV_IO_MAX_IMAGE_PIXELS", 1 << 30)
#: Largest width and height: OpenCV's ``CV_IO_MAX_IMAGE_WIDTH`` / ``CV_IO_MAX_IMAGE_HEIGHT`` (default 2^20).
MAX_IMAGE_SIDE = (_env_int("CV_IO_MAX_IMAGE_WIDTH", 1 << 20), _env_int("CV_IO_MAX_IMAGE_HEIGHT", 1 << 20))


class FusionInputError(ValueError):
    """An input or output the pipeline cannot use; its message is one line meant for the user."""


def _quiet_cv2(fn, *args):
    """Call an OpenCV function with its log output silenced (codec warnings would otherwise hit stderr)."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:  # pragma: no cover - very old OpenCV
        return fn(*args)
    old = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return fn(*args)
    finally:
        logging.setLogLevel(old)


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_stderr():
    """Capture what native decoders (libpng, libjpeg, libtiff, LibRaw) print on file descriptor 2 in the block.

    Yields a list that, after the block, holds the non-empty lines printed (the first 4 KiB). The descriptor is
    the process's: output of other threads in that window is captured (and dropped) too.
    """
    said: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as tmp:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no standard error to capture
            yield said
            return
        os.dup2(tmp.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            said.extend(" ".join(x.split()) for x in tmp.read(4096).decode(errors="replace").splitlines() if x.strip())


def _looks_truncated(data: bytes) -> bool:
    """True when a PNG lacks its final IEND chunk (libpng may decode such a file partially).

    JPEG and TIFF are left to the decoder, which refuses truncated files; a JPEG's end marker is not checked
    because valid files may carry long trailers (e.g. motion-photo video) after it.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" not in data[-64:]
    return False


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_ARITHMETIC = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` declared in a PNG (IHDR), JPEG (first SOFn frame header) or classic TIFF (first image
    file directory), else ``None``.

    Only the header is parsed (nothing is decoded); ``None`` for other formats or a header that cannot be read
    (the decoder then has its say).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return None
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    frame = _jpeg_frame(data)
    return frame[1:] if frame is not None else None


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """``(SOFn marker, width, height)`` of a JPEG's first frame header, else ``None``."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            i += 2
            continue
        if marker == 0xD9 or marker == 0xDA:  # end of image / start of scan before any frame header
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            return marker, int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if length < 2:
            return None
        i += 2 + length
    return None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type


def _check_data_size(name: str, data: bytes) -> None:
    """Refuse a PNG or Huffman-coded JPEG whose header declares more pixels than the file's bytes can encode.

    A JPEG spends at least one bit per 8x8 block of its first component (the DC code); deflate expands at most
    1032:1, and a PNG holds at least one filter byte per row and ``bit depth x channels`` bits per pixel. A header
    above these bounds is corrupt or the file truncated, and the decoders would first allocate the whole declared
    image (a 2 kB JPEG declaring 30000x30000 pixels: 18 s and 5 GB in libjpeg, which grey-fills what is missing).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 26 and data[12:16] == b"IHDR":
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        bits = data[24] * _PNG_CHANNELS.get(data[25], 1)
        needed = height * (1 + (width * bits + 7) // 8)
        if needed > 1032 * len(data) + 1024:
            raise FusionInputError(f"{name}: declares {width}x{height} pixels, more than its {len(data)} bytes can "
                                   f"hold (corrupt or truncated PNG)")
        return
    frame = _jpeg_frame(data)
    if frame is None or frame[0] in _JPEG_ARITHMETIC:
        return
    _, width, height = frame
    if -(-width // 8) * -(-height // 8) > 8 * len(data):
        raise FusionInputError(f"{name}: declares {width}x{height} pixels, more than its {len(data)} bytes can hold "
                               f"(corrupt or truncated JPEG)")


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and height (tags 256, 257) of a classic TIFF's first image file directory, else ``None``."""
    order = "little" if data[:2] == b"II" else "big"
    u16 = lambda i: int.from_bytes(data[i:i + 2], order)  # noqa: E731
    u32 = lambda i: int.from_bytes(data[i:i + 4], order)  # noqa: E731
    if len(data) < 8:
        return None
    ifd = u32(4)
    if ifd + 2 > len(data):
        return None
    size = {}
    for k in range(u16(ifd)):
        e = ifd + 2 + 12 * k
        if e + 12 > len(data):
            break
        tag, typ = u16(e), u16(e + 2)
        if tag in (256, 257) and typ in (3, 4):
            size[tag] = u16(e + 8) if typ == 3 else u32(e + 8)
    return (size[256], size[257]) if len(size) == 2 else None


def _check_decoder_limit(name: str, width: int, height: int) -> None:
    max_w, max_h = MAX_IMAGE_SIDE
    if width * height > MAX_IMAGE_PIXELS or width > max_w or height > max_h:
        raise FusionInputError(f"{name}: image of {width}x{height} exceeds the decoder limit "
                               f"({MAX_IMAGE_PIXELS} pixels, {max_w}x{max_h} at most; CV_IO_MAX_IMAGE_PIXELS)")


def read_image(path) -> np.ndarray:
    """Read an image file as an RGB or grayscale array, keeping its bit depth.

    Parameters
    ----------
    path : str or os.PathLike
        Image file (any format OpenCV decodes; 16-bit PNG/TIFF keep 16 bits), or a RAW frame (an extension in
        :data:`RAW_EXTENSIONS`; needs rawpy), read as linear 16-bit RGB.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, 3)`` array (RGB order) of dtype uint8, uint16 or float32. An alpha channel is
        dropped.

    Raises
    ------
    FusionInputError
        Missing, unreadable, truncated or undecodable file; an image above the decoder limit
        (:data:`MAX_IMAGE_PIXELS`; checked from the PNG/JPEG/TIFF header, or LibRaw's, before decoding) or above
        what the PNG/JPEG file's bytes can encode;
        unsupported pixel type; non-finite values; a RAW frame without rawpy installed or one LibRaw does not read.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207.
    """
    p = Path(path)
    if not p.exists():
        raise FusionInputError(f"{p}: no such file")
    if p.is_dir():
        raise FusionInputError(f"{p}: is a directory, not an image")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise FusionInputError(f"{p}: cannot read ({e.strerror or e})") from None
    if not data:
        raise FusionInputError(f"{p}: empty file")
    if p.suffix.lower() in RAW_EXTENSIONS:
        return _read_raw(p, data)
    if _looks_truncated(data):
        raise FusionInputError(f"{p}: truncated image file")
    size = image_header_size(data)
    if size is not None:
        _check_decoder_limit(str(p), *size)
    _check_data_size(str(p), data)
    img, msg = None, ""
    with _native_stderr() as said:  # libpng/libjpeg/libtiff messages: into the one-line error, not on stderr
        try:
            img = _quiet_cv2(cv2.imdecode, np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as e:  # e.g. a TIFF above the limit: OpenCV asserts instead of returning None
            msg = " ".join(str(e).strip().splitlines()[-1:]).strip() or "decoder error"
    if "CV_IO_MAX_IMAGE" in msg:
        raise FusionInputError(f"{p}: image exceeds the decoder limit ({MAX_IMAGE_PIXELS} pixels; "
                               f"CV_IO_MAX_IMAGE_PIXELS)")
    if img is None or img.size == 0:
        why = said[-1] if said else msg or "unreadable, truncated or unsupported format"
        raise FusionInputError(f"{p}: cannot decode image ({why})")
    cut = [x for x in said if "premature end" in x.lower()]  # libjpeg fills a truncated scan with grey
    if cut:
        raise FusionInputError(f"{p}: truncated image data ({cut[0]})")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        else:
            raise FusionInputError(f"{p}: unsupported channel count {img.shape[2]}")
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise FusionInputError(f"{p}: unsupported pixel type {img.dtype} (use 8- or 16-bit images)")
    if img.dtype == np.float32:
        _check_float(img, str(p))
    return np.ascontiguousarray(img)


def _read_raw(p: Path, data: bytes) -> np.ndarray:
    """A RAW frame as linear 16-bit RGB: LibRaw (through rawpy) demosaics it with the camera white balance."""
    try:
        import rawpy
    except ImportError:
        raise FusionInputError(f"{p}: {RAW_NEEDS_RAWPY}") from None
    img, msg = None, ""
    with _native_stderr() as said:
        try:
            with rawpy.imread(io.BytesIO(data)) as raw:
                _check_decoder_limit(str(p), raw.sizes.raw_width, raw.sizes.raw_height)
                img = raw.postprocess(gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True)
        except (rawpy.LibRawError, rawpy.NotSupportedError) as e:
            msg = f"{type(e).__name__}: {' '.join(str(e).split()) or 'no detail'}"
    if img is None:
        raise FusionInputError(f"{p}: not a RAW file LibRaw reads ({said[-1] if said else msg})")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint16 or img.size == 0:
        raise FusionInputError(f"{p}: RAW decoded to an unsupported image ({img.shape}, {img.dtype})")
    return np.ascontiguousarray(img)


def _check_float(img: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(img)):
        raise FusionInputError(f"{name}: contains non-finite values (NaN or inf)")
    if img.size and (img.min() < 0.0 or img.max() > 1.0):
        raise FusionInputError(f"{name}: float images must lie in [0, 1] (got [{img.min():g}, {img.max():g}])")


def validate_images(images, *, names=None, min_size: int = 1, min_reason: str = "") -> list[np.ndarray]:
    """Check that source images can be fused together; return them as arrays (not copied, never modified).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        At least two arrays of the same shape ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` and the same dtype
        (uint8, uint16, float32 or float64; floats finite and in [0, 1]), with ``H, W >= min_size``.
    names : sequence of str, optional
        Labels for error messages (e.g. file names); default ``image 1``, ``image 2``, ...
    min_size : int, optional
        Smallest side the fusion method can take (the CNN: its 16x16 patch), and ``min_reason`` says why.

    Returns
    -------
    list of numpy.ndarray

    Raises
    ------
    FusionInputError
        With a one-line message naming the offending image.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207.
    """
    arrays = list(images)
    if len(arrays) < 2:
        raise FusionInputError(f"need at least two source images, got {len(arrays)}")
    if names is None:
        names = [f"image {k + 1}" for k in range(len(arrays))]
    names = [str(n) for n in names]
    out = []
    for name, img in zip(names, arrays):
        if not isinstance(img, np.ndarray):
            raise FusionInputError(f"{name}: not a numpy array (got {type(img).__name__})")
        if img.dtype not in SUPPORTED_DTYPES:
            raise FusionInputError(f"{name}: unsupported pixel type {img.dtype} (uint8, uint16 or float in [0, 1])")
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
            raise FusionInputError(
                f"{name}: unsupported shape {img.shape} (expected HxW, HxWx1 or HxWx3; drop any alpha channel)")
        if img.shape[0] < min_size or img.shape[1] < min_size:
            raise FusionInputError(f"{name}: {img.shape[1]}x{img.shape[0]} is smaller than {min_size}x{min_size}"
                                   + (f" ({min_reason})" if min_reason else ""))
        if img.dtype.kind == "f":
            _check_float(img, name)
        out.append(img)
    first, ref = names[0], out[0]
    for name, img in zip(names[1:], out[1:]):
        if _channels(img) != _channels(ref):
            raise FusionInputError(
                f"{name}: {_channels(img)} channel(s) but {first} has {_channels(ref)}; all sources must match")
        if img.shape[:2] != ref.shape[:2]:
            raise FusionInputError(
                f"{name}: size {img.shape[1]}x{img.shape[0]} differs from {first} ({ref.shape[1]}x{ref.shape[0]})")
        if img.shape != ref.shape:
            raise FusionInputError(f"{name}: shape {img.shape} differs from {first} {ref.shape}")
        if img.dtype != ref.dtype:
            raise FusionInputError(f"{name}: pixel type {img.dtype} differs from {first} ({ref.dtype})")
    return out


def gray_unit32(img: np.ndarray) -> np.ndarray:
    """float32 grayscale in [0, 1] of an image as :func:`to_unit` scales it, with :func:`to_gray`'s weights,
    computed in float32 by OpenCV (per pixel: the result does not depend on the thread count). The fast stack
    path's gray; within 1e-6 of ``to_gray(to_unit(img))``.
    """
    x = np.asarray(img)
    scale = _SCALE.get(x.dtype, 1.0)
    if x.ndim == 3 and x.shape[2] == 3:
        m = np.array([RGB2GRAY], np.float32) / np.float32(scale)
        return cv2.transform(x.astype(np.float32), m)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    if x.ndim != 2:
        raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {x.shape}")
    return x.astype(np.float32) * np.float32(1.0 / scale)


def to_gray(img: np.ndarray) -> np.ndarray:
    """Grayscale with MATLAB ``rgb2gray`` weights (0.2989, 0.5870, 0.1140) as float64; 2-D input passes.

    The authors' convention for the CNN (``img1_gray = rgb2gray(img1)`` in their released code) and for the
    training data. Linear, so it serves any scale (0-255 or [0, 1]); RGB channel order (as :func:`read_image`).
    The metrics follow MATLAB's own rounding convention instead (:func:`pyfusion.metrics._common.rgb2gray`).

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207.
    """
    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 2:
        return x
    if x.ndim == 3 and x.shape[2] == 1:
        return x[:, :, 0]
    if x.ndim == 3 and x.shape[2] == 3:
        r, g, b = RGB2GRAY
        return r * x[:, :, 0] + g * x[:, :, 1] + b * x[:, :, 2]
    raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {x.shape}")


def _channels(img: np.ndarray) -> int:
    return 1 if img.ndim == 2 else img.shape[2]


def to_unit(img: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Return a float64 (or ``dtype``) copy of ``img`` scaled to [0, 1] (``/255`` for uint8, ``/65535`` for uint16).

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207 (authors' code: ``img1 = double(A)/255``).
    """
    scale = _SCALE.get(img.dtype)
    if scale is None:
        return np.array(img, dtype=dtype, copy=True)
    return img.astype(dtype) / np.asarray(scale, dtype)


def from_unit(x: np.ndarray, dtype) -> np.ndarray:
    """Convert [0, 1] floats to ``dtype`` as MATLAB's ``uint8(x*255)`` does: round half away from zero, saturate.

    Float dtypes are clipped to [0, 1] and cast without rounding.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207 (authors' code: ``F = uint8(imgf*255)``).
    """
    dtype = np.dtype(dtype)
    scale = _SCALE.get(dtype)
    if scale is None:
        return np.clip(x, 0.0, 1.0).astype(dtype)
    # x >= 0 after the clip, so floor(v + 0.5) is round-half-away-from-zero.
    return np.floor(np.clip(x, 0.0, 1.0) * scale + 0.5).astype(dtype)


def map_to_uint8(m: np.ndarray) -> np.ndarray:
    """An 8-bit picture of a [0, 1] map (clipped, ``round(255 * m)``) for saving with :func:`write_image`."""
    return from_unit(np.asarray(m, dtype=np.float64), np.uint8)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path, data) -> Path:
    """Write ``data`` (str as UTF-8, or bytes) to ``path`` atomically.

    The bytes go to a temporary file in ``path``'s own directory (so :func:`os.replace` never crosses a file
    system), which gets the usual permissions (``0o666`` less the umask; :func:`tempfile.mkstemp` makes 0600), is
    flushed, fsync'ed and moved over ``path`` with :func:`os.replace`. On any failure (an exception, including
    KeyboardInterrupt) the temporary file is removed, ``path`` is untouched, and the exception propagates.
    :func:`write_image` writes through this function.
    """
    p = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def check_output_format(path, dtype) -> str:
    """Check that ``path``'s format (its extension) stores ``dtype`` pixels; returns the lower-case extension.

    Raises
    ------
    FusionInputError
        An unknown output format, or one that cannot store ``dtype`` (16-bit images need .png, .tif or PNM).
    """
    p, dtype = Path(path), np.dtype(dtype)
    ext = p.suffix.lower()
    if ext not in _WRITE_DTYPES:
        raise FusionInputError(f"{p}: unsupported output format {ext or '(no extension)'!r} "
                               f"(use one of {', '.join(sorted(_WRITE_DTYPES))})")
    if dtype.name not in _WRITE_DTYPES[ext]:
        raise FusionInputError(f"{p}: {ext} cannot store {dtype} pixels (use {'/'.join(_WRITE_DTYPES[ext])}; "
                               f"16-bit images need .png or .tif)")
    return ext


def write_image(path, img: np.ndarray, *, force: bool = False) -> Path:
    """Write an RGB or grayscale array atomically; the format follows the file extension.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist.
    img : numpy.ndarray
        ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` RGB array. uint8 for every format; uint16 for PNG, TIFF
        and PNM; float32 for TIFF only.
    force : bool, optional
        Replace an existing file (default: refuse).

    Returns
    -------
    pathlib.Path
        The destination.

    Raises
    ------
    FusionInputError
        Existing destination without ``force``, missing directory, unsupported format or pixel type, or a
        failed write. Nothing is left behind in any of these cases.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207.
    """
    p = Path(path)
    ext = check_output_format(p, img.dtype)
    if p.exists() and not force:
        raise FusionInputError(f"{p}: already exists (use --force to overwrite)")
    if p.is_dir():
        raise FusionInputError(f"{p}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise FusionInputError(f"{p}: directory {parent} does not exist")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        if img.shape[2] != 3:
            raise FusionInputError(f"{p}: cannot write {img.shape[2]} channels")
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    try:
        ok, buf = _quiet_cv2(cv2.imencode, ext, np.ascontiguousarray(img))
    except cv2.error as e:
        raise FusionInputError(f"{p}: cannot encode image ({str(e).strip().splitlines()[-1]})") from None
    if not ok:
        raise FusionInputError(f"{p}: cannot encode image as {ext}")
    try:
        return write_atomic(p, buf.tobytes())
    except OSError as e:
        raise FusionInputError(f"{p}: cannot write ({e.strerror or e})") from None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bytes of a file :func:`frame_header` reads first (a JPEG whose frame header lies further is read on).
_HEADER_BYTES = 1 << 16


def frame_header(path) -> tuple[int, int, int | None, np.dtype | None] | None:
    """What :func:`read_image` would return for ``path``, from the file's header alone (no pixels decoded).

    Parameters
    ----------
    path : str or os.PathLike
        An image file.

    Returns
    -------
    (width, height, channels, dtype) or None
        The size from a PNG, JPEG or classic TIFF header; ``channels`` (1 or 3, as :func:`read_image` returns
        them: alpha dropped, palettes expanded) and ``dtype`` (uint8, uint16 or float32) from PNG (IHDR) and TIFF
        (first image file directory) headers, None where the header does not settle them (JPEG, unusual TIFF
        layouts). None for other formats (RAW, WebP, ...) or a header that cannot be read: the decoder then has
        its say.

    Raises
    ------
    FusionInputError
        A missing, empty or unreadable file (the one-line messages of :func:`read_image`).
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(_HEADER_BYTES)
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                return _tiff_header(fh, "little" if head[:2] == b"II" else "big")
            if head.startswith(b"\xff\xd8") and _jpeg_frame(head) is None:
                head += fh.read()  # long APPn segments (EXIF thumbnails) before the frame header
    except FileNotFoundError:
        raise FusionInputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise FusionInputError(f"{p}: is a directory, not an image") from None
    except OSError as e:
        raise FusionInputError(f"{p}: cannot read ({e.strerror or e})") from None
    if not head:
        raise FusionInputError(f"{p}: empty file")
    if head.startswith(_PNG_SIGNATURE) and len(head) >= 26 and head[12:16] == b"IHDR":
        depth, colour = head[24], head[25]  # colour types 2, 3, 4, 6 (RGB, palette, grey + alpha, RGBA) read as RGB
        channels = 1 if colour == 0 else 3 if colour in (2, 3, 4, 6) else None
        return (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), channels,
                np.dtype(np.uint16 if depth == 16 else np.uint8))
    size = image_header_size(head)
    return None if size is None else (*size, None, None)


def _tiff_header(fh, order: str) -> tuple[int, int, int | None, np.dtype | None] | None:
    """:func:`frame_header` of a classic TIFF from its open file ``fh`` (the first directory may lie anywhere)."""
    def read(at: int, n: int) -> bytes:
        fh.seek(at)
        return fh.read(n)

    def u(b: bytes) -> int:
        return int.from_bytes(b, order)

    ifd = u(read(4, 4))
    entries = read(ifd + 2, 12 * u(read(ifd, 2)))
    tags = {}  # tag -> first value: width 256, height 257, bits 258, photometric 262, samples 277, format 339
    for e in (entries[i:i + 12] for i in range(0, len(entries) - 11, 12)):
        tag, typ, count = u(e[0:2]), u(e[2:4]), u(e[4:8])
        size = {3: 2, 4: 4}.get(typ)
        if tag in (256, 257, 258, 262, 277, 339) and size and count:
            tags[tag] = u(e[8:8 + size] if count * size <= 4 else read(u(e[8:12]), size))
    if 256 not in tags or 257 not in tags:
        return None
    bits, samples, palette = tags.get(258, 1), tags.get(277, 1), tags.get(262) == 3
    channels = 3 if palette or samples in (3, 4) else 1 if samples == 1 else None
    dtype = {(1, 8): np.uint8, (1, 16): np.uint16, (3, 32): np.float32}.get((tags.get(339, 1), bits))
    return tags[256], tags[257], channels, None if dtype is None or palette else np.dtype(dtype)


class FrameSequence(Sequence):
    """The frames of a focus stack, read from their files when they are used: any number of frames in the
    memory of one.

    A read-only sequence (``len``, ``frames[k]``, iteration, slices) that decodes frame ``k``
    (:func:`read_image`) each time it is asked for another frame than the last one, and keeps only that last
    frame. Made for methods that go over the frames in passes, one frame at a time (the one-pass stack,
    :mod:`pyfusion.methods.stack`, and the series of pairs): the pixels they get are those of
    :func:`read_image`, so the fusion is the same as of the frames held in memory.

    Every frame is checked when the sequence is made, without decoding it: the first frame is decoded and checked
    (:func:`validate_images`), every other file's header (:func:`frame_header`: it exists, its size, and where the
    header says, its channels and bit depth) is compared with the first frame. A frame is checked again when it is
    decoded; what the header could not show (a frame that does not decode, a JPEG's channels) is then the same
    one-line :class:`FusionInputError`, naming the frame's file.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        Two or more image files of one size, channel count and bit depth.
    min_size : int, optional
        Smallest side the fusion method takes, and ``min_reason`` says why (as :func:`validate_images`).

    Attributes
    ----------
    names : tuple of str
        The frames' paths as given (their names in errors).
    shape, dtype
        Of every frame (the first frame's).
    decodes : int
        Frames decoded so far (including the first).

    Raises
    ------
    FusionInputError
        Fewer than two paths, a missing or unreadable file, a frame that differs from the first.
    """

    def __init__(self, paths, *, min_size: int = 1, min_reason: str = ""):
        if isinstance(paths, (str, os.PathLike)):
            raise FusionInputError("frames must be a sequence of two or more paths")
        self._files = tuple(str(p) for p in paths)
        if len(self._files) < 2:
            raise FusionInputError(f"need at least two source images, got {len(self._files)}")
        self._min = {"min_size": min_size, "min_reason": min_reason}
        self._index = tuple(range(len(self._files)))
        self._last = None
        self.decodes = 1
        first = read_image(self._files[0])
        self.shape, self.dtype = first.shape, first.dtype
        self._reference = np.broadcast_to(np.zeros((), first.dtype), first.shape)  # frame 1 without its pixels
        self._check(0, first)
        self._last = (0, first)
        # trust a header's channels and bit depth where the first frame's header foretells its own decoded frame
        told = frame_header(self._files[0])
        trusted = told is not None and told[2:] == (_channels(first), first.dtype)
        for k in range(1, len(self._files)):
            told = frame_header(self._files[k])
            if told is not None:
                width, height, channels, dtype = told
                channels = channels if trusted and channels is not None else _channels(first)
                dtype = dtype if trusted and dtype is not None else first.dtype
                shape = (height, width) + ((3,) if channels == 3 else ())
                self._check(k, np.broadcast_to(np.zeros((), dtype), shape))

    def _check(self, k: int, img: np.ndarray) -> None:
        """Frame ``k`` (of the files) against the first frame: :func:`validate_images`'s one-line errors."""
        validate_images([self._reference, img], names=[self._files[0], self._files[k]], **self._min)

    @property
    def names(self) -> tuple:
        return tuple(self._files[i] for i in self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k):
        if isinstance(k, slice):
            view = object.__new__(type(self))
            view.__dict__.update(self.__dict__, _index=self._index[k], _last=None, decodes=0)
            return view
        k = operator.index(k)
        if not -len(self) <= k < len(self):
            raise IndexError(f"frame {k} of {len(self)}")
        i = self._index[k]
        if self._last is None or self._last[0] != i:
            self._last = None  # the previous frame goes before the next one is decoded
            img = read_image(self._files[i])
            self.decodes += 1
            self._check(i, img)
            self._last = (i, img)
        return self._last[1]

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} frames, {self.shape}, {self.dtype})"
