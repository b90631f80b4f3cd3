"""`runtime:`: how the engine runs on this machine.

None of these is a DVC param: they change speed and, like the device itself (CPU or which GPU), the last
bits of floating-point rounding, never what is computed. What changes results is in each experiment's
params (`train.precision`, for one); see the README's "What DVC tracks".
"""

from __future__ import annotations

from typing import Literal

from cnnlab.schema import NonNegativeFloat, section


@section
class RuntimeConfig:
    # auto: NHWC for image models on every device (faster convolutions and pooling in cuDNN and oneDNN)
    channels_last: Literal["auto"] | bool = "auto"
    compile: bool = False  # torch.compile the model: worth it for long GPU runs, not for minutes on CPU
    deterministic: bool = False  # bit-identical reruns on CUDA too, at the cost of slower kernels
    checkpoint_every_s: NonNegativeFloat = (
        30.0  # save resumable state after an epoch once this long since the last save
    )
