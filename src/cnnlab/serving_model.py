"""The code MLflow loads a cnnlab model from (MLflow's "models from code": no pickled Python objects)."""

from mlflow.models import set_model

from cnnlab.serving import ClassifierModel

set_model(ClassifierModel())
