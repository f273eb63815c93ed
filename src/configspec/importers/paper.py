"""Import the paper's published measurements into ConfigSpec profiles.

Input: a folder of CSVs in the formats of the paper's "Llamacpp-Latency-Profiler" data
(recognised by header, see :mod:`configspec.importers.tables`):

* acceptance sweeps → one :class:`AlignmentProfile` per target, with ``by_k`` entries;
* the drafting-speed table (or, with ``speeds="device-csv"``, the device runs) → one
  :class:`DeviceProfile` per device, drafting latency = 1000 / tokens-per-second;
* device profiling runs → each drafter's ``draft_power_w`` (average power while
  decoding, method jtop / PMIC recorded in the meter and provenance).

The data has no verification profile; :func:`paper_verification_profiles` writes the
paper's assumption (fixed T_verify, per-token price billed on the K drafted tokens) as
``modelled`` profiles.

Policy decisions (documented for users in ``docs/paper.md``):

* a drafter in the speed table whose (target, drafter) pair has no acceptance sweep is
  skipped with a warning (``strict=True`` refuses instead) — it cannot be evaluated;
* a device with no device-run CSV, or a model with no power value, gets
  ``draft_power_w = None`` and energy is reported as "no power data";
* the acceptance sweep was taken once per drafter model (quantisation not varied): the
  alignment entry is named after the model (``Qwen3-0.6B``), the device entries after
  model and quantisation (``Qwen3-0.6B-Q4_K_M``), and every variant uses the same sweep,
  as the paper assumes;
* nothing is written until every profile of the import has been built and validated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import ValidationError

from configspec.config import (
    AcceptanceAtK,
    AlignmentEntry,
    AlignmentProfile,
    DeviceInfo,
    DeviceProfile,
    DrafterOnDevice,
    DraftLatencyPoint,
    Estimate,
    MeterInfo,
    PerTokenPrice,
    Provenance,
    VerificationProfile,
    VerifyLatencyPoint,
)
from configspec.importers import tables as t
from configspec.importers.names import (
    canonical_quant,
    device_names_match,
    drafter_id,
    family_of,
    model_key,
    split_model_file,
)
from configspec.importers.tables import DataImportError, Table, TableKind
from configspec.store import ProfileStore, atomic_write_text

logger = logging.getLogger(__name__)

PAPER_VERIFY_LATENCY_MS = 500.0
"""The paper's fixed verification latency T_verify (0.5 s), independent of K."""

PAPER_PRICES_USD_PER_M: dict[str, float] = {"Llama-3.1-70B": 0.90, "Qwen3-32B": 0.59}
"""The paper's per-output-token prices (USD per 1M tokens), keyed by a name fragment of
the target; billed on the K drafted tokens of each round (``billed="draft_tokens"``)."""

SpeedSource = Literal["table", "device-csv"]

SHIPPED_PAPER_FILES: tuple[str, ...] = (
    "acceptance_llama-3.1-70b.csv",
    "acceptance_qwen3-32b.csv",
    "draft_speed.csv",
    "jetson_agx_orin_llamacpp_profile_19models.csv",
    "pi5_llamacpp_profile_19models.csv",
)
"""The paper's published CSVs shipped in ``configspec/data/paper`` (MIT, see LICENSE there)."""


@contextmanager
def shipped_paper_data() -> Iterator[Path]:
    """The folder of the paper's published CSVs shipped with the package, as a real path.

    A context manager because a zipped installation has to extract the files first; in a
    normal (or editable) installation it yields the package's own folder. Raises
    :class:`DataImportError` when the installation lacks the files (a broken install).
    """
    root = resources.files("configspec") / "data" / "paper"
    with resources.as_file(root) as path:
        missing = [name for name in SHIPPED_PAPER_FILES if not (path / name).is_file()]
        if missing:
            raise DataImportError(
                f"the shipped paper data is incomplete in {path} (missing {', '.join(missing)}); "
                "reinstall configspec or pass the folder of the published CSVs"
            )
        yield path


_NOTE_SPEED_MISMATCH = 0.05  # relative difference worth telling the user about


@dataclass
class ImportResult:
    """Everything one import produces, built and validated before anything is written."""

    devices: list[DeviceProfile]
    alignments: list[AlignmentProfile]
    verifications: list[VerificationProfile]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    speed_mismatches: list[str] = field(default_factory=list)
    """Drafters whose table speed differs by more than 5% from the device run's."""


