"""Real global climate fields (Debian ``ferret-datasets``): readers.

Readers for the netCDF-3 files of the ``ferret`` data set (``graphsphere data fetch ferret``), with
SciPy alone (no xarray, no netCDF library):

================================  ==================================================================
``monthly_navy_winds.cdf``        FNOC monthly surface winds UWND, VWND (m/s), Jan 1982 - Dec 1992
                                  (132 months), 2.5-degree grid with pole rows (73 x 144), longitudes
                                  20..377.5. Fill value -99.9, but no cell is missing (0 of 1,387,584).
``coads_climatology.cdf``         COADS monthly climatology (12 months): SST, AIRT, SPEH, WSPD, UWND,
                                  VWND, SLP on a 2-degree grid (90 x 180, cell centres, lon 21..379).
                                  Fill value -1e34: 46% of SST is missing (land, unsampled seas).
``etopo60.cdf``, ``etopo20.cdf``  ETOPO relief ROSE (m) at 1 degree (180 x 360) and 20 minutes
                                  (540 x 1080); ``etopo20`` repeats its first column one turn on
                                  (1081 columns, identical values): the reader drops the repeat.
================================  ==================================================================

No file has ``scale_factor``/``add_offset``; they are applied when present. Every reader returns a
:class:`GriddedField`: float32 values ``[time, lat, lon]`` (``[lat, lon]`` for relief) with NaN where
``_FillValue``/``missing_value``/``valid_range`` say a value is missing, the
:class:`~graphsphere.data.regrid.LatLonGrid` (rows and columns in the file's order: latitudes south to
north, longitudes from 20 or 21 degrees east), the times as ``datetime64[M]`` (the COADS climatology
is dated in year 0), units and long names.

The labels of the segmentation task and the forecasting arrays are in
:mod:`graphsphere.data.climate_tasks`, the training engine's data sets in
:mod:`graphsphere.data.climate_datasets`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .regrid import LatLonGrid

__all__ = [
    "COADS_VARIABLES",
    "FILES",
    "ClimateDataError",
    "GriddedField",
    "coads_climatology",
    "decode_times",
    "etopo",
    "land_fraction",
    "land_mask",
    "navy_winds",
    "read_field",
]

#: The files of the ``ferret`` data set that this module reads.
FILES = {"winds": "monthly_navy_winds.cdf", "coads": "coads_climatology.cdf",
         "etopo60": "etopo60.cdf", "etopo20": "etopo20.cdf"}

_REFETCH = "fetch it again with `graphsphere data fetch ferret` (or pass path= the folder holding the files)"


class ClimateDataError(ValueError):
    """A data file is unreadable, corrupt, or not the file expected."""


@dataclass(frozen=True)
class GriddedField:
    """One variable of a file on a latitude-longitude grid.

    Attributes
    ----------
    name : str
        The variable's name in the file (``"UWND"``, ``"SST"``, ``"ROSE"``, ...).
    values : ndarray of float32
        ``[time, lat, lon]`` (``[lat, lon]`` for a field without time), NaN where missing.
    grid : LatLonGrid
        The grid, rows and columns in the order of ``values``.
    times : ndarray of datetime64[M] or None
        The month of each time step.
    units, long_name : str
        As the file says.
    path : Path
        The file read.
    """

    name: str
    values: np.ndarray
    grid: LatLonGrid
    times: np.ndarray | None
    units: str
    long_name: str
    path: Path = field(repr=False)

    @property
    def missing_fraction(self) -> float:
        """Share of NaN values."""
        return float(np.isnan(self.values).mean())

    def __repr__(self) -> str:
        span = "" if self.times is None else f", {self.times[0]}..{self.times[-1]}"
        return (f"GriddedField({self.name!r}, {self.long_name!r}, {self.units}, shape={self.values.shape}"
                f"{span}, missing {self.missing_fraction:.1%})")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------

def _resolve(path, basename: str) -> Path:
    """The file to read: ``path`` itself, ``path/basename`` for a folder, or the fetched data set."""
    if path is None:
        from .sources import fetch

        path = fetch("ferret")
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / basename
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; {_REFETCH}")
    return p


def _text(value) -> str:
    return value.decode("latin-1").strip() if isinstance(value, bytes) else str(value).strip()


def _open(p: Path):
    from scipy.io import netcdf_file

    try:
        return netcdf_file(p, mode="r", mmap=False)
    except Exception as err:   # scipy raises TypeError/ValueError/OSError/EOFError for damaged files
        raise ClimateDataError(f"{p} is not a readable netCDF-3 file ({type(err).__name__}: {err}): it is "
                               f"corrupt or truncated; {_REFETCH}") from err


def _decode(var) -> np.ndarray:
    """Values with the missing ones as NaN, scale and offset applied, as native float32."""
    raw = np.asarray(var.data)
    attrs = var._attributes
    missing = np.zeros(raw.shape, dtype=bool)
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            for v in np.atleast_1d(attrs[key]):
                missing |= raw == np.asarray(v, dtype=raw.dtype)
    if "valid_range" in attrs:
        lo, hi = np.asarray(attrs["valid_range"], dtype=np.float64)[:2]
        missing |= (raw < lo) | (raw > hi)
    if "valid_min" in attrs:
        missing |= raw < float(np.asarray(attrs["valid_min"]).ravel()[0])
    if "valid_max" in attrs:
        missing |= raw > float(np.asarray(attrs["valid_max"]).ravel()[0])
    values = raw.astype(np.float64)
    if "scale_factor" in attrs:
        values = values * float(np.asarray(attrs["scale_factor"]).ravel()[0])
    if "add_offset" in attrs:
        values = values + float(np.asarray(attrs["add_offset"]).ravel()[0])
    values[missing | ~np.isfinite(values)] = np.nan
    return values.astype(np.float32)


_TIME_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def decode_times(values, units: str) -> np.ndarray:
    """CF times (``"<unit> since <date> [<time>]"``) to ``datetime64[M]``.

    >>> decode_times([17598.0, 18328.5], "hour since 1980-01-14 14:00:00").tolist()
    [datetime.date(1982, 1, 1), datetime.date(1982, 2, 1)]
    """
    m = re.fullmatch(r"\s*(second|minute|hour|day)s?\s+since\s+(\d{1,4})-(\d{1,2})-(\d{1,2})"
                     r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d*)?))?)?\s*", units.lower())
    if not m:
        raise ClimateDataError(f"time units {units!r} are not '<seconds|minutes|hours|days> since <date>'")
    unit, y, mo, d, hh, mm, ss = m.groups()
    origin = np.datetime64(f"{int(y):04d}-{int(mo):02d}-{int(d):02d}T{int(hh or 0):02d}:{int(mm or 0):02d}:"
                           f"{int(float(ss or 0)):02d}", "s")
    seconds = np.rint(np.asarray(values, dtype=np.float64) * _TIME_UNITS[unit]).astype(np.int64)
    return (origin + seconds.astype("timedelta64[s]")).astype("datetime64[M]")


def read_field(path, variable: str) -> GriddedField:
    """Read one variable ``[time,] lat, lon`` of a netCDF-3 file on a lat-lon grid.

    Parameters
    ----------
    path : str or Path
        The file.
    variable : str
        Its name in the file.

    A last longitude that repeats the first one turn on (ETOPO20) is dropped, with its column of
    values, after checking that they are the same.

    >>> winds = read_field("monthly_navy_winds.cdf", "UWND")     # doctest: +SKIP
    >>> winds.values.shape, str(winds.times[0]), winds.units      # doctest: +SKIP
    ((132, 73, 144), '1982-01', 'M/S')
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; {_REFETCH}")
    nc = _open(p)
    try:
        if variable not in nc.variables:
            raise ClimateDataError(f"{p} has no variable {variable!r} (it has {', '.join(nc.variables)}): it is "
                                   f"not the expected file or it is damaged; {_REFETCH}")
        var = nc.variables[variable]
        dims = var.dimensions
        if len(dims) not in (2, 3) or any(d not in nc.variables for d in dims):
            raise ClimateDataError(f"{p}: {variable} has dimensions {dims}, expected ([time,] lat, lon) with "
                                   "coordinate variables")
        coords = {d: nc.variables[d] for d in dims}
        lat_name, lon_name = dims[-2], dims[-1]
        lat = np.asarray(coords[lat_name].data, dtype=np.float64)
        lon = np.asarray(coords[lon_name].data, dtype=np.float64)
        try:
            values = _decode(var)
        except (ValueError, TypeError) as err:   # a truncated file can fail only when read
            raise ClimateDataError(f"{p}: cannot read {variable} ({err}): the file is damaged; {_REFETCH}") from err
        times = None
        if len(dims) == 3:
            tvar = coords[dims[0]]
            units = _text(tvar._attributes.get("units", b""))
            times = decode_times(np.asarray(tvar.data), units)
        units = _text(var._attributes.get("units", b""))
        long_name = _text(var._attributes.get("long_name", variable.encode()))
    finally:
        nc.close()
    d = np.diff(lon)
    if lon.size > 2 and abs(lon[-1] - lon[0] - 360) < 0.01 * np.median(d):
        if not np.array_equal(values[..., 0], values[..., -1], equal_nan=True):
            raise ClimateDataError(f"{p}: the last longitude repeats the first one turn on but its values "
                                   "differ; the file is damaged or not the expected one")
        lon, values = lon[:-1], values[..., :-1]
    try:
        grid = LatLonGrid(lat, lon)
    except ValueError as err:
        raise ClimateDataError(f"{p}: the coordinates of {variable} are not a lat-lon grid ({err})") from err
    values.setflags(write=False)
    return GriddedField(variable, values, grid, times, units, long_name, p)


