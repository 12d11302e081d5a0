"""DataFrame verbs against pandas on the same seeded data, and Arrow interop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import polars as pl
import pyarrow as pa
import pytest

import shoal


@pytest.fixture
def trips() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 5000
    return pd.DataFrame(
        {
            "zone": rng.choice(["a", "b", "c", "d"], n),
            "fare": rng.uniform(2, 80, n).round(2),
            "tip": np.where(rng.uniform(size=n) < 0.1, np.nan, rng.uniform(0, 10, n)),
            "riders": rng.integers(1, 5, n),
        }
    )


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.sort_values(by).reset_index(drop=True)


def test_verbs_match_pandas(session: shoal.Session, trips: pd.DataFrame) -> None:
    df = session.from_pandas(trips)
    assert df.columns == ["zone", "fare", "tip", "riders"]
    assert df.count() == len(trips)

    got = df.query("fare > 40 and riders >= 2").to_pandas()
    want = trips.query("fare > 40 and riders >= 2")
    pdt.assert_frame_equal(_sorted(got, ["zone", "fare", "riders"]), _sorted(want, ["zone", "fare", "riders"]))

    got = df.groupby("zone").agg(total=("fare", "sum"), n=("fare", "count"), top=("fare", "max")).to_pandas()
    want = trips.groupby("zone").agg(total=("fare", "sum"), n=("fare", "count"), top=("fare", "max")).reset_index()
    pdt.assert_frame_equal(_sorted(got, ["zone"]), want, check_dtype=False)

    got = df.assign(per_rider="fare / riders").select("zone", "per_rider").to_pandas()
    assert np.allclose(np.sort(got["per_rider"]), np.sort(trips["fare"] / trips["riders"]))

    got = df.sort_values(["riders", "fare"], ascending=[False, True]).limit(10).to_pandas()
    want = trips.sort_values(["riders", "fare"], ascending=[False, True]).head(10).reset_index(drop=True)
    pdt.assert_frame_equal(got, want)

    assert df.dropna("tip").count() == trips["tip"].notna().sum()
    assert df.drop_duplicates("zone").count() == trips["zone"].nunique()
    renamed = df.rename({"fare": "price"})
    assert renamed.columns == ["zone", "price", "tip", "riders"]


def test_merge_matches_pandas(session: shoal.Session, trips: pd.DataFrame) -> None:
    zones = pd.DataFrame({"zone": ["a", "b", "c"], "borough": ["x", "y", "y"]})
    got = session.from_pandas(trips).merge(session.from_pandas(zones), on="zone", how="left").to_pandas()
    want = trips.merge(zones, on="zone", how="left")
    key = ["zone", "fare", "riders", "tip"]
    pdt.assert_frame_equal(_sorted(got, key), _sorted(want, key))


def test_sql_over_registered_frames_and_head(session: shoal.Session, trips: pd.DataFrame) -> None:
    session.register("trips", session.from_pandas(trips))
    session.register("zones", pl.DataFrame({"zone": ["a", "b"], "w": [1, 2]}))
    got = session.sql(
        "select t.zone, sum(t.riders * z.w) as r from trips t join zones z using (zone) group by t.zone order by t.zone"
    ).to_pandas()
    want = (
        trips.merge(pd.DataFrame({"zone": ["a", "b"], "w": [1, 2]}), on="zone")
        .assign(r=lambda f: f.riders * f.w)
        .groupby("zone", as_index=False)["r"]
        .sum()
    )
    pdt.assert_frame_equal(got, want, check_dtype=False)
    head = session.sql("select * from trips order by fare desc").head(3)
    assert isinstance(head, pd.DataFrame)
    assert list(head["fare"]) == sorted(trips["fare"], reverse=True)[:3]


def test_arrow_in_and_out_share_buffers(session: shoal.Session) -> None:
    values = pa.array(np.arange(1_000_000, dtype=np.int64))
    table = pa.table({"v": values})
    out = session.from_arrow(table).to_arrow()
    assert out.column("v").to_pylist()[:3] == [0, 1, 2]
    # Embedded, the batches handed in come back with the very same data buffer.
    if session.embedded:
        assert out.column("v").chunk(0).buffers()[1].address == values.buffers()[1].address
    # And what Shoal hands out is read by pyarrow and polars without a copy.
    frame = session.sql("select 1 as one, 'x' as s")
    assert pa.table(frame).to_pylist() == [{"one": 1, "s": "x"}]
    arrow_out = frame.to_arrow()
    polars_out = pl.from_arrow(arrow_out)
    assert isinstance(polars_out, pl.DataFrame)
    assert polars_out.to_dicts() == [{"one": 1, "s": "x"}]
    batches = list(session.sql("select * from unnest([1, 2, 3]) as t(x)"))
    assert sum(b.num_rows for b in batches) == 3


def test_writes_round_trip_and_refuse_to_overwrite(session: shoal.Session, trips: pd.DataFrame, tmp_path) -> None:
    path = str(tmp_path / "trips.parquet")
    session.from_pandas(trips).to_parquet(path)
    back = session.read_parquet(path).to_pandas()
    pdt.assert_frame_equal(_sorted(back, ["zone", "fare", "riders"]), _sorted(trips, ["zone", "fare", "riders"]))
    with pytest.raises(shoal.InputError, match="exists"):
        session.from_pandas(trips).to_parquet(path)
