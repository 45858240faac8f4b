"""The computation paths and switches besides the default: --fast, --precision, --n_threads, --gpu."""

from __future__ import annotations

import copy
import shutil

import cv2
import numpy as np
import pytest
import torch

from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from helpers import FIXTURES, PARITY_CLEAR_SLACK, compare_results, run_main, run_script, write_cfg
from inference.driver import configure_model, propagate_clip, time_visits
from inference.options import PropagationOptions
from model.stm import STM
from model.weights import trainable_random_init
from utils.device import resolve_device
from utils.errors import UserError
from utils.precision import autocast_for, tf32

CPU = torch.device("cpu")
CASE = FIXTURES / "parity_case1"


@pytest.mark.e2e
def test_fast_path_passes_the_parity_case(tmp_path, parity_weights):
    workspace = tmp_path / "workspace"
    shutil.copytree(CASE / "workspace", workspace)
    cfg = write_cfg(tmp_path / "parity.yaml", workspace / "parity_clip")
    out = tmp_path / "out"
    flags = ["--mem_every", "1", "--max_memory", "3", "--fast"]
    run = run_script("test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", out, *flags)
    assert run.returncode == 0, run.stderr
    run = run_script("ensemble.py", "--predroot", out, "--dataroot", workspace)
    assert run.returncode == 0, run.stderr
    assert compare_results(CASE / "expected" / "parity_clip_mem1", out / "parity_clip_mem1", PARITY_CLEAR_SLACK) == []


@pytest.fixture(scope="module")
def quiet_model() -> STM:
    """Random weights as the demo starts from (not the loud parity weights, which amplify rounding
    into label flips): what reduced precision does to an ordinary network."""
    torch.manual_seed(0)
    model = STM()
    trainable_random_init(model)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("paths")
    return scan_clip(make_synthetic_clip(workspace, "tiny", num_frames=3, size=(44, 58), keyframes=(0,), seed=3).folder)


def propagate(model: STM, clip, save, **options) -> dict[str, bytes]:
    opts = PropagationOptions(mem_every=1, **options)
    result = propagate_clip(configure_model(copy.deepcopy(model), opts, CPU), clip, save, opts, CPU).result
    return {p.relative_to(result.path).as_posix(): p.read_bytes() for p in sorted(result.path.glob("part*/*.png"))}


def decode(pngs: dict[str, bytes]) -> dict[str, np.ndarray]:
    return {k: cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_UNCHANGED) for k, v in pngs.items()}


