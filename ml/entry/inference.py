"""The inference toolkit's user module (`SAGEMAKER_PROGRAM`), at the root of the model's code/: the handlers live in
the `ml` package beside this file (the toolkit puts code/ on sys.path and imports this module)."""

from ml.inference import input_fn, model_fn, output_fn, predict_fn

__all__ = ["input_fn", "model_fn", "output_fn", "predict_fn"]