@dataclass(frozen=True)
class _Run:
    """One device-run row reduced to what the profiles need."""

    device: str
    key: str
    quant: str | None
    tok_s: float
    tok_s_min: float | None
    tok_s_max: float | None
    power_w: float | None
    pm_method: str | None
    pm_samples: int
    pm_interval_s: float | None
    source: Path


def _opt(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)  # type: ignore[arg-type]


def _runs(table: Table) -> list[_Run]:
    frame = table.frame
    runs: list[_Run] = []
    for _, row in frame.iterrows():
        base, quant = split_model_file(str(row[t.DEV_MODEL]))
        method = row[t.DEV_PM_METHOD]
        runs.append(
            _Run(
                device=str(row[t.DEV_DEVICE]),
                key=model_key(base),
                quant=quant,
                tok_s=float(row[t.DEV_TOK_S_AVG]),
                tok_s_min=_opt(row.get(t.DEV_TOK_S_MIN)),
                tok_s_max=_opt(row.get(t.DEV_TOK_S_MAX)),
                power_w=_opt(row[t.DEV_POWER_AVG_W]),
                pm_method=None if pd.isna(method) else str(method),
                pm_samples=int(_opt(row.get(t.DEV_PM_SAMPLES)) or 0),
                pm_interval_s=_opt(row.get(t.DEV_PM_INTERVAL_S)),
                source=table.path,
            )
        )
    return runs


def _price_for(target: str, prices: Mapping[str, float]) -> float:
    key = model_key(target)
    hits = [p for name, p in prices.items() if model_key(name) in key]
    if not hits:
        raise DataImportError(
            f"no per-token price for target {target!r}; pass one with "
            f"--price '{target}=USD_PER_MILLION_TOKENS'"
        )
    return hits[0]


# --------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class _Sweep:
    target: str
    drafter: str
    points: list[AcceptanceAtK]
    source: Path


def _sweeps(tables: list[Table]) -> dict[tuple[str, str], _Sweep]:
    """Acceptance sweeps keyed by (target key, drafter key)."""
    sweeps: dict[tuple[str, str], _Sweep] = {}
    for table in tables:
        for (target, drafter), group in table.frame.groupby([t.ACC_TARGET, t.ACC_DRAFTER]):
            group = group.sort_values(t.ACC_K)
            dup = group[t.ACC_K].duplicated()
            if dup.any():
                raise DataImportError(
                    f"{table.path.name}: K={int(group[t.ACC_K][dup].iloc[0])} appears twice for "
                    f"drafter {drafter!r} and target {target!r}"
                )
            points = []
            for _, row in group.iterrows():
                mean = float(row[t.ACC_MEAN])
                std = _opt(row.get(t.ACC_STD))
                points.append(
                    AcceptanceAtK(
                        k=int(row[t.ACC_K]),
                        accepted_fraction=Estimate(
                            mean=mean,
                            ci_low=None if std is None else max(0.0, mean - std),
                            ci_high=None if std is None else min(1.0, mean + std),
                            source="imported",
                        ),
                    )
                )
            key = (model_key(str(target)), model_key(str(drafter)))
            if key in sweeps:
                raise DataImportError(
                    f"drafter {drafter!r} against {target!r} is swept in both "
                    f"{sweeps[key].source.name} and {table.path.name}; keep one"
                )
            sweeps[key] = _Sweep(str(target), str(drafter), points, table.path)
    return sweeps


