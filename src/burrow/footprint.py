"""Environmental footprint of a command: wall time, energy and CO₂ (codecarbon, offline) plus counted FLOPs.

    with track(run_dir, "train") as stage:
        result = train(config)
        stage.flops, stage.flops_formula = 6 * params * tokens, "6·N·D"

Each call appends one record to ``DIR/footprint.json`` (written atomically): the stage, seconds,
energy (kWh, CPU + RAM + GPU as codecarbon estimates them), emissions (kg CO₂-eq, from the energy and
the carbon intensity of the configured country or region), and the FLOPs the caller counted. A
resumed command adds a record for each call; a call that did nothing (``stage.skipped = True``)
adds none; a call that fails records what it used up to then (``interrupted``). The tracker starts in a
background thread (its hardware detection takes ~2 s), so energy is measured from
``energy_from_seconds`` into the call.

codecarbon's ``OfflineEmissionsTracker`` needs no network: the country comes from
``$BURROW_CO2_COUNTRY`` (ISO 3166 alpha-3, default ``USA``), optionally a region from
``$BURROW_CO2_REGION``; ``BURROW_FOOTPRINT=0`` turns tracking off. Without codecarbon (or when its
tracker cannot start) the record keeps time and FLOPs and says why energy is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from burrow.artefacts import read_json, write_json
from burrow.errors import BurrowError

log = logging.getLogger(__name__)

FOOTPRINT_FILE = "footprint.json"


@dataclass
class FootprintConfig:
    """Where the energy is used (for its carbon intensity) and whether to track at all."""

    country: str = field(default_factory=lambda: os.environ.get("BURROW_CO2_COUNTRY", "USA"))  # ISO alpha-3
    region: str | None = field(default_factory=lambda: os.environ.get("BURROW_CO2_REGION") or None)  # e.g. a US state
    enabled: bool = field(default_factory=lambda: os.environ.get("BURROW_FOOTPRINT", "1") != "0")
    measure_power_secs: float = 15.0  # codecarbon's sampling interval

    def __post_init__(self) -> None:
        if len(self.country) != 3 or not self.country.isalpha():
            raise BurrowError(f"BURROW_CO2_COUNTRY must be an ISO 3166 alpha-3 country code such as USA or FRA, "
                              f"got {self.country!r}")
        self.country = self.country.upper()


@dataclass
class Stage:
    """What the caller tells the tracker about the work done inside the block."""

    name: str
    flops: float | None = None  # counted floating-point operations of this call
    flops_formula: str = ""  # how they were counted, e.g. "6·N·D, N = 12.3M parameters, D = 819,200 tokens"
    skipped: bool = False  # nothing was done (a finished stage re-run): record nothing
    extra: dict[str, Any] = field(default_factory=dict)


def _start_tracker(config: FootprintConfig) -> tuple[Any, str | None]:
    """(a started codecarbon tracker, None), or (None, why not)."""
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        return None, "codecarbon is not installed (pip install codecarbon)"
    logging.getLogger("codecarbon").setLevel(logging.ERROR)  # its INFO/WARNING lines would drown the command's
    kwargs: dict[str, Any] = {"country_iso_code": config.country, "save_to_file": False, "log_level": "error",
                              "measure_power_secs": config.measure_power_secs, "tracking_mode": "process"}
    if config.region:
        kwargs["region"] = config.region
    try:
        tracker = OfflineEmissionsTracker(**kwargs)
        tracker.start()
    except Exception as e:  # a tracker that cannot start must never stop the real work
        return None, f"codecarbon could not start ({type(e).__name__}: {e})"
    return tracker, None


def _stop_tracker(tracker: Any) -> dict[str, Any]:
    try:
        tracker.stop()
        d = tracker.final_emissions_data
    except Exception as e:
        return {"energy_error": f"codecarbon failed ({type(e).__name__}: {e})"}
    return {"energy_kwh": float(d.energy_consumed), "emissions_kg": float(d.emissions),
            "cpu_energy_kwh": float(d.cpu_energy), "ram_energy_kwh": float(d.ram_energy),
            "gpu_energy_kwh": float(d.gpu_energy), "cpu_power_w": float(d.cpu_power),
            "country": d.country_iso_code, "region": d.region or None, "cpu_model": d.cpu_model,
            "gpu_model": d.gpu_model or None, "tracker": f"codecarbon {d.codecarbon_version} (offline)"}


class _BackgroundStart:
    """codecarbon's tracker, started beside the command rather than before it.

    Its hardware detection runs py-cpuinfo, which starts a Python subprocess (~2 s here): every tracked
    command waited that long before its first step, an error on bad input too. Started in a thread, the
    tracker begins measuring ``delay`` seconds into the command; a command that ends sooner and records
    nothing abandons it, and the thread stops the tracker as soon as it has started, so none is left
    sampling in a long-lived process.
    """

    WAIT_SECONDS = 60.0  # how long a finished command that records its footprint waits for the start

    def __init__(self, config: FootprintConfig) -> None:
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._done = False  # the start has finished, started or not (under the lock)
        self._abandoned = False
        self.tracker: Any = None
        self.why: str | None = None
        self.delay: float | None = None
        self._thread = threading.Thread(target=self._run, args=(config,), name="burrow-footprint", daemon=True)
        self._thread.start()

    def _run(self, config: FootprintConfig) -> None:
        try:
            tracker, why = _start_tracker(config)
        except Exception as e:  # e.g. codecarbon's own imports failing: one reason in the record, no traceback
            tracker, why = None, f"codecarbon could not start ({type(e).__name__}: {e})"
        with self._lock:
            self._done = True
            if not self._abandoned:
                self.tracker, self.why = tracker, why
                self.delay = time.perf_counter() - self._t0 if tracker is not None else None
                return
        if tracker is not None:  # nobody will read it: do not leave it sampling
            _stop_tracker(tracker)

    def result(self, wait: bool) -> tuple[Any, str | None, float | None]:
        """(tracker or None, why not, seconds into the command it started); a start still under way after
        the wait (none with ``wait=False``; an interrupted wait too) is abandoned."""
        try:
            self._thread.join(self.WAIT_SECONDS if wait else 0.0)
        finally:
            with self._lock:
                if not self._done:
                    self._abandoned = True
                    self.why = (f"codecarbon did not start within {self.WAIT_SECONDS:.0f} s" if wait
                                else "codecarbon did not start before the command ended")
        return self.tracker, self.why, self.delay


@contextlib.contextmanager
def track(directory: str | Path, stage: str, config: FootprintConfig | None = None) -> Iterator[Stage]:
    """Measure the block and append its record to ``directory/footprint.json`` (see the module docstring)."""
    config = config or FootprintConfig()
    st = Stage(stage)
    if not config.enabled:
        yield st
        return
    start = _BackgroundStart(config)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    interrupted = True
    try:
        yield st
        interrupted = False
    finally:
        records = not st.skipped and Path(directory).is_dir()
        tracker, why, delay = start.result(wait=records)
        energy = _stop_tracker(tracker) if tracker is not None else {"energy_error": why}
        if records:
            # codecarbon measures from its start: the energy covers the command from ``energy_from_seconds``
            record = {"stage": stage, "started": started, "seconds": time.perf_counter() - t0, **energy,
                      "energy_from_seconds": delay, "flops": st.flops, "flops_formula": st.flops_formula,
                      "interrupted": interrupted, **st.extra}
            try:
                append_record(directory, record)
            except (OSError, BurrowError) as e:  # the footprint is a by-product: never fail the command for it
                log.warning("could not record the footprint in %s: %s", directory, e)


def append_record(directory: str | Path, record: dict[str, Any]) -> None:
    """Add ``record`` to ``directory/footprint.json`` (atomic rewrite)."""
    path = Path(directory) / FOOTPRINT_FILE
    data = read_footprint(directory) or {"kind": "footprint", "format_version": 1, "calls": []}
    data["calls"].append(record)
    write_json(path, data)


def read_footprint(directory: str | Path) -> dict[str, Any] | None:
    """``directory/footprint.json`` as written by :func:`track`, or None when there is none."""
    path = Path(directory) / FOOTPRINT_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("kind") != "footprint":
        raise BurrowError(f"{path} is not a burrow footprint file; delete it")
    return data


def totals(data: dict[str, Any]) -> dict[str, Any]:
    """Sums over a footprint file's calls, per stage: seconds, energy, emissions, FLOPs."""
    out: dict[str, dict[str, Any]] = {}
    for call in data.get("calls", []):
        t = out.setdefault(call["stage"], {"calls": 0, "seconds": 0.0, "energy_kwh": 0.0, "emissions_kg": 0.0,
                                           "flops": 0.0, "energy_missing": 0, "flops_formula": ""})
        t["calls"] += 1
        t["seconds"] += float(call.get("seconds") or 0.0)
        if call.get("energy_kwh") is None:
            t["energy_missing"] += 1
        t["energy_kwh"] += float(call.get("energy_kwh") or 0.0)
        t["emissions_kg"] += float(call.get("emissions_kg") or 0.0)
        t["flops"] += float(call.get("flops") or 0.0)
        t["flops_formula"] = call.get("flops_formula") or t["flops_formula"]
        t["country"] = call.get("country")
    return out


