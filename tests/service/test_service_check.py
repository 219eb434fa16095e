"""`doctor`'s service check: installed? enabled? running? decided from `systemctl show`'s output
(a pure table), and the shell around the real systemctl."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_agent.checks.doctor import check_service, service_check


def show(load: str, enabled: str, active: str, sub: str) -> str:
    # the exact shape `systemctl show -p LoadState,UnitFileState,ActiveState,SubState` prints
    return f"LoadState={load}\nUnitFileState={enabled}\nActiveState={active}\nSubState={sub}\n"


@pytest.mark.parametrize(
    ("stdout", "status", "says", "fix"),
    [
        (show("loaded", "enabled", "active", "running"), "ok", "installed, enabled, running", ""),
        (show("not-found", "", "inactive", "dead"), "warn", "not installed", "scripts/install"),
        (show("masked", "masked", "inactive", "dead"), "fail", "masked", "systemctl unmask"),
        (
            show("error", "", "inactive", "dead"),
            "fail",
            "cannot load it (error)",
            "systemd-analyze verify",
        ),
        (
            show("loaded", "disabled", "inactive", "dead"),
            "warn",
            "not enabled (disabled)",
            "systemctl enable",
        ),
        (
            show("loaded", "disabled", "active", "running"),
            "warn",
            "will not start at boot; running",
            "systemctl enable",
        ),
        (
            show("loaded", "enabled", "inactive", "dead"),
            "warn",
            "not running (inactive)",
            "systemctl start",
        ),
        (
            show("loaded", "enabled", "failed", "failed"),
            "fail",
            "failed",
            "journalctl -u edge-agent",
        ),
        (show("loaded", "disabled", "failed", "failed"), "fail", "failed", "journalctl"),
        (show("loaded", "enabled", "activating", "start"), "warn", "starting", "journalctl"),
        (show("loaded", "enabled-runtime", "active", "running"), "ok", "running", ""),
    ],
)
def test_service_decision_table(stdout: str, status: str, says: str, fix: str) -> None:
    check = service_check(0, stdout, "")
    assert (check.name, check.status) == ("service", status), check
    assert says in check.detail
    assert fix in check.fix
    if status != "ok":
        assert check.fix


def test_no_systemd_is_said_clearly() -> None:
    none = service_check(None, "", "")
    assert none.status == "skip" and "systemd not available" in none.detail
    # what systemctl prints in a container or chroot without systemd as PID 1
    down = service_check(
        1,
        "",
        "System has not been booted with systemd as init system "
        "(PID 1). Can't operate.\nFailed to connect to bus: Host is down\n",
    )
    assert down.status == "skip"
    assert down.detail == (
        "systemd not available: System has not been booted with systemd as "
        "init system (PID 1). Can't operate."
    )


def test_shell_without_systemctl() -> None:
    assert check_service(which=lambda name: None) == [service_check(None, "", "")]


@pytest.mark.skipif(not shutil.which("systemctl"), reason="systemctl not installed")
def test_shell_runs_the_real_systemctl() -> None:
    [check] = check_service()
    assert check.name == "service"
    if not Path("/run/systemd/system").is_dir():  # systemd is not PID 1 here
        assert check.status == "skip" and check.detail.startswith("systemd not available: ")
    else:
        assert check.status in ("ok", "warn", "fail") and check.detail