def _alignment_profiles(sweeps: dict[tuple[str, str], _Sweep]) -> list[AlignmentProfile]:
    """One profile per target; one entry per swept drafter model (no quantisation in the
    id: the search pairs ``Qwen3-0.6B-Q4_K_M`` on a device with entry ``Qwen3-0.6B``)."""
    by_target: dict[str, list[_Sweep]] = {}
    for sweep in sweeps.values():
        by_target.setdefault(sweep.target, []).append(sweep)
    profiles = []
    for target, target_sweeps in sorted(by_target.items()):
        entries = []
        files = sorted({s.source.name for s in target_sweeps})
        for sweep in sorted(target_sweeps, key=lambda s: s.drafter):
            entries.append(
                AlignmentEntry(drafter=drafter_id(sweep.drafter, None), by_k=sweep.points)
            )
        profiles.append(
            AlignmentProfile(
                target=target,
                target_family=family_of(target),
                entries=entries,
                provenance=Provenance.here(
                    "imported",
                    source_file=str(target_sweeps[0].source.resolve()),
                    settings={"files": files, "acceptance_interval": "mean ± 1 std"},
                    notes=(
                        "accepted_fraction = mean fraction of the K drafted tokens accepted "
                        "(the paper's α(K)); ci_low/ci_high are mean ∓ 1 standard deviation "
                        "across prompts (clipped to [0, 1]), not a confidence interval of the "
                        "mean. The sweep was taken once per drafter model (quantisation not "
                        "varied); every quantised variant of it uses this entry."
                    ),
                ),
            )
        )
    return profiles


# --------------------------------------------------------------------------- devices


@dataclass
class _Drafter:
    """One (device, drafter, quantisation) to import, before it becomes a profile entry."""

    device: str
    target: str
    drafter: str
    quant: str | None
    tok_s: float
    tok_s_low: float | None
    tok_s_high: float | None
    source: Path


def _match_device(name: str, run_devices: list[str], device_map: Mapping[str, str]) -> str | None:
    """The device-run device that speed-table device ``name`` refers to, if any."""
    if name in device_map:
        return device_map[name]
    if name in run_devices:
        return name
    hits = [d for d in run_devices if device_names_match(name, d)]
    if len(hits) > 1:
        raise DataImportError(
            f"device {name!r} could be any of {', '.join(hits)}; say which with "
            f"--device-map '{name}={hits[0]}'"
        )
    return hits[0] if hits else None


def _from_speed_table(tables: list[Table]) -> list[_Drafter]:
    out = []
    for table in tables:
        for _, row in table.frame.iterrows():
            try:
                quant = canonical_quant(str(row[t.SPD_QUANT]))
            except ValueError as exc:
                raise DataImportError(f"{table.path.name}: {exc}") from None
            out.append(
                _Drafter(
                    device=str(row[t.SPD_DEVICE]),
                    target=str(row[t.SPD_TARGET]),
                    drafter=str(row[t.SPD_DRAFTER]),
                    quant=quant,
                    tok_s=float(row[t.SPD_TOK_S]),
                    tok_s_low=None,
                    tok_s_high=None,
                    source=table.path,
                )
            )
    return out


def _from_device_runs(
    runs: list[_Run], sweeps: dict[tuple[str, str], _Sweep], result: ImportResult
) -> list[_Drafter]:
    """Drafters from the device runs themselves: every run whose model has a sweep."""
    out = []
    unswept: set[str] = set()
    for run in runs:
        pairs = [s for (_, d), s in sweeps.items() if d == run.key]
        if not pairs:
            unswept.add(run.key)
            continue
        for sweep in pairs:
            out.append(
                _Drafter(
                    device=run.device,
                    target=sweep.target,
                    drafter=sweep.drafter,
                    quant=run.quant,
                    tok_s=run.tok_s,
                    tok_s_low=run.tok_s_min,
                    tok_s_high=run.tok_s_max,
                    source=run.source,
                )
            )
    if unswept:
        result.notes.append(
            f"{len(unswept)} profiled model(s) have no acceptance sweep and are not drafters "
            f"for any target: {', '.join(sorted(unswept))}"
        )
    return out


def _latency(d: _Drafter) -> Estimate:
    ms = 1000.0 / d.tok_s
    lo = None if d.tok_s_high is None else min(ms, 1000.0 / d.tok_s_high)
    hi = None if d.tok_s_low is None else max(ms, 1000.0 / d.tok_s_low)
    return Estimate(mean=ms, ci_low=lo, ci_high=hi, source="imported")


