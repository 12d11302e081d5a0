"""Labeled arrays against xarray: a seeded cube written by xarray as Zarr v2 and v3, opened
by Shoal and by xarray, every operation compared with `xr.testing.assert_allclose`; Zarr
written by Shoal read back by xarray and zarr-python."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import shoal

warnings.filterwarnings("ignore", category=UserWarning, module="zarr")


def _cube() -> xr.Dataset:
    rng = np.random.default_rng(11)
    time = pd.date_range("2000-01-01", periods=730, freq="D")
    t2m = rng.normal(280.0, 10.0, size=(730, 6, 8))
    t2m[rng.random(t2m.shape) < 0.01] = np.nan
    precip = rng.gamma(2.0, 1.5, size=(730, 6))
    return xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), t2m, {"units": "K"}),
            "precip": (("time", "lat"), precip, {"units": "mm"}),
        },
        coords={"time": time, "lat": np.linspace(-50.0, 50.0, 6), "lon": np.arange(8) * 45.0},
        attrs={"title": "seeded cube"},
    )


@pytest.fixture(scope="module", params=[2, 3], ids=["zarr-v2", "zarr-v3"])
def cube(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cube as xarray writes it, in chunks of 100 days."""
    path = tmp_path_factory.mktemp("cube") / f"cube-v{request.param}.zarr"
    encoding = {"t2m": {"chunks": (100, 6, 8)}, "precip": {"chunks": (100, 6)}}
    _cube().to_zarr(path, zarr_format=request.param, encoding=encoding)
    return path


def _pair(session: shoal.Session, cube: Path) -> tuple[shoal.DataArray, xr.DataArray]:
    ours = session.open_zarr(cube)["t2m"]
    theirs = xr.open_zarr(cube)["t2m"].load()
    return ours, theirs


def test_open_zarr_keeps_xarrays_labels_chunks_and_values(
    session: shoal.Session, cube: Path
) -> None:
    ds = session.open_zarr(cube)
    assert sorted(ds.keys()) == ["precip", "t2m"]
    assert ds.sizes == {"time": 730, "lat": 6, "lon": 8}
    assert ds.attrs == {"title": "seeded cube"}
    da = ds.t2m
    assert da.dims == ("time", "lat", "lon")
    assert da.attrs == {"units": "K"}
    assert da.chunks == ((100,) * 7 + (30,), (6,), (8,))
    assert da.coords["time"].values[0] == np.datetime64("2000-01-01")
    xr.testing.assert_identical(ds.to_xarray(), xr.open_zarr(cube).load())
    rechunked = session.open_zarr(cube, chunks={"time": 365})
    assert rechunked["t2m"].chunksizes["time"] == (365, 365)


def test_selection_and_reductions_match_xarray(session: shoal.Session, cube: Path) -> None:
    da, xa = _pair(session, cube)
    cases = [
        (da.mean("time"), xa.mean("time")),
        (da.std(["lat", "lon"]), xa.std(["lat", "lon"])),
        (da.max(), xa.max()),
        (da.sum(dim="lon", skipna=True), xa.sum(dim="lon")),
        (da.isel(time=slice(10, 100, 3), lat=0), xa.isel(time=slice(10, 100, 3), lat=0)),
        (da.isel(time=slice(None, None, -7)), xa.isel(time=slice(None, None, -7))),
        (da.isel(lon=[3, 1]), xa.isel(lon=[3, 1])),
        (da[5, :, 2:6], xa[5, :, 2:6]),
        (da.sel(time=slice("2000-02", "2000-03")), xa.sel(time=slice("2000-02", "2000-03"))),
        (da.sel(time="2000-01-15"), xa.sel(time="2000-01-15")),
        (da.sel(lat=10, method="nearest"), xa.sel(lat=10, method="nearest")),
        (da.sel(lon=[90.0, 0.0]), xa.sel(lon=[90.0, 0.0])),
        (da.transpose("lon", "time", "lat"), xa.transpose("lon", "time", "lat")),
        (da.sel(time="2000-02"), xa.sel(time="2000-02")),
        (da.sel(time=slice(None, xa.time.values[3])), xa.sel(time=slice(None, xa.time.values[3]))),
        (da.sel(lat=[-29.0, 31.0], method="nearest"), xa.sel(lat=[-29.0, 31.0], method="nearest")),
        (da[..., 0], xa[..., 0]),
        (np.abs(da - 280.0), np.abs(xa - 280.0)),
        (da.groupby("time.month").reduce("max", dim="time"), xa.groupby("time.month").max("time")),
    ]
    for ours, theirs in cases:
        xr.testing.assert_allclose(ours.to_xarray(), theirs)


