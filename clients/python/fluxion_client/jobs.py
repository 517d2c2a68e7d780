"""Training jobs (fluxion.v1.TrainingService): submit a JobSpec, follow it
live, cancel it. A finished job adds a version to its model.

    job = c.submit_job({"model": "mlp", "dataset": "blobs",
                        "feeds": [{"input": "x", "tensor": "x"}],
                        "losses": [{"output": "logits", "kind": "cross_entropy",
                                    "target": "y"}],
                        "optimizer": {"kind": "adam", "lr": 0.01}, "epochs": 5})
    for ev in c.watch_job(job.id):
        print(ev.kind, ev.job.progress.step, ev.job.progress.train_loss)
"""
from __future__ import annotations

from typing import Any, Iterator, List, Mapping, Optional, Union, cast

import grpc
from google.protobuf import json_format

from ._stubs import training_pb2, training_pb2_grpc
from .errors import wrap

FINAL_STATES = (training_pb2.SUCCEEDED, training_pb2.FAILED, training_pb2.CANCELLED)


def job_spec(spec: Union[Mapping[str, Any], training_pb2.JobSpec]) -> training_pb2.JobSpec:
    """A JobSpec from a dict (proto JSON names or lowerCamelCase) or a JobSpec."""
    if isinstance(spec, training_pb2.JobSpec):
        return spec
    return json_format.ParseDict(spec, training_pb2.JobSpec())


def state_name(state: int) -> str:
    """The JobState's name ("RUNNING", ...)."""
    return training_pb2.JobState.Name(state)


class JobsMixin:
    """TrainingService calls of Client (needs self.channel and self.timeout)."""

    channel: grpc.Channel
    timeout: Optional[float]

    @property
    def training(self) -> training_pb2_grpc.TrainingServiceStub:
        """The raw TrainingService stub on the client's channel."""
        stub = getattr(self, "_training_stub", None)
        if stub is None:
            stub = self._training_stub = training_pb2_grpc.TrainingServiceStub(self.channel)
        return stub

    @wrap
    def submit_job(self, spec: Union[Mapping[str, Any], training_pb2.JobSpec]) -> training_pb2.Job:
        """TrainingService.SubmitJob: queues a job (spec: dict or JobSpec);
        returns the stored Job."""
        return self.training.SubmitJob(training_pb2.SubmitJobRequest(spec=job_spec(spec)),
                                       timeout=self.timeout)

    @wrap
    def get_job(self, job_id: Union[str, int]) -> training_pb2.Job:
        """TrainingService.GetJob: its state, progress and metrics."""
        return self.training.GetJob(training_pb2.GetJobRequest(id=str(job_id)),
                                    timeout=self.timeout)

    @wrap
    def list_jobs(self, state: Union[int, str, None] = None,
                  model: str = "") -> List[training_pb2.Job]:
        """TrainingService.ListJobs: jobs in submission order; state: a
        JobState value or its name; model: only that model's."""
        value = training_pb2.JobState.Value(state) if isinstance(state, str) else state or 0
        req = training_pb2.ListJobsRequest(state=cast(Any, value), model=model)
        return list(self.training.ListJobs(req, timeout=self.timeout).jobs)

    @wrap
    def cancel_job(self, job_id: Union[str, int]) -> training_pb2.Job:
        """TrainingService.CancelJob: a queued or running job ends CANCELLED."""
        return self.training.CancelJob(training_pb2.CancelJobRequest(id=str(job_id)),
                                       timeout=self.timeout)

    @wrap
    def resume_job(self, job_id: Union[str, int]) -> training_pb2.Job:
        """TrainingService.ResumeJob: a CANCELLED job is queued again to
        continue from its checkpoint (FailedPrecondition without one)."""
        return self.training.ResumeJob(training_pb2.ResumeJobRequest(id=str(job_id)),
                                       timeout=self.timeout)

    @wrap
    def update_job(self, job_id: Union[str, int], priority: Union[int, str, None] = None,
                   device: Optional[str] = None) -> training_pb2.Job:
        """TrainingService.UpdateJob: re-prioritises (priority: "low",
        "normal", "high" or a JobPriority value) or moves (device: "cpu",
        "cuda:0", "gpu") a QUEUED job; FailedPrecondition once it runs."""
        value = (training_pb2.JobPriority.Value(priority.upper()) if isinstance(priority, str)
                 else priority or 0)
        req = training_pb2.UpdateJobRequest(id=str(job_id), priority=cast(Any, value),
                                            device=device or "")
        return self.training.UpdateJob(req, timeout=self.timeout)

    @wrap
    def watch_job(self, job_id: Union[str, int],
                  timeout: Optional[float] = None) -> Iterator[training_pb2.JobEvent]:
        """TrainingService.WatchJob: an iterator of JobEvents, a SNAPSHOT
        first, then every change, ending after the final state. timeout: for
        the whole watch (None: none)."""
        yield from self._watch(job_id, timeout)

    def _watch(self, job_id: Union[str, int],
               timeout: Optional[float]) -> Iterator[training_pb2.JobEvent]:
        stream = self.training.WatchJob(training_pb2.WatchJobRequest(id=str(job_id)),
                                        timeout=timeout)
        try:
            yield from stream
        finally:
            stream.cancel()

    @wrap
    def wait_job(self, job_id: Union[str, int],
                 timeout: Optional[float] = None) -> Optional[training_pb2.Job]:
        """TrainingService.WatchJob until the job ends; returns its final Job."""
        last = None
        for ev in self._watch(job_id, timeout):
            last = ev.job
        return last
