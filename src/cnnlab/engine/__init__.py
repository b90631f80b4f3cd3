"""The training engine: data on the device, whole-batch work, and a number read back about once a second.

runtime.py     the device, precision and kernels a run uses
optim.py       optimizers and learning-rate schedules
loop.py        the training loop
checkpoint.py  resumable state: a killed run resumes to the result of an uninterrupted one
evaluation.py  predictions, test metrics and latency
distributed.py CNNLAB_NPROC=N: data-parallel ranks through torch.distributed
progress.py    the progress bar (it draws; it never changes a result)

Importable without DVC or MLflow: per-epoch hooks (`on_epoch`) are how a tracker hears about progress.
"""