def test_arithmetic_broadcasts_by_dimension_name(session: shoal.Session, cube: Path) -> None:
    da, xa = _pair(session, cube)
    precip = session.open_zarr(cube)["precip"]
    xprecip = xr.open_zarr(cube)["precip"].load()
    cases = [
        ((da - da.mean("time")) / da.std("time"), (xa - xa.mean("time")) / xa.std("time")),
        (da * precip, xa * xprecip),
        (2.0 - da.isel(time=0), 2.0 - xa.isel(time=0)),
        (np.sqrt(abs(da - 280.0)), np.sqrt(abs(xa - 280.0))),
        (np.maximum(da, 285.0), np.maximum(xa, 285.0)),
        (da.where(da > 285.0), xa.where(xa > 285.0)),
    ]
    for ours, theirs in cases:
        xr.testing.assert_allclose(ours.to_xarray(), theirs)


def test_groupby_resample_rolling_coarsen_match_xarray(session: shoal.Session, cube: Path) -> None:
    da, xa = _pair(session, cube)
    months, xmonths = da.groupby("time.month"), xa.groupby("time.month")
    cases = [
        (months - months.mean("time"), xmonths - xmonths.mean("time")),
        (months.std(), xmonths.std()),
        (da.groupby("time.season").mean(), xa.groupby("time.season").mean()),
        (da.resample(time="1MS").mean(), xa.resample(time="1MS").mean()),
        (da.resample(time="YS").max(), xa.resample(time="YS").max()),
        (da.rolling(time=5).mean(), xa.rolling(time=5).mean()),
        (da.rolling(time=5, min_periods=2).std(), xa.rolling(time=5, min_periods=2).std()),
        (da.coarsen(time=5).mean(), xa.coarsen(time=5).mean()),
        (da.coarsen(lat=2, lon=2).mean(), xa.coarsen(lat=2, lon=2).mean()),
        (da.coarsen(lat=3, lon=2).max(), xa.coarsen(lat=3, lon=2).max()),
    ]
    for ours, theirs in cases:
        xr.testing.assert_allclose(ours.to_xarray(), theirs)
    assert list(da.groupby("time.season").groups) == ["DJF", "JJA", "MAM", "SON"]


def test_dataset_groupby_and_windows_match_xarray(session: shoal.Session, cube: Path) -> None:
    ds = session.open_zarr(cube)
    x = xr.open_zarr(cube).load()
    months, xmonths = ds.groupby("time.month"), x.groupby("time.month")
    cases = [
        (months - months.mean(), xmonths - xmonths.mean()),
        (ds.resample(time="1MS").max(), x.resample(time="1MS").max()),
        (ds.rolling(time=3).sum(), x.rolling(time=3).sum()),
        (ds.coarsen(time=10, lat=2).mean(), x.coarsen(time=10, lat=2).mean()),
        (ds.isel(time=0).mean("lat"), x.isel(time=0).mean("lat")),
    ]
    for ours, theirs in cases:
        xr.testing.assert_allclose(ours.to_xarray(), theirs)