def navy_winds(path=None) -> dict[str, GriddedField]:
    """FNOC monthly surface winds 1982-1992: ``{"UWND": ..., "VWND": ...}`` (m/s, 132 x 73 x 144).

    ``path``: the file or the folder holding it; by default the fetched ``ferret`` data set.

    >>> w = navy_winds()                                        # doctest: +SKIP
    >>> w["UWND"]                                               # doctest: +SKIP
    GriddedField('UWND', 'ZONAL WIND', M/S, shape=(132, 73, 144), 1982-01..1992-12, missing 0.0%)
    """
    p = _resolve(path, FILES["winds"])
    return {name: read_field(p, name) for name in ("UWND", "VWND")}


COADS_VARIABLES = ("SST", "AIRT", "SPEH", "WSPD", "UWND", "VWND", "SLP")


def coads_climatology(path=None, variables: Sequence[str] = COADS_VARIABLES) -> dict[str, GriddedField]:
    """COADS monthly climatology (12 months dated 0000-01..0000-12), 2-degree grid (90 x 180).

    >>> c = coads_climatology(variables=["SST"])                # doctest: +SKIP
    >>> round(c["SST"].missing_fraction, 2)                      # doctest: +SKIP
    0.46
    """
    p = _resolve(path, FILES["coads"])
    unknown = set(variables) - set(COADS_VARIABLES)
    if unknown:
        raise ValueError(f"unknown COADS variables {sorted(unknown)}; known: {', '.join(COADS_VARIABLES)}")
    return {name: read_field(p, name) for name in variables}


