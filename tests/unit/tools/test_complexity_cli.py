"""The complexity CLI: size, cost and speed of the zoo's models, side by side."""

from cnnlab_tools.complexity import CIFAR_SHAPE, main, profile_models


def test_profile_models_and_the_cli_report_size_cost_and_speed(capsys):
    (row,) = profile_models(["lenet"], CIFAR_SHAPE, 10, batch_size=4, steps=1, warmup=0)
    assert row["name"] == "lenet" and row["parameters"] == 62_006 and row["macs"] == 651_720
    assert row["images_per_s"] > 0
    main(["--models", "lenet", "--batch-size", "4", "--steps", "1", "--warmup", "0"])
    assert "| lenet | 62,006 | 651,720 |" in capsys.readouterr().out
