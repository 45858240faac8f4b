"""The CUDA paths, on a machine with a CUDA GPU (``bench/gpu_check.sh`` runs them there).

Skipped elsewhere, with that reason. Covered: device selection (``--device cuda:0``, ``auto``,
the published ``--gpu 0``), the cuDNN switches of ``SYSTEM`` and TF32 off, the parity case on
CUDA in fp32, bf16 / fp16 autocast close to fp32, the fused memory read on the attention kernel
expected for its heads and dtype, ``--compile`` on CUDA (the GPU check runs it last, apart: it
compiles cold), and the advice when a part does not fit in the GPU's memory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from config import load_config
from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from helpers import FIXTURES, PARITY_CLEAR_SLACK, REPO, compare_results, run_main, write_cfg
from inference.driver import propagate_clip
from inference.options import PropagationOptions
from pipeline.clip import run_clip
from utils.device import prepare_device, resolve_device

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh runs these on one)"),
]
CASE = FIXTURES / "parity_case1"


def test_device_selection():
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("auto", gpu=0) == torch.device("cuda", 0)
    assert resolve_device("cuda", gpu=0) == torch.device("cuda", 0)


def test_the_cudnn_switches_of_system_and_no_tf32(tmp_path):
    cfg = load_config(None, ["SYSTEM.CUDNN_BENCHMARK", "True", "SYSTEM.CUDNN_DETERMINISTIC", "True"])
    prepare_device(torch.device("cuda", 0), cfg.SYSTEM)
    assert torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    prepare_device(torch.device("cuda", 0), load_config(None, ["SYSTEM.CUDNN_BENCHMARK", "False"]).SYSTEM)
    assert not torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    prepare_device(torch.device("cuda", 0), load_config(None, []).SYSTEM)
    assert torch.backends.cudnn.benchmark, "a run autotunes by default, as the published config does"


@pytest.mark.parametrize("flags", [["--device", "cuda:0"], ["--gpu", "0"]], ids=["device", "gpu"])
def test_the_parity_case_on_cuda_in_fp32(tmp_path, parity_weights, flags):
    workspace = tmp_path / "workspace"
    shutil.copytree(CASE / "workspace", workspace)
    cfg = write_cfg(tmp_path / "parity.yaml", workspace / "parity_clip")
    out = tmp_path / "out"
    run = run_main("test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", out, "--mem_every", "1",
                   "--max_memory", "3", *flags)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run_main("ensemble.py", "--predroot", out, "--dataroot", workspace).returncode == 0
    expected = CASE / "expected" / "parity_clip_mem1"
    assert compare_results(expected, out / "parity_clip_mem1", PARITY_CLEAR_SLACK) == []


@pytest.fixture
def clip(tmp_path):
    return make_synthetic_clip(tmp_path / "ws", "clip", num_frames=8, size=(96, 160), keyframes=(0, 7), seed=9)


def labels_of(result):
    """The argmax labels of every part PNG of a result folder."""
    pngs = [result.part_png(k, s) for k in sorted(result.part_dirs()) for s in result.part_stems(k)]
    return np.stack([np.argmax(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), axis=2) for p in pngs])


@pytest.mark.parametrize(
    "options",
    [{"precision": "tf32"}, {"precision": "bf16"}, {"precision": "fp16"}, {"fast": True, "compile": True}],
    ids=["tf32", "bf16", "fp16", "compile"],
)
def test_faster_paths_on_cuda_agree_with_fp32(tmp_path, clip, parity_weights, options):
    cuda = torch.device("cuda", 0)
    prepare_device(cuda)
    reference = run_clip(scan_clip(clip.folder), tmp_path / "fp32", PropagationOptions(), cuda,
                         checkpoint=parity_weights, fuse=False)  # fmt: skip
    other = run_clip(scan_clip(clip.folder), tmp_path / "other", PropagationOptions(**options), cuda,
                     checkpoint=parity_weights, fuse=False)  # fmt: skip
    agreement = (labels_of(reference.result) == labels_of(other.result)).mean()
    assert agreement > 0.99, f"{options}: labels agree on {agreement:.4%} of pixels"


def test_a_part_that_does_not_fit_gets_advice(tmp_path, parity_weights):
    make_synthetic_clip(tmp_path / "ws", "big", num_frames=4, size=(1088, 1920), keyframes=(0,), seed=2)
    cfg = write_cfg(tmp_path / "big.yaml", tmp_path / "ws" / "big")
    argv = ["--cfg", str(cfg), "--load", str(parity_weights), "--save", str(tmp_path / "o"), "--device", "cuda:0"]
    script = (  # about 700 MiB of the GPU: the weights fit, a 1088x1920 segment step does not
        "import torch; torch.cuda.set_per_process_memory_fraction(0.005, 0); "
        f"from test_mf_2 import main; from utils.errors import run_cli; run_cli(lambda: main({argv!r}))"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "out of GPU memory" in run.stderr and "--max_memory" in run.stderr


def test_query_sharing_on_cuda_changes_no_bit(tmp_path, clip, parity_weights):
    cuda = torch.device("cuda", 0)
    prepare_device(cuda)

    def run(mib):
        options = PropagationOptions(share_query_mib=mib)
        return run_clip(scan_clip(clip.folder), tmp_path / f"share{mib}", options, cuda, checkpoint=parity_weights,
                        fuse=False).result  # fmt: skip

    off, on = run(0), run(-1)
    for k in off.part_dirs():
        for stem in off.part_stems(k):
            assert on.part_png(k, stem).read_bytes() == off.part_png(k, stem).read_bytes(), (k, stem)


def _expected_kernel(heads: int, dtype: torch.dtype):
    """The attention kernel the fused read should take: flash needs equal head dims (4 heads of 128)
    and half precision; one head of 512 values, or fp32, leaves the memory-efficient kernel."""
    from torch.nn.attention import SDPBackend

    if heads == 4 and dtype != torch.float32:
        return SDPBackend.FLASH_ATTENTION
    return SDPBackend.EFFICIENT_ATTENTION


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_the_fused_read_runs_on_the_expected_kernel_and_matches_the_naive_read(dtype, heads):
    from torch.nn.attention import sdpa_kernel

    from model.stm import MemoryEntry, read_memory_fused, read_memory_naive

    cuda = torch.device("cuda", 0)
    g = torch.Generator().manual_seed(0)
    memory = [
        MemoryEntry(
            (torch.randn(2, 128, 17, 30, generator=g) * 2).to(cuda),
            torch.randn(2, 512, 17, 30, generator=g).to(cuda),
        )
        for _ in range(3)
    ]
    key = (torch.randn(2, 128, 17, 30, generator=g) * 2).to(cuda)
    value = torch.randn(2, 512, 17, 30, generator=g).to(cuda)
    naive = read_memory_naive(memory, key, value)
    with sdpa_kernel([_expected_kernel(heads, dtype)]):  # only that kernel: it raises if the inputs do not suit it
        fused = read_memory_fused(memory, key, value, heads, dtype)
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    assert float((fused.float() - naive).abs().max()) < tolerance


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_propagation_forced_onto_the_fused_read_agrees_with_the_naive_path(tmp_path, clip, parity_weights,
                                                                            precision, heads, monkeypatch):  # fmt: skip
    from torch.nn.attention import sdpa_kernel

    import model.stm as stm
    from inference.driver import configure_model
    from model.checkpoint import load_checkpoint

    cuda = torch.device("cuda", 0)
    prepare_device(cuda)
    reference = run_clip(scan_clip(clip.folder), tmp_path / "naive", PropagationOptions(naive=True), cuda,
                         checkpoint=parity_weights, fuse=False)  # fmt: skip
    calls = []
    fused = stm.read_memory_fused
    monkeypatch.setattr(stm, "read_memory_fused", lambda *args: calls.append(args[4]) or fused(*args))
    options = PropagationOptions(precision=precision, read_heads=heads)
    model = stm.STM()
    load_checkpoint(model, parity_weights)
    model = configure_model(model, options, cuda)
    model.read_budget = 1  # every read fused
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with sdpa_kernel([_expected_kernel(heads, dtype)]):
        result = propagate_clip(model, scan_clip(clip.folder), tmp_path / "fused", options, cuda).result
    assert calls and set(calls) == {dtype}, "every read fused, in the autocast dtype on CUDA"
    agreement = (labels_of(reference.result) == labels_of(result)).mean()
    assert agreement > 0.99, f"{precision}, {heads} heads: labels agree on {agreement:.4%} of pixels"
