"""Errors of edge-agent, with the data a human or a program needs to act on them.

EdgeAgentError(key, **params)          exit code, translation key, parameters
├── ConfigError(file, field, problem, fix)     exit 3: needs an operator
├── StoreError                                 exit 4
│   ├── StoreFull                              retriable once space is freed
│   └── StoreNotDurable                        WAL/synchronous=FULL could not be set
├── LinkError                                  exit 5: broker unreachable, TLS, refused
└── DeviceError(device_id)
    ├── DeviceUnavailable                      retriable: port gone, cable pulled
    └── DeviceMisconfigured                    needs an operator: wrong port, no permission
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    exit_code = 1

    def __init__(self, key: str, message: str, **params: object) -> None:
        super().__init__(message)
        self.key = key
        self.params = params


class ConfigError(EdgeAgentError):
    exit_code = 3

    def __init__(self, file: str, field: str, problem: str, fix: str) -> None:
        super().__init__(
            "config.invalid",
            f"{file}: {field}: {problem}. Fix: {fix}",
            file=file,
            field=field,
            problem=problem,
            fix=fix,
        )
        self.file, self.field, self.problem, self.fix = file, field, problem, fix


class StoreError(EdgeAgentError):
    exit_code = 4


class StoreFull(StoreError):
    def __init__(self, path: str) -> None:
        super().__init__(
            "store.full",
            f"{path}: the disk is full; readings are kept in memory until space is "
            "freed (purge exported files, or move the store)",
            path=path,
        )


class StoreNotDurable(StoreError):
    def __init__(self, path: str, detail: str) -> None:
        super().__init__("store.not_durable", f"{path}: {detail}", path=path, detail=detail)


class LinkError(EdgeAgentError):
    exit_code = 5


class DeviceError(EdgeAgentError):
    def __init__(self, key: str, device_id: str, message: str) -> None:
        super().__init__(key, f"{device_id}: {message}", device_id=device_id)
        self.device_id = device_id


class DeviceUnavailable(DeviceError):
    def __init__(self, device_id: str, message: str) -> None:
        super().__init__("device.unavailable", device_id, message)


class DeviceMisconfigured(DeviceError):
    def __init__(self, device_id: str, message: str) -> None:
        super().__init__("device.misconfigured", device_id, message)
