"""The engine on CUDA: run with `make test-gpu` on a machine with a GPU (no DVC or MLflow needed).

Collected everywhere, skipped without CUDA. Each test states what the CUDA path must do that the
CPU tests cannot show: bf16 + channels_last training of every model, no stray host-device syncs,
deterministic resume, and evaluation that agrees with the CPU's.
"""

from __future__ import annotations

import os

# cuBLAS reads this at its first call, which may come before any test sets deterministic mode: set it now.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest
import torch
import yaml

from cnnlab.config.datasets import SyntheticSizes
from cnnlab.config.experiments import AugmentConfig, OptimizerConfig, ScheduleConfig, TrainConfig
from cnnlab.data import synthetic
from cnnlab.data.kinds import cifar10
from cnnlab.data.loader import DeviceSplit, Normalizer
from cnnlab.engine import loop
from cnnlab.engine.checkpoint import EpochCheckpoint
from cnnlab.engine.evaluation import evaluate
from cnnlab.engine.runtime import Runtime, configure_backends, resolve_runtime
from cnnlab.models.registry import build_model
from cnnlab_tools.bench import ZOO_STUDY
from conftest import REPO
from engine_scenarios import killed_and_resumed

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

CUDA = torch.device("cuda")
CIFAR = (3, 32, 32)
# The zoo's models, from params.yaml as it is here (a GPU machine gets the checkout, not git's history).
ZOO = list(dict.fromkeys(experiment["model"] for experiment in yaml.safe_load((REPO / "params.yaml").read_text())
                         ["experiments"].values() if experiment["study"] == ZOO_STUDY))
# Adam at 1e-3 overshoots on the AlexNet family's 4096-wide FC layers in a handful of steps.
LEARNING_RATES = {"alexnet": 1e-4, "zfnet": 1e-4}


def course_normalizer(device: torch.device) -> Normalizer:
    mean = torch.tensor(cifar10.COURSE_MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cifar10.COURSE_STD, device=device).view(1, -1, 1, 1)
    return Normalizer(1 / (255 * std), -mean / std)


def cifar_like(count: int, device: torch.device) -> tuple[DeviceSplit, Normalizer]:
    """Generated CIFAR-shaped strokes (learnable in a few steps) and the course's normaliser, on `device`."""
    images, labels, _, _ = synthetic.make_dataset(SyntheticSizes(count, 1, seed=0), 10, 3, 32)
    return DeviceSplit(images.to(device), labels.to(device)), course_normalizer(device)


@pytest.fixture(autouse=True)
def cuda_defaults():
    """Each test starts, and leaves, with torch's defaults: one test's deterministic mode or TF32 switch must
    not decide another's kernels."""
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True


@pytest.mark.parametrize("name", ZOO)
def test_every_model_trains_on_cuda_in_bf16_and_channels_last_with_its_loss_falling(name):
    data, normalize = cifar_like(1024, CUDA)
    torch.manual_seed(0)
    model = build_model(name, CIFAR, 10).to(CUDA)
    config = TrainConfig(optimizer=OptimizerConfig("adam", lr=LEARNING_RATES.get(name, 1e-3)), epochs=4,
                         batch_size=128, seed=0)
    # What the convolutions see while training: bf16 activations out (autocast at work) and NHWC inputs in.
    seen: list[tuple[torch.dtype, bool]] = []

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if module.training and inputs[0].dim() == 4:
            seen.append((output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    result = loop.train(model, data, normalize, config, Runtime(CUDA, "bf16", channels_last=True),
                          progress=False)
    for hook in hooks:
        hook.remove()
    losses = [record.train_loss for record in result.history]
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0], losses
    assert seen and all(dtype == torch.bfloat16 for dtype, _ in seen), {dtype for dtype, _ in seen}
    assert all(nhwc for _, nhwc in seen), "every convolution's input was channels_last"
    convolutions = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions if w.dim() == 4)


def test_a_training_epoch_syncs_with_the_host_only_where_the_engine_means_to(tmp_path):
    """Under set_sync_debug_mode("error") any other synchronisation (an .item(), a data-dependent shape,
    a blocking copy) raises. Everything the loop does is on: crop + flip, schedule, label smoothing,
    bf16, progress bar, and a checkpoint after every epoch."""
    data, normalize = cifar_like(4096, CUDA)
    torch.manual_seed(0)
    model = build_model("resnet18", CIFAR, 10).to(CUDA)
    config = TrainConfig(optimizer=OptimizerConfig("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
                         schedule=ScheduleConfig("onecycle", 0.2), epochs=2, batch_size=256, label_smoothing=0.1,
                         augment=AugmentConfig(crop_padding=4, flip=True), seed=0)
    checkpoint = EpochCheckpoint(tmp_path / "resume.pt", "sync-test", every_seconds=0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):  # the mode is on: a stray .item() fails
            torch.zeros((), device=CUDA).item()
        loop.train(model, data, normalize, config, Runtime(CUDA, "bf16", channels_last=True),
                     checkpoint=checkpoint, progress=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert checkpoint.path.is_file()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_killed_run_resumes_on_cuda_to_identical_weights_under_deterministic(tmp_path, precision):
    runtime = Runtime(CUDA, precision, channels_last=True, deterministic=True)
    configure_backends(runtime)
    killed_and_resumed(tmp_path, runtime)


def test_evaluation_on_cuda_agrees_with_the_cpu_on_the_same_weights():
    # True float32 on both sides: TF32 would make the GPU's arithmetic, not its kernels, the difference.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    data, normalize = cifar_like(2048, torch.device("cpu"))
    on_gpu = DeviceSplit(data.inputs.to(CUDA), data.targets.to(CUDA))
    torch.manual_seed(0)
    model = build_model("vgg_course", CIFAR, 10).to(CUDA)
    config = TrainConfig(optimizer=OptimizerConfig("adam", lr=1e-3), epochs=2, batch_size=128, seed=0)
    loop.train(model, on_gpu, course_normalizer(CUDA), config, Runtime(CUDA, "bf16", channels_last=True),
                 progress=False)
    model = model.to(memory_format=torch.contiguous_format)
    on_cuda = evaluate(model, on_gpu, course_normalizer(CUDA), 500, 10)
    on_cpu = evaluate(model.cpu(), data, normalize, 500, 10)
    agreement = (on_cuda.predictions == on_cpu.predictions).double().mean().item()
    assert on_cpu.accuracy > 0.3, "trained: the comparison is of a model that has learnt something"
    assert agreement >= 0.995 and abs(on_cuda.accuracy - on_cpu.accuracy) <= 0.005, (agreement, on_cuda.accuracy,
                                                                                     on_cpu.accuracy)
    assert abs(on_cuda.loss - on_cpu.loss) < 1e-2


def test_a_bf16_runtime_on_cuda_autocasts_in_channels_last():
    from cnnlab.config.runtime import RuntimeConfig

    runtime = resolve_runtime(RuntimeConfig(), CUDA, "bf16")
    assert (runtime.precision, runtime.channels_last) == ("bf16", True)
    with runtime.autocast():
        product = torch.ones(8, 8, device=CUDA) @ torch.ones(8, 8, device=CUDA)
    assert product.dtype == torch.bfloat16
