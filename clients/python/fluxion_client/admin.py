"""Administration (fluxion.v1.AdminService): who the caller is, teams,
tokens, client-certificate principals. All but whoami() and get_team() of
one's own team need an admin token.

    with Client("fluxion.example.com:7443", token=admin_secret, tls_ca="ca.pem") as c:
        c.create_team("a", display_name="Team A", max_models=10)
        made = c.create_token("ci", role="member", team="a", ttl_seconds=30 * 86400)
        print(made.secret)        # shown only here: store it
        c.revoke_token(made.token.id)
"""
from __future__ import annotations

from typing import Any, List, Optional

import grpc

from ._stubs import admin_pb2, admin_pb2_grpc
from .errors import from_rpc_error

MIB = 1 << 20


def _quota(max_models: Optional[int], max_weight_bytes: Optional[int],
           max_dataset_bytes: Optional[int], **sched: Optional[int]) -> admin_pb2.TeamQuota:
    return admin_pb2.TeamQuota(max_models=max_models or 0,
                               max_weight_bytes=max_weight_bytes or 0,
                               max_dataset_bytes=max_dataset_bytes or 0,
                               **{k: v or 0 for k, v in sched.items()})


# The scheduling fields of TeamQuota (docs/scheduling.md); 0: the daemon's
# default (--team-weight, --team-cpu-slots, --team-gpu-slots), whose 0 is none.
# gpu_memory_bytes: the GPU memory its running jobs' estimates may hold.
SCHED_QUOTA_FIELDS = ("weight", "cpu_slots", "gpu_slots", "borrow_cpu_slots",
                      "borrow_gpu_slots", "budget_device_seconds", "budget_window_seconds",
                      "max_running_jobs", "gpu_memory_bytes")


def _check_sched(sched: Any) -> None:
    unknown = sorted(set(sched) - set(SCHED_QUOTA_FIELDS))
    if unknown:
        raise TypeError("unknown quota fields %s (known: %s)" % (
            ", ".join(unknown), ", ".join(SCHED_QUOTA_FIELDS)))


# The client method named in errors, per AdminService method.
_METHOD_NAMES = {"WhoAmI": "whoami", "CreateTeam": "create_team", "GetTeam": "get_team",
                 "ListTeams": "list_teams", "UpdateTeam": "update_team",
                 "DeleteTeam": "delete_team", "CreateToken": "create_token",
                 "ListTokens": "list_tokens", "RevokeToken": "revoke_token",
                 "AddCertPrincipal": "add_cert_principal",
                 "ListCertPrincipals": "list_cert_principals",
                 "RemoveCertPrincipal": "remove_cert_principal"}


