"""What the GPU path costs, shown on the CPU: no step waits for the device, one query batch size,
budgets from the memory this process can really take, the query encoder's measured peak, a writer
that sleeps while a copy runs, a profile that counts kernel time once, the read's heads."""

from __future__ import annotations

import copy
import types

import pytest
import torch

from bench.bench_propagation import device_kernel_us
from bench.gpu_facts import steady_state_syncs
from bench.memory import TensorPeak
from dataset.clip import scan_clip
from dataset.synthetic import make_synthetic_clip
from inference import propagator as propagator_module
from inference.driver import configure_model, propagate_clip
from inference.options import QUERY_BYTES_PER_PIXEL, PropagationOptions
from inference.propagator import HostProbs
from model.stm import STM
from model.weights import trainable_random_init
from utils import device as device_module
from utils.errors import UserError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> STM:
    torch.manual_seed(0)
    net = STM()
    trainable_random_init(net)
    return net.eval()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-path")
    return scan_clip(make_synthetic_clip(folder, "c", num_frames=12, size=(44, 58), keyframes=(0, 11), seed=2).folder)


@pytest.mark.unit
@pytest.mark.parametrize("path", [{}, {"fast": True}], ids=["default", "fast"])
def test_a_steady_propagation_step_calls_nothing_that_waits_for_the_device(model, clip, path):
    # On a GPU each of these makes the host wait for the step before it: .item(), nonzero, or an
    # index tensor copied over (probs[0, list(OBJECTS)] did, once per memorised frame).
    options = PropagationOptions(mem_every=2, **path)
    net = configure_model(copy.deepcopy(model), options, CPU)
    found = steady_state_syncs(clip, net, options, CPU, warm_up=2, watched=6)
    assert found["visits_watched"] == 6
    assert found["waiting_operators"] == {}, found["waiting_operators"]


@pytest.mark.unit
def test_the_watch_sees_an_operator_that_waits(model, clip, monkeypatch):
    # the negative control: a memorise step that indexes with a list of classes is listed
    memorize = STM.memorize

    def by_list(self, frame, probs):
        probs[0, [1, 2]].sum()
        return memorize(self, frame, probs)

    monkeypatch.setattr(STM, "memorize", by_list)
    options = PropagationOptions(mem_every=2)
    found = steady_state_syncs(clip, configure_model(copy.deepcopy(model), options, CPU), options, CPU, 2, 4)
    assert any(k.startswith("aten.index.Tensor") for k in found["waiting_operators"]), found


@pytest.mark.unit
def test_query_batches_are_the_batch_size_or_one(tmp_path, model, clip, monkeypatch):
    # A batch of another size makes cuDNN search its algorithms again: 11 frames a part, batches
    # of 8 would leave {8, 2, 1}; only 8 and 1 may appear.
    sizes = []
    encode = STM.encode_query
    monkeypatch.setattr(STM, "encode_query", lambda self, frame: sizes.append(len(frame)) or encode(self, frame))
    options = PropagationOptions(mem_every=5, query_batch=8, share_query_mib=0)
    propagate_clip(configure_model(copy.deepcopy(model), options, CPU), clip, tmp_path, options, CPU)
    assert set(sizes) == {8, 1}, sizes
    assert sum(sizes) == 2 * 10, "every frame between the keyframes encoded once per part"


@pytest.mark.unit
def test_the_free_gpu_memory_counts_what_torch_caches_unused(monkeypatch):
    gib = 2**30
    cuda = torch.device("cuda", 0)
    assert hasattr(torch.cuda, "get_per_process_memory_fraction"), "the cap is read through this function"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100 * gib, 141 * gib))  # an idle H200
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 4 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 4 * gib)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device: 24 / 141)
    assert abs(device_module.device_free_bytes(cuda) - 20 * gib) < 2**20, "capped at 24 GB, 4 of them in use"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 6 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2 * gib)
    for fraction, free in ((1.0, 14), (0.25, 14), (0.1, 6)):  # cached 4 GiB are ours; a cap counts allocations
        monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device, f=fraction: f)
        assert device_module.device_free_bytes(cuda) == free * gib, fraction
    assert device_module.device_free_bytes(CPU) is None


@pytest.mark.unit
@pytest.mark.parametrize("path", [{}, {"fast": True}, {"precision": "bf16"}], ids=["default", "fast", "bf16"])
def test_the_query_bytes_per_pixel_bound_what_encoding_a_frame_takes(model, path):
    options = PropagationOptions(**path)
    net = configure_model(copy.deepcopy(model), options, CPU)
    frame = torch.randn(2, 3, 128, 224).contiguous(memory_format=options.memory_format)  # a batch of 2
    half = options.precision == "bf16"
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=half), TensorPeak() as peak:
        net.encode_query(frame)
    per_pixel = peak.bytes / (2 * 128 * 224)
    assert 100 < per_pixel <= QUERY_BYTES_PER_PIXEL, per_pixel


@pytest.mark.unit
def test_the_tensor_peak_counts_what_is_held_at_once():
    with TensorPeak() as peak:
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2  # 8000 held
        del a
        c = b + 1  # 8000 held again: a is gone
        view = c[:10]  # a view costs nothing
        del b, c, view
    assert peak.bytes == 8000 and peak.held == 0


@pytest.mark.unit
def test_a_writer_waiting_for_a_copy_sleeps(monkeypatch):
    made = []

    class Event:
        def __init__(self, **kwargs):
            made.append(kwargs)
            self.waited = False

        def record(self, stream):
            pass

        def synchronize(self):
            self.waited = True

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: None)
    monkeypatch.setattr(propagator_module, "pinned_empty", lambda shape, dtype: torch.empty(shape, dtype=dtype))
    probs = torch.rand(1, 3, 4, 5)
    host = HostProbs.behind_event(probs)
    assert made == [{"blocking": True}], "a spinning wait takes a core per writer"
    assert host.numpy().shape == (4, 5, 3) and host._event.waited


@pytest.mark.unit
def test_the_profile_counts_each_kernels_time_once():
    from torch.autograd import DeviceType

    operator = types.SimpleNamespace(device_type=DeviceType.CPU, self_device_time_total=5000.0)  # its kernel's time
    kernel = types.SimpleNamespace(device_type=DeviceType.CUDA, self_device_time_total=5000.0)
    other = types.SimpleNamespace(device_type=DeviceType.CUDA, self_device_time_total=1000.0)
    assert device_kernel_us([operator, kernel, other]) == 6000.0


@pytest.mark.e2e
def test_the_read_heads_reach_the_fused_read_and_agree(tmp_path, model, clip, monkeypatch):
    import model.stm as stm

    heads = []
    fused = stm.read_memory_fused
    monkeypatch.setattr(stm, "read_memory_fused", lambda *args: heads.append(args[3]) or fused(*args))
    results = {}
    for count in (1, 4):
        options = PropagationOptions(mem_every=5, read_heads=count)
        net = configure_model(copy.deepcopy(model), options, CPU)
        net.read_budget = 1  # every read fused
        probs = results[count] = {}

        def keep(part, step, image, probs=probs):
            probs[part, step.frame] = image

        propagate_clip(net, clip, tmp_path / str(count), options, CPU, on_step=keep)
    assert set(heads) == {1, 4}
    worst = max(float(abs(results[1][k] - results[4][k]).max()) for k in results[1])
    assert worst < 1e-4, worst
    with pytest.raises(UserError, match="--read_heads 2"):
        PropagationOptions(read_heads=2)
