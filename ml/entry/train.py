"""SageMaker's training entry point (`sagemaker_program`), at the root of the source bundle: the code is the `ml`
package beside this file (the training toolkit runs `python train.py <hyperparameters>` from the bundle's root)."""

from ml.train import main

if __name__ == "__main__":  # not in the workers torch.multiprocessing spawns (they import this file as __mp_main__)
    raise SystemExit(main())