class AdminMixin:
    """AdminService calls of Client (needs self.channel and self.timeout)."""

    channel: grpc.Channel
    timeout: Optional[float]

    def _admin(self, method: str, request: Any) -> Any:
        stub = getattr(self, "_admin_stub", None)
        if stub is None:
            stub = self._admin_stub = admin_pb2_grpc.AdminServiceStub(self.channel)
        try:
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err, _METHOD_NAMES.get(method, method)) from None

    def whoami(self) -> admin_pb2.WhoAmIResponse:
        """AdminService.WhoAmI: team, role, principal ("token:NAME", "cert:SUBJECT",
        "local"), token_id, expires_ms, local_mode, tls."""
        return self._admin("WhoAmI", admin_pb2.WhoAmIRequest())

    # ----------------------------------------------------------------- teams

    def create_team(self, name: str, display_name: str = "", max_models: int = 0,
                    max_weight_bytes: int = 0, max_dataset_bytes: int = 0,
                    **sched: int) -> admin_pb2.Team:
        """AdminService.CreateTeam (admin): a new team (quotas: 0 is the daemon's default; sched: any of
        SCHED_QUOTA_FIELDS, e.g. weight=2, cpu_slots=1). Returns Team."""
        _check_sched(sched)
        return self._admin("CreateTeam", admin_pb2.CreateTeamRequest(
            name=name, display_name=display_name,
            quota=_quota(max_models, max_weight_bytes, max_dataset_bytes, **sched)))

    def get_team(self, name: str = "") -> admin_pb2.Team:
        """AdminService.GetTeam: a team with its quotas and usage ("": the caller's own)."""
        return self._admin("GetTeam", admin_pb2.GetTeamRequest(name=name))

    def list_teams(self) -> List[admin_pb2.Team]:
        """AdminService.ListTeams (admin): every team."""
        return list(self._admin("ListTeams", admin_pb2.ListTeamsRequest()).teams)

    def update_team(self, name: str, display_name: str = "", max_models: Optional[int] = None,
                    max_weight_bytes: Optional[int] = None,
                    max_dataset_bytes: Optional[int] = None,
                    **sched: Optional[int]) -> admin_pb2.Team:
        """AdminService.UpdateTeam (admin): changes the display name (when not "") and the limits given (None:
        keep; 0: back to the daemon's default), the scheduling ones too (sched:
        any of SCHED_QUOTA_FIELDS). Returns Team."""
        _check_sched(sched)
        req = admin_pb2.UpdateTeamRequest(name=name, display_name=display_name)
        given = (max_models, max_weight_bytes, max_dataset_bytes) + tuple(sched.values())
        if any(v is not None for v in given):
            cur = self.get_team(name).quota  # the server replaces the quota as a whole
            keep = {f: getattr(cur, f) if sched.get(f) is None else sched[f]
                    for f in SCHED_QUOTA_FIELDS}
            req.quota.CopyFrom(_quota(
                cur.max_models if max_models is None else max_models,
                cur.max_weight_bytes if max_weight_bytes is None else max_weight_bytes,
                cur.max_dataset_bytes if max_dataset_bytes is None else max_dataset_bytes,
                **keep))
        return self._admin("UpdateTeam", req)

    def set_team_quota(self, name: str, **sched: Any) -> admin_pb2.Team:
        """AdminService.UpdateTeam of the scheduling quota only (fluxion team quota): update_team with
        SCHED_QUOTA_FIELDS given, the others kept. Returns Team."""
        return self.update_team(name, **sched)

    def delete_team(self, name: str) -> None:
        """AdminService.DeleteTeam (admin); refused (FAILED_PRECONDITION) while the team owns models, datasets or jobs."""
        self._admin("DeleteTeam", admin_pb2.DeleteTeamRequest(name=name))

    # ---------------------------------------------------------------- tokens

    def create_token(self, name: str, role: str, team: str = "",
                     ttl_seconds: int = 0) -> admin_pb2.CreateTokenResponse:
        """AdminService.CreateToken (admin): a bearer token; role "admin", "member" or "viewer"; ttl_seconds 0:
        never expires. Returns CreateTokenResponse: .token (Token) and
        .secret, which is shown only here."""
        return self._admin("CreateToken", admin_pb2.CreateTokenRequest(
            team=team, name=name, role=role, ttl_seconds=int(ttl_seconds)))

    def list_tokens(self, team: str = "",
                    include_revoked: bool = False) -> List[admin_pb2.Token]:
        """AdminService.ListTokens (admin): tokens (never their secrets); team "": every team."""
        return list(self._admin("ListTokens", admin_pb2.ListTokensRequest(
            team=team, include_revoked=include_revoked)).tokens)

    def revoke_token(self, id: int = 0, team: str = "",  # noqa: A002 (the proto's field)
                     name: str = "") -> admin_pb2.Token:
        """AdminService.RevokeToken (admin): revokes a token by id, or by team and name: its next call fails.
        Returns the Token."""
        if not id and not (team and name):
            raise ValueError("revoke_token needs an id, or a team and a name")
        return self._admin("RevokeToken", admin_pb2.RevokeTokenRequest(
            id=int(id or 0), team=team, name=name))

    # -------------------------------------------------- certificate principals

    def add_cert_principal(self, subject: str, team: str, role: str) -> admin_pb2.CertPrincipal:
        """AdminService.AddCertPrincipal (admin): maps a client certificate's subject ("CN=alice,O=Example") or common
        name to a team and role (mutual TLS). Returns CertPrincipal."""
        return self._admin("AddCertPrincipal", admin_pb2.AddCertPrincipalRequest(
            subject=subject, team=team, role=role))

    def list_cert_principals(self) -> List[admin_pb2.CertPrincipal]:
        """AdminService.ListCertPrincipals (admin)."""
        return list(self._admin("ListCertPrincipals",
                                admin_pb2.ListCertPrincipalsRequest()).principals)

    def remove_cert_principal(self, subject: str) -> None:
        """AdminService.RemoveCertPrincipal (admin)."""
        self._admin("RemoveCertPrincipal", admin_pb2.RemoveCertPrincipalRequest(subject=subject))
