"""A local SageMaker stand-in: training, Debugger/Profiler rules, tuning and hosting on this machine.

    from local.sagemaker import LocalSageMaker, SageMakerError
    with LocalSageMaker("demo-output/sagemaker") as sm:
        sm.create_training_job(**request)

Working directory layout:
    s3/<bucket>/<key>                 the local S3 root (configurable): channels, sourcedir.tar.gz, model.tar.gz,
                                      debug-output/, rule-output/, profiler-output/ as SageMaker writes them
    training-jobs/<job>/              the job's /opt/ml (input/config, input/data, code, model, output; model/ and
                                      output/data go when the job ends, as the instance's volume does),
                                      logs/algo-1.log, rules/ (spec, rule-job.log, verdicts.json), description.json
    tuning-jobs/<job>/                description.json, training-jobs.json (every trial's summary)
    endpoints/<endpoint>/             one log per endpoint-server process (one process per instance)
    hosting/state.json                models, endpoint configs, endpoints with each variant's desired and in-service
                                      instance counts, and the scaling targets and policies (restored with
                                      restore=True; `imgclf load` reads the counts while it runs)

Inside, top down (tests/test_imports.py holds it): the service (every operation, the tables of resources); tuning
jobs; training jobs, endpoints and their scaling; a training job's rule jobs (rule_jobs.py, beside the rules they
run); the context (context.py), all a job or an endpoint is given of the stand-in, never the service itself.
"""

from local.sagemaker.errors import SageMakerError
from local.sagemaker.service import LocalSageMaker

__all__ = ["LocalSageMaker", "SageMakerError"]
