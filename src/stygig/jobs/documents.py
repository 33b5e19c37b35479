"""What an async job writes at its output or failure location, typed.

A job's result document is the answer (:class:`~stygig.answer.Recommendation`'s JSON, as
``POST /invocations`` gives it) and its failure document an :class:`Failure`, each followed by
the job's :class:`JobProof`: its id and token, by which a later attempt or the server knows the
document is this job's (:meth:`stygig.jobs.store.Job.owns`). The worker writes them from these
types; :class:`JobResult` and :class:`JobFailure` are the whole documents, for the OpenAPI schema
of ``GET /async/jobs/{id}/output``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from stygig.answer import AnswerDocument
from stygig.jobs.store import JobError

__all__ = ["Failure", "JobFailure", "JobProof", "JobResult"]

# Descriptions in the annotations, not as attribute docstrings: pydantic reads those of a
# class's own fields only, and these are inherited.


@dataclass
class JobProof:
    """The job a document was written for."""

    InferenceId: Annotated[str, Field(description="the job's id")]
    JobToken: Annotated[
        str | None,
        Field(description="the job's token (null for a job submitted before tokens existed)"),
    ]


@dataclass
class Failure:
    """Why a job failed, as its failure document holds it (before the :class:`JobProof`)."""

    error: Annotated[JobError, Field(description="the error, as the job's status shows it")]
    attempts: Annotated[int, Field(description="attempts started, this one included")]


@dataclass
class JobResult(JobProof, AnswerDocument):
    """A succeeded job's document: the answer, as ``POST /invocations`` gives it, then the
    job's id and token."""


@dataclass
class JobFailure(JobProof, Failure):
    """A failed job's document: the error and the attempts, then the job's id and token."""