def agreement(other: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> tuple[float, int]:
    """(the share of labels that agree, the largest difference in levels) of two runs' part PNGs."""
    assert other.keys() == reference.keys()
    agree = np.mean([(other[k].argmax(2) == reference[k].argmax(2)).mean() for k in reference])
    worst = max(np.abs(other[k].astype(int) - reference[k]).max() for k in reference)
    return agree, worst


@pytest.fixture
def encoded_batches(monkeypatch) -> list[int]:
    """The batch sizes ``STM.encode_query`` is called with, in order."""
    batches = []
    encode = STM.encode_query
    monkeypatch.setattr(STM, "encode_query", lambda self, frame: batches.append(len(frame)) or encode(self, frame))
    return batches


@pytest.mark.e2e
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_runs_on_the_cpu_close_to_fp32(tmp_path, quiet_model, tiny_clip, precision):
    # Slow without native bf16 (seconds for 2 frames on a CPU without it), but the same code path as on GPUs.
    reference = decode(propagate(quiet_model, tiny_clip, tmp_path / "fp32"))
    half = decode(propagate(quiet_model, tiny_clip, tmp_path / precision, precision=precision))
    agree, worst = agreement(half, reference)
    assert agree > 0.97 and worst <= 3, (agree, worst)


@pytest.mark.unit
def test_inline_reading_and_writing_gives_the_same_bytes(tmp_path, quiet_model, tiny_clip):
    assert propagate(quiet_model, tiny_clip, tmp_path / "a", n_threads=0) == propagate(
        quiet_model, tiny_clip, tmp_path / "b", n_threads=2
    )


@pytest.mark.unit
def test_the_published_gpu_flag_on_a_machine_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device("auto", gpu=0) == CPU  # --gpu 0 with --device auto: the best device there is
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve_device("cuda", gpu=1)
    with pytest.raises(UserError, match="not a device"):
        resolve_device("tpu:x")


@pytest.mark.unit
def test_batched_query_frames_agree_with_one_at_a_time(tmp_path, quiet_model, encoded_batches):
    sample = make_synthetic_clip(tmp_path / "ws", "c", num_frames=7, size=(44, 58), keyframes=(0, 6), seed=4)
    clip = scan_clip(sample.folder)
    batches = encoded_batches
    single = decode(propagate(quiet_model, clip, tmp_path / "one", query_batch=1))
    frames, batches[:] = sum(batches), []
    batched = decode(propagate(quiet_model, clip, tmp_path / "three", query_batch=3))
    assert max(batches) == 3 and sum(batches) == frames, f"each query frame once (then shared), in batches: {batches}"
    agree, worst = agreement(batched, single)
    assert agree > 0.999 and worst <= 2, (agree, worst)


@pytest.mark.unit
def test_the_estimate_times_query_frames_one_at_a_time(tiny_clip, quiet_model, encoded_batches):
    options = PropagationOptions(mem_every=1, query_batch=3)
    time_visits(configure_model(copy.deepcopy(quiet_model), options, CPU), tiny_clip, options, CPU, visits=1)
    assert encoded_batches and set(encoded_batches) == {1}, "a batch hides the encoder's work in the warm-up step"


@pytest.mark.unit
def test_the_query_batch_comes_from_the_free_gpu_memory(monkeypatch):
    import inference.options as options_module

    cuda = torch.device("cuda", 0)
    for free_gib, batch in ((130, 8), (20, 3), (2, 1), (0, 1)):  # 1088x1920: 689 MB a frame at 330 B a pixel
        monkeypatch.setattr(
            options_module, "device_free_bytes", lambda device, f=free_gib: f * 2**30 if device.type == "cuda" else None
        )
        assert PropagationOptions().query_batch_for(cuda, 1088, 1920) == batch, free_gib
    assert PropagationOptions().query_batch_for(CPU, 1088, 1920) == 1
    assert PropagationOptions(query_batch=5).query_batch_for(CPU, 1088, 1920) == 5
    assert PropagationOptions(query_batch=5, naive=True).query_batch_for(cuda, 1088, 1920) == 1, "published path"
    assert PropagationOptions(query_batch=5, compile=True).query_batch_for(cuda, 1088, 1920) == 1, "one shape"
    monkeypatch.setattr(options_module.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert PropagationOptions().io_threads(cuda) == 16 and PropagationOptions().io_threads(CPU) == 1
    assert PropagationOptions(n_threads=3).io_threads(cuda) == 3
    with pytest.raises(UserError, match="--query_batch -1"):
        PropagationOptions(query_batch=-1)


@pytest.mark.unit
def test_tf32_is_a_cuda_mode_refused_elsewhere_with_what_to_use(tmp_path, tiny_clip, parity_weights):
    with pytest.raises(UserError, match=r"tf32 runs on NVIDIA GPUs.*use fp32"):
        autocast_for("tf32", CPU)
    run = run_main("test_mf_2.py", "--cfg", write_cfg(tmp_path / "t.yaml", tiny_clip.path), "--load", parity_weights,
                   "--save", tmp_path / "o", "--precision", "tf32", "--device", "cpu")  # fmt: skip
    assert run.returncode == 2 and "tf32 runs on NVIDIA GPUs" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.unit
def test_the_tf32_context_turns_tf32_on_inside_and_restores_the_switches():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with tf32():
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _randomised_batch_norms(model: STM) -> STM:
    """``model`` with every batch norm given running statistics and an affine map far from the
    identity, so that folding them is a real rewrite (a fresh network's are trivial)."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.mul_(torch.rand(n, generator=generator) + 0.5)
                module.bias.add_(torch.randn(n, generator=generator) * 0.05)
    return model.eval()


@pytest.mark.unit
def test_folding_batch_norms_keeps_the_function(quiet_model):
    from model.folding import fold_batch_norms

    model = _randomised_batch_norms(quiet_model)
    folded = fold_batch_norms(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    torch.manual_seed(1)
    frame = torch.randn(1, 3, 64, 96)
    probs = torch.softmax(torch.randn(1, 3, 64, 96), dim=1)
    with torch.inference_mode():
        outputs = []
        for net in (model, folded):
            entry = net.memorize(frame, probs)
            outputs.append((entry.keys, entry.values, net.segment(frame, [entry])))
    (k0, v0, p0), (k1, v1, p1) = outputs
    for a, b in ((k0, k1), (v0, v1)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max())), float((a - b).abs().max())
    assert float((p0 - p1).abs().max()) < 1e-4
    # negative control: the same comparison sees a fold that forgot one batch norm's shift
    broken = fold_batch_norms(model)
    with torch.no_grad():
        broken.Encoder_Q.conv1.bias.add_(0.1)
        entry = broken.memorize(frame, probs)
        assert float((broken.segment(frame, [entry]) - p0).abs().max()) > 1e-4


@pytest.mark.e2e  # inductor compiles in worker processes
def test_compiled_fast_path_agrees_with_the_eager_one(tmp_path, quiet_model, tiny_clip):
    # compiles the encoders and the decoder for this size (docs/development.md lists the slowest tests' times)
    eager = decode(propagate(quiet_model, tiny_clip, tmp_path / "eager", fast=True))
    compiled = decode(propagate(quiet_model, tiny_clip, tmp_path / "compiled", fast=True, compile=True))
    agree, worst = agreement(compiled, eager)
    assert agree > 0.999 and worst <= 2, (agree, worst)
