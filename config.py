"""Configuration (yacs): every key of the published TCVOM trimap-generation config, same defaults.

Keys added here (not in the published config) are marked "new". A yaml file may only set keys
that exist here: yacs rejects unknown keys, and this module turns that into a clear message.
"""

from __future__ import annotations

import ast
from pathlib import Path

from yacs.config import CfgNode

from utils.errors import UserError

_C = CfgNode()

_C.SYSTEM = CfgNode()
_C.SYSTEM.NUM_WORKERS = 4  # DataLoader workers for finetuning (0: load in the main process)
_C.SYSTEM.RANDOM_SEED = -1  # > 0: seed Python, NumPy and torch for a repeatable run
_C.SYSTEM.OUTDIR = "train_log"  # finetuning output root
_C.SYSTEM.EXP_SUFFIX = ""  # appended to the cfg file stem to name the run folder
_C.SYSTEM.CUDNN_BENCHMARK = True
_C.SYSTEM.CUDNN_DETERMINISTIC = False
_C.SYSTEM.CUDNN_ENABLED = True
# new: MiB of query features shared between the forward and backward parts of a segment (the same
# bits, less work; -1: the device's default, 2048 on the CPU and on a GPU a quarter of the memory free
# when the run starts; 0: off). The flag --share_query_mib overrides it.
_C.SYSTEM.SHARE_QUERY_MIB = -1
# new: propagate with the frames' shorter side scaled to this many pixels and the probabilities
# scaled back to the frame's size (0: the frames' own size, the published computation). The flag
# --max_internal_size overrides it.
_C.SYSTEM.MAX_INTERNAL_SIZE = 0
# new: a video clip's decoded frames are kept in RAM up to this many MiB, then in a temporary
# folder up to FRAME_SPILL_MIB (the backward passes read each segment again, in reverse).
_C.SYSTEM.FRAME_CACHE_MIB = 1024
_C.SYSTEM.FRAME_SPILL_MIB = 8192

_C.DATASET = CfgNode()
_C.DATASET.PATH = ""  # the clip folder (<stem>_rgb.png frames, <stem>_trimap.png keyframes) or a video file
_C.DATASET.TRIMAPS = ""  # new: a video clip's keyframe folder (<frame number>_trimap.png); empty: <stem>_trimaps/
# new: "FIRST-LAST": only these frames of the clip (positions in its sorted frames, a video's frame
# numbers), keyframes among them; empty: every frame. Names stay the frames' own.
_C.DATASET.FRAMES = ""
_C.DATASET.SUBSET = False

_C.FINETUNE = CfgNode()
_C.FINETUNE.VIDEO = ""
_C.FINETUNE.GT_IDX = []  # keyframe indices into the sorted frames; empty: every trimap file
_C.FINETUNE.SAVE_FREQ = 1000  # save a checkpoint every N steps; -1: only at the end
_C.FINETUNE.DILATION = 0  # > 0: widen the unknown band with an elliptical d x d kernel
_C.FINETUNE.MIN_UNKNOWN_PIXELS = 400  # new: each training crop holds at least this many unknown pixels

_C.TRAIN = CfgNode()
_C.TRAIN.UNKNOWN_WEIGHT = 5.0  # cross-entropy weight of the unknown class
_C.TRAIN.LOAD_CKPT = ""  # starting weights; empty: random weights (said loudly)
_C.TRAIN.LOAD_OPT = ""  # optimizer state to resume from
_C.TRAIN.FREEZE_BACKBONE = False  # True: also freeze the two ResNet trunks (not conv1_m / conv1_o)
_C.TRAIN.BATCH_SIZE_PER_GPU = 1
_C.TRAIN.VAL_BATCH_SIZE_PER_GPU = 1
_C.TRAIN.BASE_LR = 5e-4
_C.TRAIN.LR_STRATEGY = "const"  # const, poly or stair
_C.TRAIN.WEIGHT_DECAY = 1e-4
_C.TRAIN.TRAIN_INPUT_SIZE = (512, 512)  # (width, height) of the training crops
_C.TRAIN.VAL_INPUT_SIZE = (512, 512)
_C.TRAIN.MIN_EDGE_LENGTH = 1088
_C.TRAIN.OPTIMIZER = "adam"
_C.TRAIN.TOTAL_STEPS = 50
_C.TRAIN.PRINT_FREQ = 10
_C.TRAIN.IMAGE_FREQ = 500
_C.TRAIN.PRECISION = "fp32"  # new: fp32, tf32 (NVIDIA Ampere+), bf16 or fp16 (autocast; GPUs, AMX/AVX512-BF16 CPUs)
_C.TRAIN.CHANNELS_LAST = False  # new: channels_last tensors (no gain measured on the 2-core CPU; try on GPUs)


def get_cfg_defaults() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()


def _describe_yacs_error(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text


def load_config(cfg_path: str | Path | None, overrides: list[str] | None = None) -> CfgNode:
    """Defaults, then the yaml file, then trailing ``KEY VALUE`` overrides; frozen.

    Raises UserError naming the file or key for a missing file, unknown keys or wrong types.
    """
    cfg = get_cfg_defaults()
    if cfg_path:
        path = Path(cfg_path)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist; pass the yaml of your clip with --cfg")
        try:
            cfg.merge_from_file(str(path))
        except KeyError as exc:
            raise UserError(
                f"config file {path}: {_describe_yacs_error(exc)}; see template.yaml for the keys this tool knows"
            ) from exc
        except (ValueError, TypeError) as exc:
            raise UserError(f"config file {path}: {_describe_yacs_error(exc)}") from exc
        except Exception as exc:  # yaml syntax errors
            raise UserError(f"config file {path} is not valid yaml: {exc}") from exc
    if overrides:
        if len(overrides) % 2:
            raise UserError(
                f"overrides must come in KEY VALUE pairs, got {len(overrides)} words: {' '.join(overrides)}"
            )
        try:
            cfg.merge_from_list(list(overrides))
        except (KeyError, AssertionError) as exc:
            raise UserError(f"override {_describe_yacs_error(exc)}; see template.yaml for the keys") from exc
        except (ValueError, TypeError) as exc:
            raise UserError(f"override: {_describe_yacs_error(exc)}") from exc
    _check_types(cfg)
    cfg.freeze()
    return cfg


def _check_types(cfg: CfgNode) -> None:
    gt_idx = cfg.FINETUNE.GT_IDX
    if isinstance(gt_idx, str):  # "[0, 9]" given on the command line stays a string in yacs
        try:
            gt_idx = ast.literal_eval(gt_idx)
        except (ValueError, SyntaxError) as exc:
            raise UserError(f"FINETUNE.GT_IDX must be a list of frame indices, not {gt_idx!r}") from exc
    if isinstance(gt_idx, int):
        gt_idx = [gt_idx]
    if not isinstance(gt_idx, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in gt_idx):
        raise UserError(f"FINETUNE.GT_IDX must be a list of integer frame indices, not {gt_idx!r}")
    cfg.FINETUNE.GT_IDX = list(gt_idx)
    if not isinstance(cfg.FINETUNE.DILATION, int) or cfg.FINETUNE.DILATION < 0:
        raise UserError(f"FINETUNE.DILATION must be an integer >= 0, not {cfg.FINETUNE.DILATION!r}")
