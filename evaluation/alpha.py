"""Alpha matte quality, with the video-matting metrics TCVOM reports and their scaling.

Per frame, over a region (the unknown band of the ground-truth trimap, or every pixel), with
alpha a and ground truth g in [0, 1]:

- SAD = sum |a - g| / 1000 (the image-matting convention, Rhemann et al.);
- mSAD = mean |a - g| x 1000 (TCVOM's table);
- MSE = mean (a - g)^2 x 1000 (TCVOM's table);
- SSDA = sqrt(sum (a - g)^2) (TCVOM);
- Grad = sum (|grad a| - |grad g|)^2 / 1000, gradients of Gaussian-derivative filters with
  sigma 1.4 (Rhemann et al.);
- dtSSD = sqrt(sum ((a_t - a_t+1) - (g_t - g_t+1))^2) over the region of frame t (TCVOM);
- MESSDdt = sum |(a_t - g_t)^2 - (a'_t+1 - g'_t+1)^2|, where ' warps frame t+1 back to t along
  the optical flow from t to t+1, over the region where the flow stays inside the frame (TCVOM,
  after Erofeev et al.). The flow is computed here with OpenCV's DIS optical flow on the frames.

A clip's score is the mean over its frames (the temporal ones over its pairs of adjacent frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

SCALING = {
    "SAD": "sum |a - g| / 1e3",
    "mSAD": "mean |a - g| x 1e3 (TCVOM)",
    "MSE": "mean (a - g)^2 x 1e3 (TCVOM)",
    "SSDA": "sqrt(sum (a - g)^2) (TCVOM)",
    "Grad": "sum (|grad a| - |grad g|)^2 / 1e3, sigma 1.4",
    "dtSSD": "sqrt(sum (da/dt - dg/dt)^2) (TCVOM)",
    "MESSDdt": "sum |(a - g)^2 - (a' - g')^2| along the flow (TCVOM)",
}
FRAME_METRICS = ("SAD", "mSAD", "MSE", "SSDA", "Grad")
PAIR_METRICS = ("dtSSD", "MESSDdt")


def _gauss_derivative_filters(sigma: float = 1.4) -> tuple[np.ndarray, np.ndarray]:
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * 1e-2))))
    xs = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(xs**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    derivative = -xs * gauss / sigma**2
    kernel_x = np.outer(gauss, derivative)
    kernel_x /= np.sqrt((np.abs(kernel_x) ** 2).sum())
    return kernel_x, kernel_x.T


_FILTERS = _gauss_derivative_filters()


def gradient_magnitude(alpha: np.ndarray) -> np.ndarray:
    gx = cv2.filter2D(alpha.astype(np.float64), -1, _FILTERS[0], borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(alpha.astype(np.float64), -1, _FILTERS[1], borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx**2 + gy**2)


def frame_metrics(alpha: np.ndarray, truth: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """The single-frame metrics (scaled, see the module docstring) over ``region`` (bool)."""
    diff = (alpha.astype(np.float64) - truth.astype(np.float64))[region]
    count = max(int(region.sum()), 1)
    grad = (gradient_magnitude(alpha) - gradient_magnitude(truth))[region]
    return {
        "SAD": float(np.abs(diff).sum() / 1e3),
        "mSAD": float(np.abs(diff).sum() / count * 1e3),
        "MSE": float((diff**2).sum() / count * 1e3),
        "SSDA": float(np.sqrt((diff**2).sum())),
        "Grad": float((grad**2).sum() / 1e3),
    }


def optical_flow(frame: np.ndarray, following: np.ndarray) -> np.ndarray:
    """Flow from ``frame`` to ``following`` (BGR or grey uint8): H x W x 2, frame(p) ~ following(p + flow)."""
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) if f.ndim == 3 else f for f in (frame, following)]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(grey[0], grey[1], None)


def pair_metrics(
    alphas: tuple[np.ndarray, np.ndarray],
    truths: tuple[np.ndarray, np.ndarray],
    region: np.ndarray,
    flow: np.ndarray | None,
) -> dict[str, float | None]:
    """dtSSD and MESSDdt between frame t and t+1 over frame t's ``region`` (MESSDdt None without a flow)."""
    a0, a1 = (a.astype(np.float64) for a in alphas)
    g0, g1 = (g.astype(np.float64) for g in truths)
    dt = ((a0 - a1) - (g0 - g1))[region]
    out: dict[str, float | None] = {"dtSSD": float(np.sqrt((dt**2).sum())), "MESSDdt": None}
    if flow is not None:
        height, width = a0.shape
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        warped_a = cv2.remap(a1.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR).astype(np.float64)
        warped_g = cv2.remap(g1.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR).astype(np.float64)
        valid = region & inside
        error = np.abs((a0 - g0) ** 2 - (warped_a - warped_g) ** 2)[valid]
        out["MESSDdt"] = float(error.sum())
    return out