def test_zarr_written_by_shoal_reads_in_xarray_and_zarr_python(
    session: shoal.Session, cube: Path, tmp_path: Path
) -> None:
    ds = session.open_zarr(cube)
    anomaly = ds.t2m.groupby("time.month") - ds.t2m.groupby("time.month").mean("time")
    out = shoal.Dataset({"anomaly": anomaly, "precip": ds.precip}, attrs={"source": "shoal"})
    expected = xr.Dataset(
        {
            "anomaly": anomaly.to_xarray().drop_vars("month"),
            "precip": ds.precip.to_xarray(),
        },
        attrs={"source": "shoal"},
    )
    for fmt in (2, 3):
        store = tmp_path / f"out-v{fmt}.zarr"
        out.to_zarr(str(store), zarr_format=fmt)
        back = xr.open_zarr(store, consolidated=False).load()
        xr.testing.assert_allclose(back, expected)
        assert back.attrs == {"source": "shoal"}
        group = zarr.open_group(store, mode="r")
        assert group.metadata.zarr_format == fmt
        values = np.asarray(group["precip"][:])
        np.testing.assert_allclose(values, expected["precip"].values)
    # An existing store is refused and left as it was.
    before = sorted(p.name for p in (tmp_path / "out-v3.zarr").iterdir())
    with pytest.raises(shoal.InputError, match="already exists"):
        out.to_zarr(str(tmp_path / "out-v3.zarr"))
    assert sorted(p.name for p in (tmp_path / "out-v3.zarr").iterdir()) == before


def test_string_labels_round_trip_through_zarr_as_cf_flags(
    session: shoal.Session, cube: Path, tmp_path: Path
) -> None:
    seasons = session.open_zarr(cube)["t2m"].groupby("time.season").mean()
    store = str(tmp_path / "seasons.zarr")
    seasons.to_zarr(store, zarr_format=2)
    back = session.open_zarr(store)["t2m"]
    assert list(back.indexes["season"]) == ["DJF", "JJA", "MAM", "SON"]
    xr.testing.assert_allclose(back.to_xarray(), seasons.to_xarray())
    theirs = xr.open_zarr(store, consolidated=False)
    assert theirs.season.attrs["flag_meanings"] == "DJF JJA MAM SON"
    assert list(theirs.season.values) == [0, 1, 2, 3]
    spaced = shoal.DataArray(
        np.arange(2.0), coords={"x": ["a b", "c"]}, dims=["x"], name="v", session=session
    )
    with pytest.raises(shoal.InputError, match="cannot be empty or hold spaces"):
        spaced.to_zarr(str(tmp_path / "spaced.zarr"))
    assert not (tmp_path / "spaced.zarr").exists()


def test_plain_arrays_round_trip_through_zarr(session: shoal.Session, tmp_path: Path) -> None:
    values = np.random.default_rng(3).normal(size=(50, 40))
    for fmt in (2, 3):
        store = str(tmp_path / f"a-v{fmt}.zarr")
        session.array.from_numpy(values, chunks=(16, 40)).to_zarr(store, zarr_format=fmt)
        group = zarr.open_group(store, mode="r")
        np.testing.assert_allclose(np.asarray(group["data"][:]), values)
        back = session.array.from_zarr(store)
        assert back.chunks == ((16, 16, 16, 2), (40,))
        np.testing.assert_allclose(back.sum(axis=0).to_numpy(), values.sum(axis=0))
    # Written by zarr-python: a group holding two arrays, one chosen by name.
    store = str(tmp_path / "zp.zarr")
    group = zarr.open_group(store, mode="w", zarr_format=3)
    group.create_array("x", data=values.astype(np.float32), chunks=(10, 10),
                       dimension_names=["row", "col"])
    group.create_array("y", data=np.arange(50), chunks=(25,), dimension_names=["row"])
    x = session.array.from_zarr(store, component="x")
    assert x.dtype == np.float32 and x.chunks[0] == (10,) * 5
    np.testing.assert_allclose(x.to_numpy(), values.astype(np.float32))
    with pytest.raises(ValueError, match="name one as component"):
        session.array.from_zarr(store)


