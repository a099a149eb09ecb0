"""``hilctl instruments`` (entry point ``hilctl.commands``): the instruments this computer
reaches, or a station's, identified.

Without ``--station``: the VISA resources pyvisa-py finds, the serial ports pyserial lists and
the ArC TWO boards ``pyarc2.find_ids()`` lists (each listing may fail on its own, pyarc2 may not
be installed; the command says so and goes on). With ``--station FILE``: every instrument the
station names is asked who it is -- the board's ``Identify`` (firmware, geometry,
capabilities), ``*IDN?`` of the pulse generator and the SMU, the ArC TWO's id among those its
module's ``find_ids()`` lists -- and reported as ok or with what failed. Exit 0 if every
instrument answered, 3 if any failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import warnings
from typing import Any

from serial.tools import list_ports

from drivers import scpi
from drivers.arc2 import load_module
from drivers.board import BoardClient
from drivers.pulse_generator import PulseGenerator
from drivers.smu import Smu
from drivers.station import load_station
from hilctl.cli.output import EXIT_BENCH, EXIT_OK, print_json
from hilctl.errors import ConfigError, HilctlError
from protocols.station import (
    Arc2Section,
    BoardSection,
    ChipSection,
    InstrumentSection,
    StationConfig,
)

#: Resends of the board's Identify during the check (the station's own ``retries`` may be 20):
#: a dead board is reported after ``(1 + this) * timeout`` seconds.
IDENTIFY_RETRIES = 3


def register(subparsers: Any) -> None:
    """Add ``instruments`` to the ``hilctl`` subcommands."""
    parser = subparsers.add_parser(
        "instruments", help="list VISA resources and serial ports, or identify a station's "
        "instruments",
        description="Without --station: list the VISA resources (pyvisa-py), serial ports and "
        "ArC TWO boards (pyarc2) this computer sees. With --station FILE: identify each "
        "instrument the station names (board: firmware, geometry, capabilities; pulse generator "
        "and SMU: *IDN?; ArC TWO: its id listed) and report ok or what failed; exit 3 if any "
        "failed.")
    parser.add_argument("--station", metavar="FILE.toml",
                        help="station file whose instruments to identify")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout and nothing else")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``hilctl instruments``."""
    if args.station is None:
        return _list(args.json)
    return _identify(args.station, args.json)


# ---------------------------------------------------------------------------------------------
# Listing what is attached.
# ---------------------------------------------------------------------------------------------


def list_visa_resources() -> dict[str, Any]:
    """``{"resources": [...], "error": str | None, "notes": [...]}`` from pyvisa-py; notes are
    the warnings it gave (e.g. discovery limited by a missing optional package)."""
    resources: list[str] = []
    failure: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            resources = list(scpi.shared_resource_manager().list_resources())
        except Exception as exc:  # pyvisa, pyvisa-py and the OS fail in many ways; report them
            failure = f"{type(exc).__name__}: {exc}"
    # pyvisa-py's hints (e.g. discovery limited without psutil / zeroconf); not its ResourceWarnings
    notes = [" ".join(str(w.message).split()) for w in caught
             if not issubclass(w.category, ResourceWarning)]
    return {"resources": resources, "error": failure, "notes": notes}


def list_serial_ports() -> dict[str, Any]:
    """``{"ports": [{"device", "description", "hwid"}, ...], "error": str | None}``."""
    try:
        ports = [{"device": p.device, "description": p.description, "hwid": p.hwid}
                 for p in sorted(list_ports.comports(), key=lambda p: p.device)]
    except Exception as exc:
        return {"ports": [], "error": f"{type(exc).__name__}: {exc}"}
    return {"ports": ports, "error": None}


def list_arc2_boards() -> dict[str, Any]:
    """``{"boards": [ids], "error": str | None, "installed": bool}`` from ``pyarc2.find_ids()``."""
    if importlib.util.find_spec("pyarc2") is None:
        return {"boards": [], "error": None, "installed": False}
    try:
        module = load_module("pyarc2")
    except ConfigError as exc:  # installed but broken (e.g. a wheel for another platform)
        return {"boards": [], "error": str(exc), "installed": True}
    try:
        return {"boards": [int(i) for i in module.find_ids()], "error": None, "installed": True}
    except Exception as exc:  # pyarc2 raises when the USB layer fails
        return {"boards": [], "error": f"{type(exc).__name__}: {exc}", "installed": True}


def _list(as_json: bool) -> int:
    visa = list_visa_resources()
    ports = list_serial_ports()
    arc2 = list_arc2_boards()
    if as_json:
        print_json({"visa": visa, "serial": ports, "arc2": arc2})
        return EXIT_OK
    _print_listing("VISA resources (pyvisa-py)", "VISA resources", visa["error"],
                   [*visa["resources"], *(f"note: {note}" for note in visa["notes"])],
                   found=bool(visa["resources"]))
    width = max((len(p["device"]) for p in ports["ports"]), default=0)
    _print_listing("serial ports (pyserial)", "serial ports", ports["error"],
                   [f"{p['device']:<{width}}  {p['description']}  [{p['hwid']}]"
                    for p in ports["ports"]])
    if not arc2["installed"]:
        print("ArC TWO boards (pyarc2):\n  pyarc2 not installed (pip install 'hilctl[arc2]')")
    else:
        _print_listing("ArC TWO boards (pyarc2)", "ArC TWO boards", arc2["error"],
                       [f"board {board}" for board in arc2["boards"]])
    return EXIT_OK


