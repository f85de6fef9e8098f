"""Code that runs inside SageMaker's PyTorch containers (training source dir and model code/).

Inside the containers these modules import each other flat (`import contract`), as SageMaker runs them
from their own folder. The rest of the repository imports the stdlib-only contract as `ml.contract`.
"""
