"""Code that runs inside SageMaker's PyTorch containers, as one package everywhere: the training source bundle and
every model's code/ hold `ml/` beside a small entry shim (ml/entry/), the Lambda bundle holds `ml/contract.py`, and
the host (CLI, local mode, tests) imports the same modules as `ml.*`. One module identity per process: the
`ApiException` that ml/imaging.py raises is the one cli/ catches.
"""
