"""The life of a version (docs/versions.md): ModelService.UpdateVersions as
Client methods. Each returns the Model as it is after the change
(production_version, aliases, history, keep_last, versions[].pinned).

    c.promote("mlp", 3)             # production -> v3, served at once
    c.rollback("mlp")               # production -> the version before
    c.set_alias("mlp", "canary", 4)
    c.pin("mlp", 2); c.set_retention("mlp", 5); c.delete_version("mlp", 1)
"""
from __future__ import annotations

from typing import Any, Optional

from ._stubs import model_pb2
from .errors import wrap


class VersionsMixin:
    """ModelService.UpdateVersions calls of Client (needs self.models)."""

    models: Any
    timeout: Optional[float]

    def _update_versions(self, name: str, reason: str = "", **action: Any) -> model_pb2.Model:
        req = model_pb2.UpdateVersionsRequest(name=name, reason=reason, **action)
        return self.models.UpdateVersions(req, timeout=self.timeout)

    @wrap
    def promote(self, name: str, version: int, reason: str = "") -> model_pb2.Model:
        """ModelService.UpdateVersions promote: the alias "production" (the
        version served) to version, recorded in the history with reason."""
        return self._update_versions(name, reason, promote=version)

    @wrap
    def rollback(self, name: str) -> model_pb2.Model:
        """ModelService.UpdateVersions rollback: "production" back to the
        version before its last move (again: one further back)."""
        return self._update_versions(name, rollback=True)

    @wrap
    def set_alias(self, name: str, alias: str, version: int,
                  reason: str = "") -> model_pb2.Model:
        """ModelService.UpdateVersions set_alias: alias ([a-z][a-z0-9_-]{0,31})
        to version; ModelInfer accepts it as model_version."""
        return self._update_versions(name, reason, set_alias=model_pb2.SetAliasAction(
            alias=alias, version=version))

    @wrap
    def delete_alias(self, name: str, alias: str) -> model_pb2.Model:
        """ModelService.UpdateVersions delete_alias ("production" cannot be)."""
        return self._update_versions(name, delete_alias=alias)

    @wrap
    def pin(self, name: str, version: int) -> model_pb2.Model:
        """ModelService.UpdateVersions pin: retention keeps the version and
        delete_version refuses it."""
        return self._update_versions(name, pin=version)

    @wrap
    def unpin(self, name: str, version: int) -> model_pb2.Model:
        """ModelService.UpdateVersions unpin."""
        return self._update_versions(name, unpin=version)

    @wrap
    def set_retention(self, name: str, keep_last: int) -> model_pb2.Model:
        """ModelService.UpdateVersions keep_last: keep the last keep_last
        versions plus every aliased or pinned one (0: every version);
        applied now and whenever a version is added."""
        return self._update_versions(name, keep_last=keep_last)

    @wrap
    def delete_version(self, name: str, version: int) -> model_pb2.Model:
        """ModelService.UpdateVersions delete_version: FailedPrecondition
        while it is served, aliased, pinned or a queued or running job
        trains from it."""
        return self._update_versions(name, delete_version=version)
