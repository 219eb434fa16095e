"""Every device kind the agent can read, declared explicitly: one entry per driver.

A :class:`DriverSpec` ties a configured ``kind`` to its transport, its sans-I/O decoder, its
serial defaults, its simulator and the matchers used for discovery. Decoders and simulators
are imported lazily so ``edge-agent --help`` stays fast and a broken optional driver cannot
stop the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from drivers import options as opt
from drivers.base import GattDecoder, StreamDecoder

Transport = Literal["serial", "tcp", "ble"]
Options = Mapping[str, Any]


@dataclass(frozen=True)
class SerialDefaults:
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1


def _lazy(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")

    def load(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return load


@dataclass(frozen=True)
class DriverSpec:
    kind: str
    title: str
    transport: Transport
    decoder: Callable[[Options], StreamDecoder] | None = None
    gatt: Callable[[Options], GattDecoder] | None = None
    simulator: Callable[[Options, int], Any] | None = None  # (options, seed) -> DeviceModel
    serial: SerialDefaults = field(default_factory=SerialDefaults)
    idle_timeout: float | None = None  # seconds of silence before decoder.timeout()
    # A streaming device's interval between readings, seconds: connected but quiet for a few
    # of them, it is shown "silent". None: an episodic device (a cuff, a scale, an analyser)
    # that is quiet between patients, never "silent".
    expected_interval: float | None = None
    usb_ids: tuple[str, ...] = ()  # "VID:PID" for `ports`
    ble_services: tuple[str, ...] = ()  # 16-bit service UUIDs for `ble scan`
    # The IEEE 11073-10101 device specialization (MDC_DEV_SPEC_PROFILE_*, partition 8): the
    # FHIR Device.type of such a device (None: no PHD specialization fits).
    mdc_type: int | None = None
    # Checked when the config is loaded: the ``options`` table (pure), then files it names.
    check_options: opt.OptionCheck = opt.no_options
    check_files: opt.OptionCheck | None = None


def _nonin_decoder(options: Options) -> StreamDecoder:
    fmt = int(options.get("data_format", 2))
    decoder = _lazy("drivers.protocols.nonin:NoninDecoder")(fmt)
    if options.get("select_format", False):
        # Sent as soon as the port opens: the device accepts it only in its first 5 s.
        decoder.request_format(fmt)
    made: StreamDecoder = decoder
    return made


def _nonin_simulator(options: Options, seed: int) -> Any:
    return _lazy("drivers.simulators.nonin:NoninModel")(int(options.get("data_format", 2)), seed)


def _astm_decoder(options: Options) -> StreamDecoder:
    from drivers.decode import STREAM_PROTOCOLS

    return STREAM_PROTOCOLS["astm"](options)


def _astm_simulator(options: Options, seed: int) -> Any:
    return _lazy("drivers.simulators.astm_analyser:AstmAnalyserModel")(seed)


def _simple(decoder: str) -> Callable[[Options], StreamDecoder]:
    def make(options: Options) -> StreamDecoder:
        made: StreamDecoder = _lazy(decoder)()
        return made

    return make


def _mllp_decoder(options: Options) -> StreamDecoder:
    # MSH-7 of our ACKs carries the unit's local time with its offset; MSH-10 comes from the
    # process-wide source (unique across connections, devices and restarts).
    clock = _lazy("drivers.transports.mllp_tcp:hl7_now")
    control_ids = _lazy("drivers.transports.hl7_control_ids:next_control_id")
    code_map = _lazy("drivers.decode:code_map_option")(options, "code_map")
    made: StreamDecoder = _lazy("drivers.protocols.mllp:MllpDecoder")(
        clock=clock, control_ids=control_ids, code_map=code_map
    )
    return made


def _scale_decoder(options: Options) -> StreamDecoder:
    grammar = str(options.get("grammar", "auto"))  # or force "indicator" / "balance" (A&D)
    made: StreamDecoder = _lazy("drivers.protocols.scale:ScaleDecoder")(grammar)
    return made


def _cms50_decoder(options: Options) -> StreamDecoder:
    # "v7": CMS50D+ firmware >= 4.6, CMS50E/F (115200 8N1: set baudrate and parity too).
    name = "Cms50V7Decoder" if options.get("protocol") == "v7" else "Cms50Decoder"
    made: StreamDecoder = _lazy(f"drivers.protocols.cms50:{name}")()
    return made


def _cms50_simulator(options: Options, seed: int) -> Any:
    name = "Cms50V7Model" if options.get("protocol") == "v7" else "Cms50Model"
    return _lazy(f"drivers.simulators.cms50:{name}")(seed=seed)


def _seeded(model: str) -> Callable[[Options, int], Any]:
    return lambda options, seed: _lazy(model)(seed=seed)


def _health(*characteristics: str) -> Callable[[Options], GattDecoder]:
    def make(options: Options) -> GattDecoder:
        made: GattDecoder = _lazy("drivers.protocols.ble_health:HealthDecoder")(characteristics)
        return made

    return make


def _glucose(options: Options) -> GattDecoder:
    # The transport reads the meter's identity and its cursor, then calls resume().
    made: GattDecoder = _lazy("drivers.protocols.ble_health:GlucoseDownload")()
    return made


# IEEE 11073-10101 device specializations, partition 8 (infra): 8 * 65536 + term code
# (HL7 PHD IG, ValueSet DeviceTypes11073MDC).
MDC_PULS_OXIM, MDC_BP, MDC_TEMP, MDC_SCALE, MDC_GLUCOSE, MDC_BCA = (
    528388,
    528391,
    528392,
    528399,
    528401,
    528404,
)

_BLE = (
    # kind, title, service, characteristics subscribed (intermediate values are not stored),
    # device specialization
    ("ble-blood-pressure", "Blood pressure monitor (Bluetooth BLS)", "1810", ("2a35",), MDC_BP),
    ("ble-thermometer", "Thermometer (Bluetooth HTS)", "1809", ("2a1c",), MDC_TEMP),
    (
        "ble-pulse-oximeter",
        "Pulse oximeter (Bluetooth PLXS)",
        "1822",
        ("2a5e", "2a5f"),
        MDC_PULS_OXIM,
    ),
    ("ble-weight-scale", "Weight scale (Bluetooth WSS)", "181d", ("2a9d",), MDC_SCALE),
    ("ble-body-composition", "Body composition scale (Bluetooth BCS)", "181b", ("2a9c",), MDC_BCA),
    ("ble-heart-rate", "Heart-rate sensor (Bluetooth HRS)", "180d", ("2a37",), None),
)

DRIVERS: dict[str, DriverSpec] = {
    spec.kind: spec
    for spec in (
        DriverSpec(
            kind="nonin",
            title="Nonin pulse oximeter (serial, Data Format 2/7/8/13)",
            transport="serial",
            expected_interval=1.0,  # a reading every second while worn
            decoder=_nonin_decoder,
            simulator=_nonin_simulator,
            serial=SerialDefaults(9600, 8, "N", 1),
            mdc_type=MDC_PULS_OXIM,
            check_options=opt.nonin,
        ),
        DriverSpec(
            kind="astm",
            title="Point-of-care analyser (ASTM E1381/E1394, e.g. Roche cobas c 111)",
            transport="serial",
            decoder=_astm_decoder,
            simulator=_astm_simulator,
            idle_timeout=30.0,  # E1381: the receiver gives up 30 s after the last frame
            serial=SerialDefaults(9600, 8, "N", 1),
            check_options=opt.astm,
            check_files=opt.astm_files,
        ),
        DriverSpec(
            kind="hl7-mllp",
            title="Vital-signs monitor or gateway sending HL7 v2 ORU^R01 over MLLP",
            transport="tcp",  # a TCP listener (`listen`); on a serial port when `port` is set
            decoder=_mllp_decoder,
            simulator=_seeded("drivers.simulators.hl7_monitor:Hl7MonitorModel"),
            serial=SerialDefaults(9600, 8, "N", 1),
            check_options=opt.hl7,
            check_files=opt.hl7_files,
        ),
        DriverSpec(
            kind="cms50",
            title="Contec CMS50 USB-serial pulse oximeter (legacy live stream, or V7.0 packets)",
            transport="serial",
            expected_interval=1.0,  # a reading every second while worn
            decoder=_cms50_decoder,
            simulator=_cms50_simulator,
            check_options=opt.cms50,
            serial=SerialDefaults(19200, 8, "O", 1),
            usb_ids=("10c4:ea60",),  # Silicon Labs CP210x bridge in the Contec cable
            mdc_type=MDC_PULS_OXIM,
        ),
        DriverSpec(
            kind="nmea",
            title="GPS receiver (NMEA 0183 GGA/RMC)",
            transport="serial",
            expected_interval=1.0,  # a fix every second
            decoder=_simple("drivers.protocols.nmea:NmeaDecoder"),
            simulator=_seeded("drivers.simulators.nmea:GpsModel"),
            serial=SerialDefaults(9600, 8, "N", 1),
            usb_ids=("1546:01a7", "1546:01a8"),  # u-blox 7 / 8
        ),
        DriverSpec(
            kind="scale",
            title="Weighing scale with an ASCII indicator or balance output",
            transport="serial",
            decoder=_scale_decoder,
            simulator=_seeded("drivers.simulators.scale:ScaleModel"),
            serial=SerialDefaults(9600, 8, "N", 1),
            mdc_type=MDC_SCALE,
            check_options=opt.scale,
        ),
        DriverSpec(
            kind="ble-glucose",
            title="Glucose meter (Bluetooth GLS, stored records via RACP)",
            transport="ble",
            gatt=_glucose,
            ble_services=("1808",),
            mdc_type=MDC_GLUCOSE,
        ),
        *(
            DriverSpec(
                kind=kind,
                title=title,
                transport="ble",
                gatt=_health(*chars),
                ble_services=(service,),
                mdc_type=mdc,
            )
            for kind, title, service, chars, mdc in _BLE
        ),
    )
}


class UnknownDriver(KeyError):
    pass


def driver(kind: str) -> DriverSpec:
    try:
        return DRIVERS[kind]
    except KeyError:
        raise UnknownDriver(kind) from None
