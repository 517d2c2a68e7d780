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
from google.protobuf import json_format

from . import _stubs  # noqa: F401  (puts the generated stubs on sys.path)
from .errors import from_rpc_error

try:
    from fluxion.v1 import training_pb2, training_pb2_grpc
except ImportError as err:  # pragma: no cover - depends on the build
    raise ImportError("fluxion_client needs the generated training stubs (build the project): "
                      "%s" % err) from err

import grpc

FINAL_STATES = (training_pb2.SUCCEEDED, training_pb2.FAILED, training_pb2.CANCELLED)


def job_spec(spec):
    """A JobSpec from a dict (proto JSON names or lowerCamelCase) or a JobSpec."""
    if isinstance(spec, training_pb2.JobSpec):
        return spec
    return json_format.ParseDict(spec, training_pb2.JobSpec())


def state_name(state):
    return training_pb2.JobState.Name(state)


class JobsMixin:
    """Training job calls of Client (needs self.channel and self.timeout)."""

    @property
    def training(self):
        stub = getattr(self, "_training_stub", None)
        if stub is None:
            stub = self._training_stub = training_pb2_grpc.TrainingServiceStub(self.channel)
        return stub

    def _call(self, what, method, req):
        try:
            return method(req, timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err, what) from None

    def submit_job(self, spec):
        """Queues a job (spec: dict or JobSpec); returns the stored Job."""
        return self._call("submit_job", self.training.SubmitJob,
                          training_pb2.SubmitJobRequest(spec=job_spec(spec)))

    def get_job(self, job_id):
        return self._call("get_job", self.training.GetJob,
                          training_pb2.GetJobRequest(id=str(job_id)))

    def list_jobs(self, state=None, model=""):
        """Jobs in submission order; state: a JobState value or its name."""
        if isinstance(state, str):
            state = training_pb2.JobState.Value(state)
        req = training_pb2.ListJobsRequest(state=state or 0, model=model)
        return list(self._call("list_jobs", self.training.ListJobs, req).jobs)

    def cancel_job(self, job_id):
        return self._call("cancel_job", self.training.CancelJob,
                          training_pb2.CancelJobRequest(id=str(job_id)))

    def update_job(self, job_id, priority=None, device=None):
        """Re-prioritises (priority: "low", "normal", "high" or a JobPriority
        value) or moves (device: "cpu", "cuda:0", "gpu") a QUEUED job;
        FAILED_PRECONDITION once it runs. Returns the Job."""
        if isinstance(priority, str):
            priority = training_pb2.JobPriority.Value(priority.upper())
        req = training_pb2.UpdateJobRequest(id=str(job_id), priority=priority or 0,
                                            device=device or "")
        return self._call("update_job", self.training.UpdateJob, req)

    def watch_job(self, job_id, timeout=None):
        """Iterator of JobEvents: a SNAPSHOT first, then every change, ending
        after the final state. timeout: for the whole watch (None: none)."""
        stream = self.training.WatchJob(training_pb2.WatchJobRequest(id=str(job_id)),
                                        timeout=timeout)
        try:
            for ev in stream:
                yield ev
        except grpc.RpcError as err:
            raise from_rpc_error(err, "watch_job") from None
        finally:
            stream.cancel()

    def wait_job(self, job_id, timeout=None):
        """Watches until the job ends; returns its final Job."""
        last = None
        for ev in self.watch_job(job_id, timeout=timeout):
            last = ev.job
        return last