def _device_profiles(
    drafters: list[_Drafter],
    runs: list[_Run],
    device_map: Mapping[str, str],
    result: ImportResult,
) -> list[DeviceProfile]:
    run_devices = sorted({r.device for r in runs})
    runs_by: dict[tuple[str, str, str | None], _Run] = {(r.device, r.key, r.quant): r for r in runs}
    grouped: dict[str, list[_Drafter]] = {}
    for d in drafters:
        grouped.setdefault(d.device, []).append(d)
    profiles = []
    for name, items in sorted(grouped.items()):
        run_device = _match_device(name, run_devices, device_map)
        entries: dict[str, DrafterOnDevice] = {}
        used_runs: list[_Run] = []
        for d in items:
            key = model_key(split_model_file(d.drafter)[0])
            run = runs_by.get((run_device, key, d.quant)) if run_device else None
            if run is not None:
                used_runs.append(run)
                if abs(run.tok_s - d.tok_s) > _NOTE_SPEED_MISMATCH * d.tok_s:
                    result.speed_mismatches.append(
                        f"{name}: {drafter_id(d.drafter, d.quant)} drafts at {d.tok_s:g} tok/s "
                        f"in {d.source.name} but {run.tok_s:g} tok/s in {run.source.name} "
                        f"(separate runs); using {d.source.name}"
                    )
            elif run_device is not None:
                result.warnings.append(
                    f"{name}: no run of {drafter_id(d.drafter, d.quant)} in the device CSV; "
                    "its energy is reported as 'no power data'"
                )
            power = None
            if run is not None and run.power_w is not None:
                power = Estimate(mean=run.power_w, n=run.pm_samples, source="imported")
            ident = drafter_id(d.drafter, d.quant)
            family = family_of(d.target)
            if ident in entries:
                if entries[ident].family != family:
                    raise DataImportError(
                        f"{d.source.name}: drafter {ident!r} on {name!r} is paired with targets "
                        f"of two tokenizer families ({entries[ident].family}, {family})"
                    )
                continue
            entries[ident] = DrafterOnDevice(
                drafter=ident,
                family=family,
                quantization=d.quant,
                memory_bytes=0,
                latency=[DraftLatencyPoint(k=1, context_tokens=0, per_token_ms=_latency(d))],
                draft_power_w=power,
            )
        methods = sorted({r.pm_method for r in used_runs if r.pm_method and r.power_w})
        meter = None
        if methods:
            interval = next((r.pm_interval_s for r in used_runs if r.pm_interval_s), None)
            meter = MeterInfo(
                name="/".join(methods),
                source="imported",
                sample_hz=1.0 / interval if interval else None,
                detail=f"average power while decoding, from {used_runs[0].source.name}",
            )
        else:
            result.warnings.append(
                f"{name}: no power data (no device-run CSV with power for it); "
                "energy objectives will say 'no power data'"
            )
        files = sorted({d.source.name for d in items} | {r.source.name for r in used_runs})
        profiles.append(
            DeviceProfile(
                device=DeviceInfo(
                    name=run_device or name,
                    description=f"imported; called {name!r} in {items[0].source.name}",
                ),
                meter=meter,
                drafters=list(entries.values()),
                provenance=Provenance.here(
                    "imported",
                    source_file=str(items[0].source.resolve()),
                    settings={
                        "files": files,
                        "power_method": "/".join(methods) if methods else None,
                        "speed_file": items[0].source.name,
                        "latency": "1000 / drafting tokens per second, context unknown",
                    },
                    notes="memory_bytes is 0: the published data has no memory figures.",
                ),
            )
        )
    return profiles


# --------------------------------------------------------------------------- verification


def paper_verification_profiles(
    targets: list[AlignmentProfile],
    *,
    verify_latency_ms: float = PAPER_VERIFY_LATENCY_MS,
    prices_usd_per_m: Mapping[str, float] | None = None,
) -> list[VerificationProfile]:
    """The paper's verification assumption as ``modelled`` profiles, one per target.

    Latency is ``verify_latency_ms`` for every K the sweep covers (positions K+1);
    the price is per output token, billed on the K drafted tokens of each round.
    """
    prices = {**PAPER_PRICES_USD_PER_M, **(prices_usd_per_m or {})}
    out = []
    for profile in targets:
        ks = sorted({p.k for e in profile.entries for p in e.by_k or []})
        price = _price_for(profile.target, prices)
        out.append(
            VerificationProfile(
                target=profile.target,
                target_family=profile.target_family,
                endpoint="paper assumption",
                hardware="unspecified",
                latency=[
                    VerifyLatencyPoint(
                        positions=k + 1,
                        context_tokens=0,
                        latency_ms=Estimate(mean=verify_latency_ms, source="modelled"),
                    )
                    for k in ks
                ],
                price=PerTokenPrice(price_usd_per_million_tokens=price, billed="draft_tokens"),
                provenance=Provenance.here(
                    "modelled",
                    settings={"verify_latency_ms": verify_latency_ms, "price_usd_per_m": price},
                    notes=(
                        "The paper's assumption, not a measurement: fixed verification "
                        "latency independent of K, per-token price billed on K drafted tokens."
                    ),
                ),
            )
        )
    return out


