"""Phase-congruency based fusion metric Q_P (Zhao, Laganiere & Liu).

Phase congruency is computed with Kovesi's PC_2 measure (log-Gabor filter bank, noise compensation,
frequency-spread weighting) in the variant of the fusion-metric toolbox (``myphasecong3``): 4 scales,
6 orientations, smallest wavelength 3, scale factor 2.1, sigmaOnf 0.55, dThetaOnSigma 1.2, k = 2,
cutOff 0.5, g = 10. It returns the phase congruency map and the maximum / minimum moments of the phase
congruency covariance.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sfft

from ._common import check_triplet, filter2_sep, gaussian_1d

__all__ = ["qp", "phase_congruency"]

_EPS = 1e-4


def _lowpass(rows, cols, cutoff=0.45, n=15):
    x = (np.arange(cols) - (cols // 2)) / cols
    y = (np.arange(rows) - (rows // 2)) / rows
    radius = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2)
    return np.fft.fftshift(1.0 / (1.0 + (radius / cutoff) ** (2 * n)))


def _centred_range(n):
    if n % 2:
        return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1)
    return np.arange(-n / 2, n / 2) / n


@lru_cache(maxsize=2)  # one entry is ~50 MB for a 520x520 image
def _filter_bank(rows, cols, nscale, norient, min_wavelength, mult, sigma_on_f, d_theta_on_sigma):
    """Log-Gabor filters (frequency domain) and the image-independent noise-model sums, per orientation."""
    theta_sigma = np.pi / norient / d_theta_on_sigma
    x = _centred_range(cols)[None, :]
    y = _centred_range(rows)[:, None]
    radius = np.sqrt(x ** 2 + y ** 2)
    radius[rows // 2, cols // 2] = 1.0
    theta = np.arctan2(-y, x) + np.zeros_like(radius)
    radius = np.fft.ifftshift(radius)
    theta = np.fft.ifftshift(theta)
    sintheta, costheta = np.sin(theta), np.cos(theta)
    lp = _lowpass(rows, cols)
    log_gabor = []
    for s in range(nscale):
        fo = 1.0 / (min_wavelength * mult ** s)
        lg = np.exp(-(np.log(radius / fo)) ** 2 / (2 * np.log(sigma_on_f) ** 2)) * lp
        lg[0, 0] = 0.0
        log_gabor.append(lg)
    bank = []
    for o in range(norient):
        angl = o * np.pi / norient
        ds = sintheta * np.cos(angl) - costheta * np.sin(angl)
        dc = costheta * np.cos(angl) + sintheta * np.sin(angl)
        dtheta = np.abs(np.arctan2(ds, dc))
        spread = np.exp(-dtheta ** 2 / (2 * theta_sigma ** 2))
        filters = [lg * spread for lg in log_gabor]
        spatial = [sfft.ifft2(flt).real * np.sqrt(rows * cols) for flt in filters]
        sum_an2 = float(sum(np.sum(sp ** 2) for sp in spatial))
        sum_aiaj = 0.0
        for si in range(nscale - 1):
            for sj in range(si + 1, nscale):
                sum_aiaj += float(np.sum(spatial[si] * spatial[sj]))
        em_n = float(np.sum(filters[0] ** 2))
        bank.append((angl, filters, em_n, sum_an2, sum_aiaj))
    return bank


def phase_congruency(im, nscale=4, norient=6, min_wavelength=3, mult=2.1, sigma_on_f=0.55,
                     d_theta_on_sigma=1.2, k=2.0, cut_off=0.5, g=10.0):
    """Phase congruency (Kovesi's PC_2) with the conventions of the fusion-metric toolbox.

    Parameters
    ----------
    im : ndarray, 2-D
        Grey image (float).
    nscale, norient, min_wavelength, mult, sigma_on_f, d_theta_on_sigma, k, cut_off, g
        Filter-bank and noise-compensation parameters (toolbox defaults).

    Returns
    -------
    pc : ndarray
        Phase congruency, total weighted energy over total amplitude, in [0, 1].
    big_m, small_m : ndarray
        Maximum and minimum moments of the phase congruency covariance (edge / corner strength).

    References
    ----------
    .. [1] P. Kovesi, "Image features from phase congruency", Videre 1(3), 1999.
    .. [2] P. Kovesi, "Phase congruency detects corners and edges", Proc. DICTA 2003.
    """
    im = np.asarray(im, dtype=np.float64)
    rows, cols = im.shape
    bank = _filter_bank(rows, cols, int(nscale), int(norient), float(min_wavelength), float(mult),
                        float(sigma_on_f), float(d_theta_on_sigma))
    imagefft = sfft.fft2(im)
    total_energy = np.zeros((rows, cols))
    total_sum_an = np.zeros((rows, cols))
    covx2 = np.zeros((rows, cols))
    covy2 = np.zeros((rows, cols))
    covxy = np.zeros((rows, cols))
    for angl, filters, em_n, sum_an2, sum_aiaj in bank:
        eo = [sfft.ifft2(imagefft * flt) for flt in filters]
        re = [e.real for e in eo]
        imag = [e.imag for e in eo]
        amps = [np.abs(e) for e in eo]
        sum_an = np.sum(amps, axis=0)
        sum_e = np.sum(re, axis=0)
        sum_o = np.sum(imag, axis=0)
        max_an = np.max(amps, axis=0)
        x_energy = np.sqrt(sum_e ** 2 + sum_o ** 2) + _EPS
        mean_e = sum_e / x_energy
        mean_o = sum_o / x_energy
        energy = np.zeros((rows, cols))
        for e, o_ in zip(re, imag):
            energy += e * mean_e + o_ * mean_o - np.abs(e * mean_o - o_ * mean_e)
        median_e2n = np.median(amps[0] ** 2)
        mean_e2n = -median_e2n / np.log(0.5)
        noise_power = mean_e2n / em_n
        est_noise_energy2 = 2 * noise_power * sum_an2 + 4 * noise_power * sum_aiaj
        tau = np.sqrt(est_noise_energy2 / 2)
        est_noise_energy = tau * np.sqrt(np.pi / 2)
        est_noise_sigma = np.sqrt((2 - np.pi / 2) * tau ** 2)
        t = (est_noise_energy + k * est_noise_sigma) / 1.7
        energy = np.maximum(energy - t, 0.0)
        width = sum_an / (max_an + _EPS) / len(filters)
        weight = 1.0 / (1.0 + np.exp((cut_off - width) * g))
        weighted = weight * energy
        total_sum_an += sum_an
        total_energy += weighted
        with np.errstate(invalid="ignore", divide="ignore"):
            pc_o = weighted / sum_an
        covx = pc_o * np.cos(angl)
        covy = pc_o * np.sin(angl)
        covx2 += covx ** 2
        covy2 += covy ** 2
        covxy += covx * covy
    pc = total_energy / (total_sum_an + _EPS)
    norient = len(bank)
    covx2 /= norient / 2
    covy2 /= norient / 2
    covxy /= norient
    denom = np.sqrt(covxy ** 2 + (covx2 - covy2) ** 2) + _EPS
    big_m = (covy2 + covx2 + denom) / 2
    small_m = (covy2 + covx2 - denom) / 2
    return pc, big_m, small_m


_WIN = gaussian_1d(11, 1.5)
_C = 1e-4
_FEATURE_THRESHOLD = 0.1


def _masked_correlation(x1, x2, xmax, xf, m1, m2, m3):
    """Toolbox ``correlation_coeffcient``: best local (Gaussian-window) correlation with the fused map."""
    def filt(z):
        return filter2_sep(z, _WIN, _WIN, "same")

    x1 = m1 * x1
    x2 = m2 * x2
    xmax = m3 * xmax
    mu1, mu2, muf, mum = filt(x1), filt(x2), filt(xf), filt(xmax)
    s1 = filt(x1 * x1) - mu1 * mu1
    s2 = filt(x2 * x2) - mu2 * mu2
    sm = filt(xmax * xmax) - mum * mum
    sf = filt(xf * xf) - muf * muf
    s1f = filt(x1 * xf) - mu1 * muf
    s2f = filt(x2 * xf) - mu2 * muf
    smf = filt(xmax * xf) - mum * muf
    res = np.zeros((3,) + x1.shape)
    for i, (m, sxf, sx) in enumerate(((m1, s1f, s1), (m2, s2f, s2), (m3, smf, sm))):
        sel = m.astype(bool)
        res[i][sel] = (sxf[sel] + _C) / (np.sqrt(np.abs(sx[sel] * sf[sel])) + _C)
    best = res.max(axis=0)
    area = float(np.sum(m3))
    if area == 0:
        return float("nan")
    return float(best.sum() / area)


def qp(a, b, f):
    """Phase-congruency based fusion metric Q_P (Zhao et al.).

    For each image the phase congruency P and the maximum / minimum moments M, m of its covariance are
    computed (:func:`phase_congruency`). For each feature map, the source maps (and their pixelwise
    maximum, selected by the larger phase congruency) are masked where their phase congruency exceeds 0.1;
    at each pixel the best of the three local correlation coefficients with the fused map (Gaussian window
    11x11, sigma 1.5, zero-padded 'same' filtering, C = 1e-4) is kept and the sum is divided by the area of
    the maximum mask. ``Q_P = P_p * P_M * P_m``, the product over the three feature maps. Symmetric in A
    and B; higher is better. For ``A = B = F`` it is close to, but below, 1: as in the toolbox the source
    maps are masked (zero where P <= 0.1) before the local statistics are taken, the fused map is not.
    The input images are used as given (no normalisation). Returns NaN when no pixel of the sources has
    phase congruency above 0.1.

    Parameters
    ----------
    a, b : array_like
        Source images (2-D grey or (H, W, 3) RGB, 8-bit scale).
    f : array_like
        Fused image, same shape.

    Returns
    -------
    float

    References
    ----------
    .. [1] J. Zhao, R. Laganiere, Z. Liu, "Performance assessment of combinative pixel-level image fusion
       based on an absolute feature measurement", Int. J. Innovative Computing, Information and Control
       3(6A), 2007, 1433-1447.
    .. [2] P. Kovesi, "Image features from phase congruency", Videre 1(3), 1999.
    """
    a, b, f = check_triplet(a, b, f)
    pa, ma, na = phase_congruency(a)
    pb, mb, nb = phase_congruency(b)
    pf, mf, nf = phase_congruency(f)
    pick = pa > pb
    pmax = np.where(pick, pa, pb)
    mmax = np.where(pick, ma, mb)
    nmax = np.where(pick, na, nb)
    m1 = (pa > _FEATURE_THRESHOLD).astype(np.float64)
    m2 = (pb > _FEATURE_THRESHOLD).astype(np.float64)
    m3 = (pmax > _FEATURE_THRESHOLD).astype(np.float64)
    r_p = _masked_correlation(pa, pb, pmax, pf, m1, m2, m3)
    r_big = _masked_correlation(ma, mb, mmax, mf, m1, m2, m3)
    r_small = _masked_correlation(na, nb, nmax, nf, m1, m2, m3)
    return float(r_p * r_big * r_small)
