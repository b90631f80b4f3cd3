"""Real data through the mirror (../shared/data): MNIST with the course's settings and findings,
and the cats-vs-dogs photos as an image folder. Slow, outside CI: `make test-slow`."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from conftest import SHARED_DATA, run, run_env

pytestmark = pytest.mark.slow


def only(prefix: str, params: dict) -> None:
    """Keep the datasets and experiments whose names start with `prefix`."""
    params["datasets"] = {k: v for k, v in params["datasets"].items() if k.startswith(prefix)}
    params["experiments"] = {k: v for k, v in params["experiments"].items() if k.startswith(prefix)}
    params["transfer"] = {k: v for k, v in params["transfer"].items() if k.startswith(prefix)
                          and (v["backbone"]["weights"] != "pipeline" or v["backbone"]["name"] in params["experiments"])}
    params["report"]["comparisons"] = [c for c in params["report"]["comparisons"] if c["baseline"].startswith(prefix)]


def only_mnist(params: dict) -> None:
    only("mnist", params)


CATSDOGS_LENET = {
    "study": "catsdogs", "dataset": "catsdogs32", "model": "lenet", "model_args": {},
    "inputs": {"normalize": "train_stats", "permute_pixels": False},
    "train": {"optimizer": {"name": "adam", "lr": 0.001}, "epochs": 30, "batch_size": 32,
              "augment": {"crop_padding": 4, "flip": True}, "seed": 0},
    "evaluate": {"batch_size": 200, "grid_images": 8},
}
# The pipeline's own model as a backbone: the LeNet above, fed the 224-pixel crops resized to 32 on the device.
LENET_BACKBONE = {
    "study": "catsdogs", "dataset": "catsdogs",
    "backbone": {"name": "catsdogs_lenet", "weights": "pipeline", "source": "models/catsdogs_lenet"},
    "inputs": {"normalize": "train_stats", "permute_pixels": False},
    "head": {"dropout": 0.0, "train": {"optimizer": {"name": "adam", "lr": 0.001}, "epochs": 30, "batch_size": 32}},
    "evaluate": {"batch_size": 200, "grid_images": 8},
}


def with_catsdogs(params: dict) -> None:
    """The real photos twice: 224-pixel centre crops (the course's transfer input) and 32-pixel ones for LeNet."""
    only("catsdogs", params)
    folder = str(SHARED_DATA / "catsdogs")
    params["datasets"]["catsdogs"]["acquire"]["source"] = folder
    params["datasets"]["catsdogs32"] = {"kind": "imagefolder", "acquire": {"source": folder},
                                       "prepare": {"resize": 36, "crop": 32, "on_bad_file": "error"}}
    params["experiments"]["catsdogs_lenet"] = CATSDOGS_LENET
    params["transfer"]["catsdogs_vgg16"]["backbone"]["weights"] = "none"  # no ImageNet weights on this machine
    params["transfer"]["catsdogs_lenet_features"] = LENET_BACKBONE


def timed_repro(root, stage: str) -> tuple[float, set[str]]:
    started = time.perf_counter()
    done = run(["dvc", "repro", "--single-item", stage], root)
    return time.perf_counter() - started, set(re.findall(r"Running stage '([^']+)'", done.stdout))


def test_catsdogs_image_folder_and_transfer_through_the_pipeline(make_project):
    """LeNet from scratch, the course's VGG16 transfer (random weights here) and transfer from the
    pipeline's LeNet, on the 600 real photos; prints the time of every stage, features cached or not."""
    if not (SHARED_DATA / "catsdogs").is_dir():
        pytest.skip("no ../shared/data/catsdogs on this machine")
    root = make_project(with_catsdogs)
    seconds = {}
    for stage in ("download@catsdogs", "prepare@catsdogs", "download@catsdogs32", "prepare@catsdogs32",
                  "train@catsdogs_lenet", "evaluate@catsdogs_lenet", "features@catsdogs_vgg16", "head@catsdogs_vgg16",
                  "evaluate_head@catsdogs_vgg16", "features@catsdogs_lenet_features", "head@catsdogs_lenet_features",
                  "evaluate_head@catsdogs_lenet_features"):
        seconds[stage], ran = timed_repro(root, stage)
        assert ran == {stage}
    meta = json.loads((root / "data" / "prepared" / "catsdogs" / "meta.json").read_text())
    assert meta["class_names"] == ["cats", "dogs"] and meta["sizes"] == {"train": 400, "test": 200}
    assert meta["input_shape"] == [3, 224, 224]
    metrics = {name: json.loads((root / "metrics" / f"{name}.json").read_text())
               for name in ("catsdogs_lenet", "catsdogs_vgg16", "catsdogs_lenet_features")}

    # The head's learning rate changes: only the head and its evaluation run again, from the cached features.
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["transfer"]["catsdogs_vgg16"]["head"]["train"]["optimizer"]["lr"] = 0.01
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    rerun = run(["dvc", "repro", "evaluate_head@catsdogs_vgg16"], root)
    seconds["lr change: dvc repro evaluate_head@catsdogs_vgg16"] = time.perf_counter() - started
    assert set(re.findall(r"Running stage '([^']+)'", rerun.stdout)) == {"head@catsdogs_vgg16",
                                                                         "evaluate_head@catsdogs_vgg16"}
    for stage, value in seconds.items():
        print(f"{stage:55s} {value:7.1f} s")
    for name, values in metrics.items():
        print(name, f"accuracy {values['test_accuracy']:.2%}", f"train {values.get('train_seconds', float('nan')):.2f} s")
    assert metrics["catsdogs_lenet"]["test_accuracy"] > 0.55, "a small CNN does better than chance on real cats vs dogs"
    assert metrics["catsdogs_lenet_features"]["test_accuracy"] > 0.55, "its features carry what it learnt"
    assert seconds["head@catsdogs_vgg16"] * 3 < seconds["features@catsdogs_vgg16"], "the head is cheap once cached"
    for grid in ("test_images.png", "correct.png", "confident_mistakes.png"):
        assert (root / "reports" / "catsdogs_vgg16" / "figures" / grid).is_file()


def test_course_findings_hold_on_real_mnist(make_project):
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("no ../shared/data/mnist on this machine")
    root = make_project(only_mnist)
    run(["dvc", "repro"], root, env=run_env({"CNNLAB_MIRROR": str(SHARED_DATA)}))
    accuracy = {
        name: json.loads((root / "metrics" / f"{name}.json").read_text())["test_accuracy"]
        for name in ("mnist_fc", "mnist_cnn", "mnist_fc_perm", "mnist_cnn_perm")
    }
    print(accuracy)
    assert 0.85 <= accuracy["mnist_fc"] <= 0.93, "the course saw FC ~89%"
    assert accuracy["mnist_cnn"] >= 0.93, "the course saw CNN ~95%"
    assert accuracy["mnist_cnn"] - accuracy["mnist_fc"] >= 0.03, "the CNN wins at equal parameter count"
    assert abs(accuracy["mnist_fc_perm"] - accuracy["mnist_fc"]) < 0.03, "permutation leaves the FC net unchanged"
    assert accuracy["mnist_cnn"] - accuracy["mnist_cnn_perm"] >= 0.05, "permutation clearly hurts the CNN"
    summary = json.loads((root / "reports" / "summary.json").read_text())
    verdicts = {f["candidate"]: f["verdict"] for f in summary["findings"]}
    assert verdicts == {"mnist_cnn": "higher", "mnist_fc_perm": "about the same", "mnist_cnn_perm": "lower"}


def test_bf16_matches_fp32_accuracy_of_the_course_cnn_on_real_mnist():
    """The engine's bf16 changes speed, not the result: mean of 3 seeds within 0.5 points of fp32."""
    import dataclasses
    import statistics

    import torch

    from cnnlab.config.datasets import PrepareOptions, SourceOptions
    from cnnlab.config.params import parse_params
    from cnnlab.config.runtime import RuntimeConfig
    from cnnlab.data.kinds import mnist
    from cnnlab.data.loader import DeviceSplit, make_normalizer
    from cnnlab.data.prepared import DatasetMeta
    from cnnlab.engine import loop
    from cnnlab.engine.evaluation import evaluate
    from cnnlab.engine.runtime import resolve_runtime
    from cnnlab.models.registry import build_model
    from conftest import committed_params

    splits = mnist.read(SourceOptions(), PrepareOptions(), SHARED_DATA / "mnist")
    train = DeviceSplit(splits.train_inputs, splits.train_targets)
    test = DeviceSplit(splits.test_inputs, splits.test_targets)
    meta = DatasetMeta("mnist", "mnist", splits.class_names, (1, 28, 28), True, (0.0,), (1.0,),
                       splits.course_mean, splits.course_std, {}, splits.origin)
    normalize = make_normalizer(meta, "course", torch.device("cpu"))
    course = parse_params(committed_params()).experiment("mnist_cnn")
    accuracy: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for precision in accuracy:
        runtime = resolve_runtime(RuntimeConfig(), torch.device("cpu"), precision)
        for seed in range(3):
            torch.manual_seed(seed)
            model = build_model(course.model, (1, 28, 28), 10, **course.model_args)
            config = dataclasses.replace(course.train, seed=seed)
            loop.train(model, train, normalize, config, runtime, progress=False)
            model = model.to(memory_format=torch.contiguous_format)
            accuracy[precision].append(evaluate(model, test, normalize, 1000, 10).accuracy)
    means = {p: statistics.mean(a) for p, a in accuracy.items()}
    print({p: [f"{a:.4f}" for a in accs] for p, accs in accuracy.items()}, means)
    assert means["fp32"] > 0.9 and abs(means["bf16"] - means["fp32"]) < 0.005, accuracy


def test_an_epoch_on_cached_features_against_the_course_loop_through_vgg16(tmp_path):
    """The course's loop pushes every training photo through the frozen VGG16 each epoch; on cached
    features an epoch is the head alone. Same 400 real photos at 224x224, same runtime, one process."""
    import dataclasses

    import torch

    from cnnlab.config.datasets import ImageFolderPrepare, ImageFolderSource
    from cnnlab.config.experiments import NormalizeConstants, OptimizerConfig, TrainConfig
    from cnnlab.config.runtime import RuntimeConfig
    from cnnlab.data.kinds.imagefolder import read
    from cnnlab.data.loader import DeviceSplit, make_normalizer
    from cnnlab.data.prepared import load_prepared, write_prepared
    from cnnlab.engine import loop
    from cnnlab.engine.runtime import Runtime, resolve_runtime
    from cnnlab.models import pretrained
    from cnnlab.pipeline.backbones import TransferModel, backbone_features, new_head

    if not (SHARED_DATA / "catsdogs").is_dir():
        pytest.skip("no ../shared/data/catsdogs on this machine")
    splits = read(ImageFolderSource(), ImageFolderPrepare(resize=0, crop=224), SHARED_DATA / "catsdogs")
    write_prepared("catsdogs", "imagefolder", splits, tmp_path / "catsdogs", None)
    data = load_prepared(tmp_path / "catsdogs")
    cpu = torch.device("cpu")
    normalize = make_normalizer(data.meta, NormalizeConstants((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), cpu)
    config = TrainConfig(optimizer=OptimizerConfig(lr=1e-3), epochs=1, batch_size=64, seed=0)
    torch.manual_seed(0)
    backbone, _ = pretrained.torchvision_backbone("vgg16", None)
    runtime = resolve_runtime(RuntimeConfig(), cpu, "bf16")  # params.yaml's catsdogs_vgg16 features
    images = DeviceSplit(data.train_inputs, data.train_targets)

    through = loop.train(TransferModel(backbone, new_head(4096, 2, 0.5), None, 0), images, normalize, config,
                           runtime, progress=False).train_seconds
    started = time.perf_counter()
    features = backbone_features(backbone, data.train_inputs, normalize, None, runtime)
    extract = time.perf_counter() - started
    identity = make_normalizer(dataclasses.replace(data.meta, is_image=False, input_shape=(4096,)), "none", cpu)
    cached = loop.train(new_head(4096, 2, 0.5), DeviceSplit(features, data.train_targets), identity, config,
                          Runtime(cpu, "fp32", False), progress=False).train_seconds
    print(f"{runtime.precision}: an epoch through the frozen VGG16 {through:.1f} s; features of the same "
          f"{len(images)} photos once {extract:.1f} s; an epoch of the head on them {cached * 1000:.1f} ms "
          f"({through / cached:,.0f}x less)")
    assert cached * 50 < through


def only_cifar_course(params: dict) -> None:
    """The course's two CIFAR-10 experiments on the real training images (10% of each class held out)."""
    cifar10 = params["datasets"]["cifar10"]
    only("cifar_", params)
    params["datasets"] = {"cifar10": cifar10}
    cifar10["acquire"]["source"] = "images"


def test_course_lenet_on_real_cifar10_images(make_project):
    """The course's LeNet-style CNN at its settings (Adam 1e-3, 10 epochs, batch 64) on CPU lands in the
    61-64% the course reports; the held-out split is 500 images of each class."""
    if not (SHARED_DATA / "cifar10-train-jpg.tar.gz").is_file():
        pytest.skip("no ../shared/data/cifar10-train-jpg.tar.gz on this machine")
    root = make_project(only_cifar_course)
    env = run_env({"CNNLAB_MIRROR": str(SHARED_DATA), "CNNLAB_DEVICE": "cpu"})
    seconds = {}
    for stage in ("download@cifar10", "prepare@cifar10", "train@cifar_lenet", "evaluate@cifar_lenet"):
        started = time.perf_counter()
        run(["dvc", "repro", "--single-item", stage], root, env=env)
        seconds[stage] = time.perf_counter() - started
    meta = json.loads((root / "data" / "prepared" / "cifar10" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 45000, "test": 5000} and meta["origin"] == "images"
    metrics = json.loads((root / "metrics" / "cifar_lenet.json").read_text())
    history = json.loads((root / "reports" / "cifar_lenet" / "history.json").read_text())
    print({stage: f"{value:.1f} s" for stage, value in seconds.items()},
          f"accuracy {metrics['test_accuracy']:.2%}", [round(row["train_loss"], 4) for row in history])
    assert 0.61 <= metrics["test_accuracy"] <= 0.64, "the course reports 61% to 64%"