# --------------------------------------------------------------------------- entry points


def import_paper_data(
    src_dir: Path,
    *,
    speeds: SpeedSource = "table",
    verify_latency_ms: float = PAPER_VERIFY_LATENCY_MS,
    prices_usd_per_m: Mapping[str, float] | None = None,
    device_map: Mapping[str, str] | None = None,
    strict: bool = False,
) -> ImportResult:
    """Build (but do not write) every profile from the CSVs in ``src_dir``.

    ``speeds`` picks the drafting speeds: the drafting-speed table the paper's analysis
    uses (default), or the device-run CSVs' own tokens/s. Raises
    :class:`DataImportError` on unusable input; skipped drafters are listed in
    ``warnings`` (with ``strict=True`` they are an error).
    """
    found = t.scan_directory(Path(src_dir))
    kinds = {k: [tb for tb in found if tb.kind is k] for k in TableKind}
    if not kinds[TableKind.ACCEPTANCE]:
        raise DataImportError(
            f"no acceptance sweep in {src_dir}: need a CSV with columns {', '.join(t.ACC_REQUIRED)}"
        )
    if speeds == "table" and not kinds[TableKind.DRAFT_SPEED]:
        raise DataImportError(
            f"no drafting-speed table in {src_dir} (columns {', '.join(t.SPD_REQUIRED)}); "
            "add one or use --speeds device-csv"
        )
    result = ImportResult(devices=[], alignments=[], verifications=[])
    sweeps = _sweeps(kinds[TableKind.ACCEPTANCE])
    runs = [r for tb in kinds[TableKind.DEVICE_RUNS] for r in _runs(tb)]
    if speeds == "table":
        drafters = _from_speed_table(kinds[TableKind.DRAFT_SPEED])
    else:
        drafters = _from_device_runs(runs, sweeps, result)
    kept: list[_Drafter] = []
    for d in drafters:
        if (model_key(d.target), model_key(d.drafter)) in sweeps:
            kept.append(d)
            continue
        msg = (
            f"{d.source.name}: drafter {d.drafter!r} ({d.quant}) on {d.device!r} has no "
            f"acceptance sweep against {d.target!r}"
        )
        if strict:
            raise DataImportError(msg + "; add its sweep or drop it from the table")
        result.warnings.append(msg + "; skipped")
    if not kept:
        raise DataImportError(f"no drafter in {src_dir} has both a drafting speed and a sweep")
    try:
        result.alignments = _alignment_profiles(sweeps)
        result.devices = _device_profiles(kept, runs, device_map or {}, result)
        result.verifications = paper_verification_profiles(
            result.alignments,
            verify_latency_ms=verify_latency_ms,
            prices_usd_per_m=prices_usd_per_m,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataImportError(
            f"imported data does not fit the profile schema: {err['msg']}"
        ) from None
    for msg in [*result.warnings, *result.notes, *result.speed_mismatches]:
        logger.info("%s", msg)
    return result


def write_import(result: ImportResult, out_dir: Path) -> list[Path]:
    """Write every profile of ``result`` into the profile directory ``out_dir``.

    Every document is serialised first; then each is written atomically, so a failure
    leaves no half-written file and validation failures leave nothing written at all.
    """
    store = ProfileStore(Path(out_dir))
    docs: list[tuple[Path, str]] = []
    for dev in result.devices:
        docs.append((store.device_path(dev.device.name), dev.model_dump_json(indent=2) + "\n"))
    for al in result.alignments:
        docs.append((store.alignment_path(al.target), al.model_dump_json(indent=2) + "\n"))
    for ver in result.verifications:
        docs.append((store.verification_path(ver.target), ver.model_dump_json(indent=2) + "\n"))
    paths = [p for p, _ in docs]
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise DataImportError(f"two imported profiles would both be written to {dup}")
    for path, text in docs:
        atomic_write_text(path, text)
    return paths