@dataclass
class AlphaScores:
    """Means over a clip's frames (temporal metrics over its adjacent pairs), per region."""

    frames: int
    unknown: dict[str, float | None]
    overall: dict[str, float | None]
    scaling: dict[str, str] = field(default_factory=lambda: dict(SCALING))
    per_frame: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def score_alphas(
    alphas: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    unknown: Sequence[np.ndarray],
    names: Sequence[str],
    positions: Sequence[int] | None = None,
    frames: Sequence[np.ndarray] | None = None,
) -> AlphaScores:
    """Scores of predicted alpha mattes against true ones (H x W float in [0, 1]), in clip order.

    unknown: per frame, the region of the true trimap's unknown band (bool). positions: each
    frame's index in the clip (pairs only frames one apart). frames: the video frames, for the
    optical flow of MESSDdt (without them MESSDdt is None).
    """
    positions = list(range(len(alphas))) if positions is None else list(positions)
    regions = {"unknown": list(unknown), "overall": [np.ones_like(u, dtype=bool) for u in unknown]}
    totals = {}
    per_frame = {}
    for name, masks in regions.items():
        rows = [frame_metrics(a, g, m) for a, g, m in zip(alphas, truths, masks)]
        summary: dict[str, float | None] = {k: _mean([r[k] for r in rows]) for k in FRAME_METRICS}
        pairs = []
        for t in range(1, len(alphas)):
            if positions[t] - positions[t - 1] != 1:
                continue
            flow = optical_flow(frames[t - 1], frames[t]) if frames is not None else None
            pairs.append(pair_metrics((alphas[t - 1], alphas[t]), (truths[t - 1], truths[t]), masks[t - 1], flow))
        for key in PAIR_METRICS:
            summary[key] = _mean([p[key] for p in pairs])
        totals[name] = summary
        if name == "unknown":
            per_frame = {n: {k: round(v, 6) for k, v in r.items()} for n, r in zip(names, rows)}
    return AlphaScores(len(alphas), totals["unknown"], totals["overall"], per_frame=per_frame)


def format_alpha_table(rows: dict[str, AlphaScores]) -> str:
    """A plain-text table: a row per method and region, then the scaling of each column."""
    keys = (*FRAME_METRICS, *PAIR_METRICS)
    width = max(len(f"{method} (unknown band)") for method in rows) + 2
    header = f"{'':<{width}}" + "".join(f"{k:>10}" for k in keys)
    lines = [header, "-" * len(header)]
    for method, scores in rows.items():
        for region, label in (("unknown", "unknown band"), ("overall", "all pixels")):
            values = getattr(scores, region)
            cells = "".join(f"{values[k]:>10.3f}" if values[k] is not None else f"{'-':>10}" for k in keys)
            lines.append(f"{method + ' (' + label + ')':<{width}}{cells}")
    lines.append("scaling: " + "; ".join(f"{k}: {v}" for k, v in SCALING.items()))
    return "\n".join(lines)
