"""Downlink messages from central (``down/cmd``, ``down/config``), validated before anything
is applied. Refusals carry a reason that is published back on ``up/events``.

Who may send them is the broker's business: the shipped ACL lets only central's identity
write ``mmu/v1/+/down/#``. Configuration changes carry an increasing ``version``: a replayed or
older one is refused, and only the ``[sync]`` section can change remotely (devices and the
store need an operator on site), validated with the same pydantic model as the file.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.settings import Settings, SyncSettings
from sync.refusals import AlreadyApplied, DownlinkRefused

MAX_DOWNLINK = 16 * 1024


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=64)]
    cmd: Literal[
        "sync-now", "resend-from", "diagnostics", "teleconsult", "trust-reset", "rotate-key"
    ]
    seq: Annotated[int, Field(ge=1)] | None = None
    epoch: Annotated[str, Field(min_length=1, max_length=64)] | None = None  # resend-from
    # teleconsult: the encounter in teleconsultation now (its files go first); None: ended.
    encounter: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    # trust-reset ("config") and rotate-key (the new key set): checked by sync.signing first
    keys: str | list[str] | None = None

    @model_validator(mode="after")
    def _seq_for_resend(self) -> Command:
        if self.cmd == "resend-from" and self.seq is None:
            raise ValueError("resend-from needs seq")
        return self


class ConfigChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[int, Field(ge=1)]
    sync: dict[str, Any] = {}


def _load(payload: bytes) -> Any:
    if len(payload) > MAX_DOWNLINK:
        raise DownlinkRefused(f"message of {len(payload)} bytes is over {MAX_DOWNLINK}")
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DownlinkRefused(f"not JSON: {exc}") from None


def _reason(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(message)"
    return f"{where}: {err['msg']}"


def parse_command(payload: bytes) -> Command:
    try:
        return Command.model_validate(_load(payload))
    except ValidationError as exc:
        raise DownlinkRefused(_reason(exc)) from None


def apply_config(
    current: Settings,
    payload: bytes,
    applied_version: int,
    applied_sync: dict[str, Any] | None = None,
) -> tuple[Settings, int]:
    """The new settings and version, all or nothing. The version applied last, with the same
    content, raises :class:`AlreadyApplied`; an older one, or the same version with other
    content (a replay or a forgery), is refused."""
    try:
        change = ConfigChange.model_validate(_load(payload))
    except ValidationError as exc:
        raise DownlinkRefused(_reason(exc)) from None
    if (
        change.version == applied_version
        and applied_sync is not None
        and (change.sync == applied_sync)
    ):
        raise AlreadyApplied(change.version)
    if change.version <= applied_version:
        raise DownlinkRefused(f"version {change.version} is not newer than {applied_version}")
    try:
        sync = SyncSettings.model_validate({**current.sync.model_dump(), **change.sync})
    except ValidationError as exc:
        raise DownlinkRefused("sync." + _reason(exc)) from None
    return current.model_copy(update={"sync": sync}), change.version


def saved_config(version: int, payload: bytes) -> dict[str, Any]:
    """What the store keeps of an applied change, to apply it again at the next start."""
    change = ConfigChange.model_validate(_load(payload))
    return {"version": version, "sync": change.sync}


def restore_config(current: Settings, saved: Any) -> tuple[Settings, int, dict[str, Any] | None]:
    """The file's settings with the remote change applied before (kept in the store) on top;
    a saved change that no longer validates (the file changed meanwhile) is dropped."""
    if not isinstance(saved, dict) or not isinstance(saved.get("version"), int):
        return current, 0, None
    change = saved.get("sync")
    if not isinstance(change, dict):
        return current, saved["version"], None
    try:
        sync = SyncSettings.model_validate({**current.sync.model_dump(), **change})
    except ValidationError:
        return current, saved["version"], None
    return current.model_copy(update={"sync": sync}), saved["version"], change