def etopo(path=None, resolution: int = 60) -> GriddedField:
    """ETOPO relief (m, ``[lat, lon]``) at ``resolution`` 60 (1 degree) or 20 arc minutes.

    >>> relief = etopo()                                         # doctest: +SKIP
    >>> relief.values.shape, relief.grid.covers_sphere           # doctest: +SKIP
    ((180, 360), True)
    """
    if resolution not in (60, 20):
        raise ValueError(f"resolution must be 60 or 20 (arc minutes), got {resolution!r}")
    return read_field(_resolve(path, FILES[f"etopo{resolution}"]), "ROSE")


def land_mask(path=None, resolution: int = 60) -> GriddedField:
    """Land (True) where the ETOPO relief is above sea level, on the ETOPO grid.

    >>> land = land_mask()                                       # doctest: +SKIP
    >>> round(float((land.values.ravel() * land.grid.area).sum() / (4 * np.pi)), 3)   # doctest: +SKIP
    0.289
    """
    relief = etopo(path, resolution)
    values = relief.values > 0
    values.setflags(write=False)
    return GriddedField("LAND", values, relief.grid, None, "1", "land (ETOPO relief > 0)", relief.path)


def land_fraction(target, path=None, resolution: int = 60, supersample: int = 16) -> np.ndarray:
    """Share of each cell of ``target`` (a sampling or a LatLonGrid) that is land, by conservative
    regridding of the ETOPO land mask; ``> 0.5`` gives a land/sea mask on the target.

    >>> import graphsphere as gs
    >>> frac = land_fraction(gs.sampling.Icosahedral(level=5))  # doctest: +SKIP
    >>> round(float((frac * gs.sampling.Icosahedral(level=5).area).sum() / (4 * np.pi)), 3)  # doctest: +SKIP
    0.289
    """
    from .regrid import Regridder

    land = land_mask(path, resolution)
    return Regridder(land.grid, target, method="conservative", supersample=supersample).apply(land.values)


# --------------------------------------------------------------------------------------------------
