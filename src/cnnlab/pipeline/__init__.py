"""What the stages do, end to end: one module per stage (train.py runs train@, and so on), and what they share.

train.py, evaluate.py                       train@ and evaluate@ of one `experiments:` entry
features.py, head.py, evaluate_head.py      features@, head@ and evaluate_head@ of one `transfer:` entry
artifacts.py   the files a trained model leaves (models/NAME) and how to rebuild it from them
training.py    a tracked, resumable training run that writes its outputs once (train@ and head@)
evaluation.py  test metrics, figures and their MLflow record (evaluate@ and evaluate_head@)
backbones.py   frozen feature extractors: torchvision's ImageNet models, or a model this pipeline trained

Every file these stages write goes into DVC's cache and is restored from its run-cache, so it holds only
what the stage's inputs determine: the same inputs give the same bytes. Facts of one execution (seconds,
images per second, latency, the MLflow run id) go to MLflow, which links a run to its files by the MD5 of
the model file.
"""