def _print_listing(title: str, what: str, error: str | None, lines: list[str],
                   found: bool | None = None) -> None:
    """One section of the listing: its title, then why it could not be listed, or "none found"
    (where nothing was ``found``: by default, no ``lines``), then its lines."""
    print(f"{title}:")
    if error:
        print(f"  could not list {what}: {error}")
    elif not (lines if found is None else found):
        print("  none found")
    for line in lines:
        print(f"  {line}")


# ---------------------------------------------------------------------------------------------
# Identifying a station's instruments.
# ---------------------------------------------------------------------------------------------


def identify_board(section: BoardSection, chip: ChipSection) -> dict[str, Any]:
    """Identify the board of a station's ``[board]``; checks the geometry against ``[chip]``."""
    result: dict[str, Any] = {"name": "board", "address": section.port}
    try:
        client = BoardClient(section.port, timeout=section.timeout, baudrate=section.baudrate,
                             retries=min(section.retries, IDENTIFY_RETRIES))
    except HilctlError as exc:
        return {**result, "ok": False, "error": str(exc)}
    try:
        info = client.identify()
    except HilctlError as exc:
        return {**result, "ok": False, "error": str(exc)}
    except Exception as exc:  # a check reports, it does not crash
        return {**result, "ok": False, "error": f"board {section.port}: {type(exc).__name__}: {exc}"}
    finally:
        client.close()
    capabilities = [flag.name.lower() for flag in type(info.capabilities)
                    if flag.value and flag in info.capabilities and flag.name]
    result.update(ok=True, firmware=info.firmware, rows=info.rows, cols=info.cols,
                  capabilities=capabilities)
    if (info.rows, info.cols) != (chip.rows, chip.cols):
        result.update(ok=False, error=f"board {section.port}: reports a {info.rows} x {info.cols} "
                      f"chip but the station says {chip.rows} x {chip.cols}")
    return result


def identify_scpi(name: str, section: InstrumentSection, expected_model: str) -> dict[str, Any]:
    """``*IDN?`` of a station's SCPI instrument; fails if the reply lacks ``expected_model``."""
    result: dict[str, Any] = {"name": name, "address": section.resource}
    timeout_ms = max(1, round(section.timeout * 1000))
    instrument = scpi.ScpiInstrument(section.resource, name=name, timeout_ms=timeout_ms,
                                open_timeout_ms=timeout_ms, retries=0, expected_model=expected_model)
    try:
        idn = instrument.connect()
    except Exception as exc:  # InstrumentError names the resource; anything else is reported too
        text = str(exc)
        if section.resource not in text:
            text = f"{section.resource}: {type(exc).__name__}: {text}"
        return {**result, "ok": False, "error": text}
    finally:
        instrument.close()
    return {**result, "ok": True, "idn": idn}


def identify_arc2(section: Arc2Section) -> dict[str, Any]:
    """Whether the ArC TWO of a station's ``[arc2]`` is among the boards its module lists (the
    board is not opened: that would load its firmware)."""
    result: dict[str, Any] = {"name": "arc2", "address": f"board {section.board}",
                              "module": section.module}
    try:
        found = [int(i) for i in load_module(section.module).find_ids()]
    except ConfigError as exc:
        return {**result, "ok": False, "error": str(exc)}
    except Exception as exc:  # a check reports, it does not crash
        return {**result, "ok": False,
                "error": f"{section.module}.find_ids() failed: {type(exc).__name__}: {exc}"}
    if section.board not in found:
        return {**result, "ok": False, "error": f"arc2.board: no ArC TWO with id {section.board}; "
                f"{section.module}.find_ids() lists {found or 'none'}"}
    return {**result, "ok": True, "boards": found}


def identify_station(station: StationConfig) -> list[dict[str, Any]]:
    """One result per instrument the station names: ``name``, ``address``, ``ok`` and either
    what it reported or ``error``."""
    results = []
    if station.board is not None:
        results.append(identify_board(station.board, station.chip))
    if station.pulse_generator is not None:
        results.append(identify_scpi("pulse_generator", station.pulse_generator,
                                     PulseGenerator.expected_model))
    if station.smu is not None:
        results.append(identify_scpi("smu", station.smu, Smu.expected_model))
    if station.arc2 is not None:
        results.append(identify_arc2(station.arc2))
    return results


def _describe(result: dict[str, Any]) -> str:
    if not result["ok"]:
        return result["error"]
    if result["name"] == "board":
        return (f"firmware {result['firmware']!r}, {result['rows']} x {result['cols']} chip, "
                f"capabilities: {', '.join(result['capabilities']) or 'none'}")
    if result["name"] == "arc2":
        return f"listed by {result['module']}.find_ids(): {result['boards']}"
    return f"*IDN? {result['idn']}"


def _identify(path: str, as_json: bool) -> int:
    station = load_station(path)  # ConfigError (exit 2) names the file and the field
    results = identify_station(station)
    failed = [r for r in results if not r["ok"]]
    if as_json:
        print_json({"station": path, "ok": not failed, "instruments": results})
    else:
        print(f"station {path}:")
        name_width = max((len(r["name"]) for r in results), default=0)
        address_width = max((len(r["address"]) for r in results), default=0)
        for r in results:
            status = "ok" if r["ok"] else "FAILED"
            print(f"  {r['name']:<{name_width}}  {r['address']:<{address_width}}  {status:<6}  "
                  f"{_describe(r)}")
        if not results:
            print("  the station names no instruments")
        elif failed:
            print(f"{len(failed)} of {len(results)} instrument(s) failed: "
                  f"{', '.join(r['name'] for r in failed)}")
        else:
            print(f"all {len(results)} instrument(s) answered")
    return EXIT_BENCH if failed else EXIT_OK
