"""The code MLflow loads a cnnlab model from (MLflow's "models from code": no pickled Python objects).

MLflow also loads it when the tracking worker saves a model, so torch is imported only where the model
is served: saving stays cheap.
"""

import warnings
from typing import Any

import mlflow.pyfunc
from mlflow.models import set_model

# MLflow asks for predict's type hints to infer a schema; the model is saved with an explicit signature instead.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)

    class ClassifierModel(mlflow.pyfunc.PythonModel):
        """The pyfunc flavour: predict(raw inputs) -> class indices (int64); see cnnlab.serving."""

        def load_context(self, context: Any) -> None:
            from cnnlab.serving import load_classifier

            self.classifier = load_classifier(context.artifacts["classifier"])

        def predict(self, context, model_input, params=None):
            import numpy as np
            import torch

            inputs = torch.as_tensor(np.asarray(model_input))
            with torch.no_grad():
                return self.classifier(inputs).argmax(dim=1).numpy()


set_model(ClassifierModel())
