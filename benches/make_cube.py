"""Writes a (time, lat, lon) float32 cube as a Zarr store with xarray, for arrays_peers.

Daily `time` from 2000-01-01 (CF-encoded: int64 `days since 2000-01-01`), float64 `lat`
and `lon` cell centres, one float32 variable (--var): a seasonal cycle that grows with
latitude, plus noise from numpy's default_rng(7). Chunks are --time-chunk along time and
whole along lat/lon, with zarr's default compressor. The defaults (3652 x 180 x 360) are
10 years of daily 1-degree data, ~0.95 GB of float32 before compression. One time-chunk
is generated and written at a time, so memory stays at about one chunk.

  python benches/make_cube.py --out data/cube.zarr [--zarr-format 3]
"""

import argparse
import os
import sys

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, metavar="PATH")
    parser.add_argument("--var", default="t2m")
    parser.add_argument("--time", type=int, default=3652)
    parser.add_argument("--lat", type=int, default=180)
    parser.add_argument("--lon", type=int, default=360)
    parser.add_argument("--time-chunk", type=int, default=365)
    parser.add_argument("--zarr-format", type=int, choices=(2, 3), default=2)
    args = parser.parse_args()
    if os.path.exists(args.out):
        sys.exit(f"make_cube.py: {args.out} already exists; not overwriting it")
    nt, ny, nx, ct = args.time, args.lat, args.lon, args.time_chunk

    time = pd.date_range("2000-01-01", periods=nt, freq="D")
    lat = np.linspace(-90 + 90 / ny, 90 - 90 / ny, ny)
    lon = np.linspace(180 / nx, 360 - 180 / nx, nx)
    # Template: coordinates are written now, the lazy variable only as metadata.
    lazy = da.zeros((nt, ny, nx), dtype="float32", chunks=(ct, ny, nx))
    dims = ("time", "lat", "lon")
    template = xr.Dataset({args.var: (dims, lazy)}, coords={"time": time, "lat": lat, "lon": lon})
    encoding = {
        "time": {"units": "days since 2000-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"},
        args.var: {"chunks": (ct, ny, nx)},
    }
    # Consolidated metadata (.zmetadata) for v2 only: it is not part of the v3 spec.
    store = dict(zarr_format=args.zarr_format, consolidated=args.zarr_format == 2)
    template.to_zarr(args.out, compute=False, encoding=encoding, **store)

    rng = np.random.default_rng(7)
    base = (300 - 50 * np.sin(np.radians(lat)) ** 2)[:, None] + 2 * np.cos(np.radians(lon))
    amplitude = (1 + 15 * np.sin(np.radians(lat)))[:, None]  # opposite phase in the south
    for start in range(0, nt, ct):
        stop = min(start + ct, nt)
        phase = 2 * np.pi * (time[start:stop].day_of_year.to_numpy() - 15) / 365.25
        season = -np.cos(phase)[:, None, None] * amplitude
        noise = rng.standard_normal((stop - start, ny, nx), dtype=np.float32) * 3
        values = (base + season + noise).astype(np.float32)
        block = xr.Dataset({args.var: (dims, values)})
        block.to_zarr(args.out, region={"time": slice(start, stop)}, **store)
    print(f"wrote {args.out}: {args.var} {nt}x{ny}x{nx} float32, chunks {ct}x{ny}x{nx}")


if __name__ == "__main__":
    main()
