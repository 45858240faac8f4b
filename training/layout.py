"""The training run folder of one finetuning: every path and file name of it is spelled here.

::

    SYSTEM.OUTDIR/<cfg file stem><EXP_SUFFIX>/
        config.yaml                 the full config the run used
        train.log                   its log
        checkpoint_<n>.pth.tar      the STM state dict after n steps (test_mf_2.py --load)
        optimizer_<n>.pth.tar       the optimiser's state at step n (TRAIN.LOAD_OPT)
        training_images/            pictures of training samples
        inputs.json                 what the run was made from (tgm.py workspace reuses it)

Everything else asks this module for these names.
"""

from __future__ import annotations

from pathlib import Path

from yacs.config import CfgNode

CONFIG_NAME = "config.yaml"
LOG_NAME = "train.log"
IMAGES_DIR = "training_images"
RECORD_NAME = "inputs.json"


class RunFolder:
    """Paths of one training run folder (nothing is created by asking)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, cfg: CfgNode, cfg_path: Path) -> RunFolder:
        """``SYSTEM.OUTDIR/<cfg file stem><EXP_SUFFIX>``."""
        return cls(Path(cfg.SYSTEM.OUTDIR) / f"{Path(cfg_path).stem}{cfg.SYSTEM.EXP_SUFFIX}")

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config_yaml(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def train_log(self) -> Path:
        return self.path / LOG_NAME

    @property
    def images_dir(self) -> Path:
        return self.path / IMAGES_DIR

    @property
    def record(self) -> Path:
        return self.path / RECORD_NAME

    def checkpoint(self, step: int) -> Path:
        return self.path / f"checkpoint_{step}.pth.tar"

    def optimizer(self, step: int) -> Path:
        return self.path / f"optimizer_{step}.pth.tar"