# Counted FLOPs (the usual dense-transformer approximations; embedding look-ups counted as matmuls).


def safetensors_parameters(path: str | Path) -> int:
    """Number of parameters in a safetensors file, read from its header only."""
    import json
    import struct

    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    total = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for d in t["shape"]:
            n *= int(d)
        total += n
    return total


def model_parameters(path: str | Path) -> int | None:
    """Parameters of a model directory, a run directory (its ``final/``) or a sentence-transformers folder."""
    p = Path(path)
    for d in (p, p / "final"):
        if (d / "model.manifest.json").is_file():
            return int(read_json(d / "model.manifest.json")["parameters"])
        if (d / "model.safetensors").is_file():
            return safetensors_parameters(d / "model.safetensors")
    return None


def training_flops(model_dir: str | Path, tokens: float) -> tuple[float | None, str]:
    """(6·N·D, how) for ``tokens`` trained by the model in ``model_dir`` (forward + backward)."""
    n = model_parameters(model_dir)
    if n is None:
        return None, "not counted: no parameter count found"
    return 6.0 * n * tokens, f"6·N·D, N = {n:,} parameters, D = {int(tokens):,} tokens trained in this call"


def retrofit_flops(trainable: int, total: int, tokens: float) -> tuple[float | None, str]:
    """(2·N·D + 4·N_t·D, how): the whole model's forward, the backward of the trained weights only; a lower
    bound (the gradient also flows back through the frozen layers above the first CCA layer)."""
    if not total:
        return None, "not counted: no parameter count found"
    return (2.0 * total + 4.0 * trainable) * tokens, (f"2·N·D + 4·N_t·D (a lower bound), N = {total:,} parameters, "
                                                      f"N_t = {trainable:,} trained, D = {int(tokens):,} tokens")


def forward_flops(parameters: int | None, tokens: float, what: str) -> tuple[float | None, str]:
    """(2·N·T, how) for a forward pass of ``tokens`` tokens through ``parameters`` parameters."""
    if parameters is None:
        return None, "not counted: no parameter count found"
    return 2.0 * parameters * tokens, f"2·N·T, N = {parameters:,} parameters, T = {int(tokens):,} {what}"
