"""imgclf: operate the image-classifier pipeline (AWS or a local run) and report on its results.

Every read goes through boto3-shaped calls, answered either by real AWS clients or by a recording of the same
calls that a local run leaves behind (cli/recording/), so each verb has one code path for both.
"""
