"""Alpha mattes and foreground colours from a frame and its trimap, with pymatting's classical
solvers (closed-form, KNN, large-kernel): the step the trimaps exist for.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass

import numpy as np

from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN

log = logging.getLogger(__name__)

METHODS = ("cf", "knn", "lkm")


class FrameError(Exception):
    """A frame that cannot be matted as given (the message says why); the others go on."""


def check_inputs(image: np.ndarray, labels: np.ndarray) -> None:
    """FrameError for a trimap no alpha can be given for: another size, or nothing known at all."""
    if image.shape[:2] != labels.shape:
        raise FrameError(
            f"the trimap is {labels.shape[1]}x{labels.shape[0]} but the frame is {image.shape[1]}x{image.shape[0]}"
        )
    if not (labels == FOREGROUND).any() and not (labels == BACKGROUND).any():
        raise FrameError("the trimap has no foreground and no background: nothing is known to matte from")


def one_sided(labels: np.ndarray) -> str | None:
    """Why a trimap's alpha needs no solver, or None: with no sure foreground (the subject has
    left the frame, or only its soft edge is left) the only alpha the trimap allows without a
    foreground colour is 0 in its unknown band; with no sure background, 1."""
    if not (labels == FOREGROUND).any():
        return "no sure foreground: alpha 0 in its unknown band"
    if not (labels == BACKGROUND).any():
        return "no sure background: alpha 1 in its unknown band"
    return None


def trimap_levels(labels: np.ndarray) -> np.ndarray:
    """Labels (0/1/2) -> pymatting's trimap: 0 background, 0.5 unknown, 1 foreground."""
    return np.array([0.0, 0.5, 1.0])[labels]


@dataclass
class Solver:
    """One matting method with its solver settings.

    method: cf (closed-form matting, incomplete-Cholesky preconditioned CG), knn (KNN matting)
        or lkm (large-kernel matting).
    tolerance: relative residual at which the conjugate-gradient solver stops (pymatting's rtol).
    max_iterations: at most this many solver iterations.
    """

    method: str = "cf"
    tolerance: float = 1e-7
    max_iterations: int = 10000

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")

    def alpha(self, image: np.ndarray, labels: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """Alpha (H x W float64 in [0, 1]) of ``image`` (H x W x 3 float64 RGB in [0, 1]) for the
        trimap ``labels``; ``start``: an earlier alpha (the previous frame's) the solver starts from.
        Known pixels keep their trimap value. Raises FrameError for unusable inputs."""
        import pymatting  # imported here: numba compiles on first use, and only matting needs it

        check_inputs(image, labels)
        trimap = trimap_levels(labels)
        if not (labels == UNKNOWN).any():
            return trimap.copy()
        if one_sided(labels) is not None:
            return np.full(labels.shape, 0.0 if not (labels == FOREGROUND).any() else 1.0)
        cg_kwargs: dict = {"rtol": self.tolerance, "maxiter": self.max_iterations}
        if start is not None and start.shape == labels.shape:
            guess = np.where(labels == UNKNOWN, start, trimap).ravel()
            # cf solves for the unknown pixels only; knn and lkm for every pixel
            cg_kwargs["x0"] = guess[(labels == UNKNOWN).ravel()] if self.method == "cf" else guess
        estimate = {
            "cf": pymatting.estimate_alpha_cf,
            "knn": pymatting.estimate_alpha_knn,
            "lkm": pymatting.estimate_alpha_lkm,
        }[self.method]
        chatter = io.StringIO()
        try:
            with contextlib.redirect_stdout(chatter):  # pymatting prints its preconditioner's retries
                alpha = estimate(image, trimap, cg_kwargs=cg_kwargs)
        except ValueError as exc:  # pymatting's own checks of degenerate inputs
            raise FrameError(f"{self.method} could not solve this frame ({exc})") from exc
        if chatter.getvalue().strip():
            log.debug("pymatting: %s", " ".join(chatter.getvalue().split())[:300])
        alpha = np.clip(alpha, 0.0, 1.0)
        alpha[labels == FOREGROUND], alpha[labels == BACKGROUND] = 1.0, 0.0
        return alpha


def foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Foreground colours (H x W x 3 float64 in [0, 1]) under ``alpha`` (pymatting's multi-level
    estimate): what to composite over a new background."""
    import pymatting

    return np.clip(pymatting.estimate_foreground_ml(image, alpha), 0.0, 1.0)


def composite(fg: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``fg * alpha + background * (1 - alpha)``, all float in [0, 1] (alpha H x W)."""
    return fg * alpha[..., None] + background * (1.0 - alpha[..., None])
