"""Cloud deployment: package an artifact, deploy it on SageMaker, scale, watch, invoke, advise.

Modules (boto3 is imported lazily, inside the functions that call AWS)::

    package      artifact folder -> model.tar.gz (SageMaker's layout), checksum, upload
    sagemaker    boto3 clients, AWS errors -> stygig.errors, model / endpoint config /
                 endpoint create, blue/green update, promote, rollback, delete, waiters
    autoscaling  target tracking on invocations per instance; async scale-to-zero
    alarms       CloudWatch alarms on ModelLatency and the 4XX / 5XX rates
    preflight    image / role / model archive checks before deploy; no endpoint overwritten
    pipeline     ``deploy pipeline``: build -> package -> upload -> deploy -> wait -> check
    invoke       call an endpoint (SageMaker runtime or a URL), check the response, load check
    advisor      the instance matrix -> instance type, count, cost per month and per request
    command      the ``stygig package | deploy | alarms`` subcommands
    check_command  ``stygig invoke | advise`` and the CPU guard of ``deploy sync``

The core never imports this package.
"""

from __future__ import annotations

__all__: list[str] = []
