"""Column expressions (`shoal.col`, `shoal.lit`, `shoal.functions`) against pandas."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import shoal
from shoal import col, functions as F, lit


@pytest.fixture
def sales() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 2000
    return pd.DataFrame(
        {
            "shop": rng.choice(["north", "south", "o'hare"], n),
            "units": rng.integers(0, 20, n),
            "price": rng.uniform(1, 9, n).round(2),
            "day": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 90, n), unit="D"),
        }
    )


def test_masks_and_arithmetic_match_pandas(session: shoal.Session, sales: pd.DataFrame) -> None:
    df = session.from_pandas(sales)
    mask = ((col("units") > 5) & (col("price") <= 4.5)) | ~col("shop").isin(["north", "south"])
    got = df[mask].assign(revenue=col("units") * col("price"), half=col("units") / 2).to_pandas()
    pmask = ((sales.units > 5) & (sales.price <= 4.5)) | ~sales.shop.isin(["north", "south"])
    want = sales[pmask].assign(revenue=sales.units * sales.price, half=sales.units / 2)
    key = ["shop", "units", "price", "day"]
    pdt.assert_frame_equal(
        got.sort_values(key).reset_index(drop=True),
        want.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )
    # A string with a quote, and a date literal, survive as literals.
    assert df[col("shop") == "o'hare"].count() == (sales.shop == "o'hare").sum()
    after = df[col("day") >= lit(datetime.date(2024, 3, 1))].count()
    assert after == (sales.day >= "2024-03-01").sum()


def test_expression_aggregates_and_functions(session: shoal.Session, sales: pd.DataFrame) -> None:
    df = session.from_pandas(sales)
    got = (
        df.groupby("shop")
        .agg(revenue=F.sum(col("units") * col("price")), days=F.nunique(col("day")), n=F.count())
        .sort_values("shop")
        .to_pandas()
    )
    want = (
        sales.assign(revenue=sales.units * sales.price)
        .groupby("shop")
        .agg(revenue=("revenue", "sum"), days=("day", "nunique"), n=("units", "size"))
        .reset_index()
    )
    pdt.assert_frame_equal(got, want, check_dtype=False)
    months = df.assign(m=F.month(col("day"))).select("m").drop_duplicates().sort_values("m").to_pandas()
    assert list(months["m"]) == [1, 2, 3]


def test_an_expression_has_no_truth_value() -> None:
    with pytest.raises(TypeError, match="& and |"):
        bool(col("a") > 1)
    assert (col("a") + 1).sql == '("a" + 1)'
    assert lit(None).sql == "NULL" and lit(True).sql == "TRUE"