def test_to_dataframe_matches_xarray(session: shoal.Session, cube: Path) -> None:
    da, xa = _pair(session, cube)
    small, xsmall = da.isel(time=slice(0, 20)), xa.isel(time=slice(0, 20))
    ours = small.to_dataframe().sort_index()
    theirs = xsmall.to_dataframe().sort_index()
    pd.testing.assert_frame_equal(ours, theirs, check_index_type=False)
    frame = small.to_lazy_frame().query("lat > 0").groupby("lat").agg(n=("t2m", "count"))
    counts = frame.to_pandas().set_index("lat")["n"].sort_index()
    expected = xsmall.where(xsmall.lat > 0, drop=True).count(["time", "lon"]).to_series()
    np.testing.assert_array_equal(counts.to_numpy(), expected.to_numpy())


def test_from_xarray_and_the_constructor_keep_labels(session: shoal.Session) -> None:
    x = _cube()
    ds = session.from_xarray(x, chunks={"time": 200})
    assert ds["t2m"].chunksizes["time"] == (200, 200, 200, 130)
    xr.testing.assert_allclose(ds.to_xarray(), x)
    da = shoal.DataArray(
        np.arange(12.0).reshape(3, 4),
        coords={"x": [10, 20, 30], "label": ("y", ["a", "b", "c", "d"])},
        dims=["x", "y"],
        name="v",
        attrs={"units": "m", "scale": np.float32(0.5), "valid": np.array([0, 9]), "fill": np.nan},
        session=session,
    )
    assert da.sizes == {"x": 3, "y": 4}
    assert da.attrs == {"units": "m", "scale": 0.5, "valid": [0, 9], "fill": None}
    np.testing.assert_array_equal(da.sel(x=20).values, [4.0, 5.0, 6.0, 7.0])
    assert list(da.groupby("label").sum().to_xarray().label.values) == ["a", "b", "c", "d"]


def test_bad_labels_give_one_line_errors(session: shoal.Session, cube: Path) -> None:
    da = session.open_zarr(cube)["t2m"]
    with pytest.raises(ValueError, match="dimension 'depth' is not one of"):
        da.mean("depth")
    with pytest.raises(shoal.InputError, match="not in dimension 'lat'") as raised:
        da.sel(lat=11.0)
    assert "\n" not in str(raised.value)
    with pytest.raises(shoal.InputError, match="unsupported resample frequency"):
        da.resample(time="3Q")
    with pytest.raises(ValueError, match=r"rolling takes one dimension.*\['time', 'lat'\]"):
        da.rolling(time=3, lat=2)
    with pytest.raises(shoal.InputError, match="not a multiple of the window"):
        da.coarsen(time=7).mean()
    with pytest.raises(shoal.ShoalError, match="no such|not found|No such"):
        session.open_zarr(cube.parent / "missing.zarr")


def test_reprs_show_labels_without_computing(session: shoal.Session, cube: Path) -> None:
    ds = session.open_zarr(cube)
    anomaly = ds.t2m - ds.t2m.mean("time")
    for thing in (ds, anomaly):
        html = thing._repr_html_()
        assert "<b>time</b>: 730" in html and "Coordinates" in html and "-50.0" in html
    assert "Dimensions: (time: 730, lat: 6, lon: 8)" in repr(ds)
    assert "t2m      (time, lat, lon) float64" in repr(ds)
    assert repr(anomaly).startswith("<shoal.DataArray t2m (time: 730, lat: 6, lon: 8)> dtype=float64")
    assert "units: K" in repr(ds.t2m) and "<td>(100, 6, 8)</td>" in ds.t2m._repr_html_()
    assert session.status()["jobs"] == []
