"""Chunked arrays from Python against NumPy on seeded data."""

from __future__ import annotations

import numpy as np
import pytest

import shoal


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(60, 45))


def test_elementwise_and_reductions_match_numpy(session: shoal.Session, x: np.ndarray) -> None:
    a = session.array.from_numpy(x, chunks=(16, 20))
    assert a.shape == (60, 45) and a.dtype == np.float64
    assert a.chunks == ((16, 16, 16, 12), (20, 20, 5))
    assert a.nbytes == x.nbytes
    np.testing.assert_allclose((a * 2 + 1).to_numpy(), x * 2 + 1)
    np.testing.assert_allclose((1 - a / 3).to_numpy(), 1 - x / 3)
    np.testing.assert_allclose((a**2).apply("sqrt").to_numpy(), np.sqrt(x**2))
    np.testing.assert_allclose(abs(-a).to_numpy(), np.abs(x))
    for name in ("sum", "mean", "min", "max", "std", "var"):
        for axis in (None, 0, 1, (0, 1), -1):
            got = getattr(a, name)(axis=axis).to_numpy()
            np.testing.assert_allclose(got, getattr(x, name)(axis=axis), rtol=1e-10, err_msg=f"{name} {axis}")
    np.testing.assert_array_equal(a.argmax(axis=0).to_numpy(), x.argmax(axis=0))
    np.testing.assert_array_equal((a > 0).to_numpy(), x > 0)
    assert float(a.sum().to_numpy()) == pytest.approx(x.sum())


def test_shapes_slices_and_products_match_numpy(session: shoal.Session, x: np.ndarray) -> None:
    a = session.array.from_numpy(x, chunks=15)
    np.testing.assert_allclose(a.T.to_numpy(), x.T)
    np.testing.assert_allclose(a[5:40:3, 7].to_numpy(), x[5:40:3, 7])
    np.testing.assert_allclose(a[-1].to_numpy(), x[-1])
    np.testing.assert_allclose(a.rechunk((60, 9)).to_numpy(), x)
    assert a.rechunk((60, 9)).chunks == ((60,), (9, 9, 9, 9, 9))
    np.testing.assert_allclose(a.reshape(45, 60).to_numpy(), x.reshape(45, 60))
    np.testing.assert_allclose((a @ a.T).to_numpy(), x @ x.T, rtol=1e-10)
    b = session.array.from_numpy(x.reshape(60, 5, 9), chunks=(20, 5, 3))
    got = session.array.tensordot(b, b, axes=([0, 1], [0, 1])).to_numpy()
    np.testing.assert_allclose(got, np.tensordot(x.reshape(60, 5, 9), x.reshape(60, 5, 9), axes=([0, 1], [0, 1])), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(a + np.ones((60, 45))), x + 1)


def test_negative_steps_lists_and_masks_index_as_numpy(session: shoal.Session, x: np.ndarray) -> None:
    a = session.array.from_numpy(x, chunks=(16, 20))
    mask = x[:, 0] > 0
    cases = [
        (a[::-1], x[::-1]),
        (a[50:3:-4, ::-2], x[50:3:-4, ::-2]),
        (a[[7, 0, 59, 7]], x[[7, 0, 59, 7]]),
        (a[3, [44, -1, 2]], x[3, [44, -1, 2]]),
        (a[mask], x[mask]),
        (a[..., 4], x[..., 4]),
        (a[:, [1, 3]].sum(axis=0), x[:, [1, 3]].sum(axis=0)),
    ]
    for got, expected in cases:
        np.testing.assert_allclose(got.to_numpy(), expected)
    dates = np.array(["2020-01-01", "2020-03-01"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(session.array.from_numpy(dates).to_numpy(), dates)
    with pytest.raises(IndexError, match="only one axis"):
        a[[1, 2], [3, 4]]
    cube = session.array.from_numpy(np.zeros((3, 4, 5)), chunks=2)
    with pytest.raises(IndexError, match="two steps"):
        cube[0, :, [1, 2]]
    assert cube[0, [1, 2], :].shape == np.zeros((3, 4, 5))[0, [1, 2], :].shape


def test_constructors_and_dtypes(session: shoal.Session) -> None:
    ones = session.array.ones((7, 5), chunks=3, dtype="int32")
    out = ones.to_numpy()
    assert out.dtype == np.int32 and out.shape == (7, 5) and out.sum() == 35
    np.testing.assert_array_equal(session.array.arange(10, chunks=4).to_numpy(), np.arange(10))
    r = session.array.random((100, 10), chunks=(30, 10), seed=5)
    again = session.array.random((100, 10), chunks=(100, 5), seed=5)
    np.testing.assert_array_equal(r.to_numpy(), again.to_numpy())
    np.testing.assert_array_equal(r.persist().rechunk((50, 10)).to_numpy(), again.to_numpy())
    values = r.to_numpy()
    assert 0 <= values.min() and values.max() < 1 and values.std() > 0.2
    ints = session.array.from_numpy(np.arange(12, dtype=np.int64).reshape(3, 4), chunks=2)
    np.testing.assert_array_equal(ints.astype("float32").to_numpy(), np.arange(12, dtype=np.float32).reshape(3, 4))
    flags = session.array.from_numpy(np.array([True, False, True]))
    assert flags.to_numpy().tolist() == [True, False, True]


def test_bad_input_is_a_clear_error(session: shoal.Session) -> None:
    a = session.array.ones((4, 4), chunks=2)
    with pytest.raises(shoal.InputError):
        (a @ session.array.ones((3, 3), chunks=3)).to_numpy()
    with pytest.raises(IndexError, match="out of bounds"):
        a[9]
    with pytest.raises(TypeError):
        session.array.from_numpy(np.array(["a", "b"]))
