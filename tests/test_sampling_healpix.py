"""HEALPix sampling against healpy: geometry, hierarchy, partial skies, bad input."""

import healpy as hp
import numpy as np
import pytest

from graphsphere.sampling import HEALPix, check_map_order, extend_footprint


@pytest.mark.parametrize("nest", [True, False])
def test_geometry_matches_healpy(nest):
    s = HEALPix(nside=8, nest=nest)
    assert s.npix == 768
    lon, lat = hp.pix2ang(8, np.arange(768), nest=nest, lonlat=True)
    np.testing.assert_allclose(s.lonlat[:, 0], lon % 360, atol=1e-9)
    np.testing.assert_allclose(s.lonlat[:, 1], lat, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(s.xyz, axis=1), 1, atol=1e-12)
    assert s.area.sum() == pytest.approx(4 * np.pi, rel=1e-12)


@pytest.mark.parametrize("nest", [True, False])
def test_coarsen_is_healpy_ud_grade(nest, rng):
    s = HEALPix(nside=16, nest=nest)
    coarse, assign = s.coarsen()
    assert coarse.nside == 8 and coarse.nest == nest and assign.shape == (768, 3072)
    np.testing.assert_allclose(assign.sum(axis=0), 1)  # every fine pixel in one parent
    m = rng.standard_normal(s.npix)
    order = "NESTED" if nest else "RING"
    ref = hp.ud_grade(m, 8, order_in=order, order_out=order)
    np.testing.assert_allclose(assign @ m / 4, ref, rtol=1e-12)


def test_partial_sky_coarsens_within_footprint(rng):
    ids = np.sort(rng.choice(768 // 4, size=20, replace=False))  # 20 whole parents at nside 4
    fine_ids = (ids[:, None] * 4 + np.arange(4)).ravel()
    s = HEALPix(nside=8, indices=fine_ids)
    coarse, assign = s.coarsen()
    np.testing.assert_array_equal(coarse.indices, ids)
    full = rng.standard_normal(768)
    ref = hp.ud_grade(full, 4, order_in="NESTED", order_out="NESTED")[ids]
    np.testing.assert_allclose(assign @ full[fine_ids] / 4, ref, rtol=1e-12)
    assert s.area.sum() == pytest.approx(4 * np.pi * len(fine_ids) / 768)


def test_partial_sky_in_any_order_keeps_data_order(rng):
    ids = rng.permutation(64)  # one base pixel at nside 8, shuffled
    s = HEALPix(nside=8, indices=ids)
    np.testing.assert_allclose(s.xyz, np.stack(hp.pix2vec(8, ids, nest=True), 1))
    coarse, assign = s.coarsen()
    m = rng.standard_normal(768)
    np.testing.assert_allclose(assign @ m[ids] / 4, hp.ud_grade(m, 4, order_in="NESTED", order_out="NESTED")[:16])


def test_incomplete_parents_are_an_error_with_the_fix():
    s = HEALPix(nside=8, indices=[0, 1, 2, 5])
    with pytest.raises(ValueError, match="extend_footprint"):
        s.coarsen()
    ext = extend_footprint([0, 1, 2, 5], nside=8, verbose=False)
    np.testing.assert_array_equal(ext, np.arange(8))
    assert HEALPix(nside=8, indices=ext).coarsen()[0].npix == 2
    two = extend_footprint([0, 70], nside=8, levels=2, verbose=False)
    assert two.size == 32 and HEALPix(8, indices=two).pyramid(2)[-1][0].npix == 2


def test_extend_footprint_says_what_it_added(capsys):
    extend_footprint([0, 1, 5], nside=4)
    assert "added 5 pixels" in capsys.readouterr().out


def test_pyramid_counts():
    assert [s.npix for s, _ in HEALPix(nside=8).pyramid(3)] == [768, 192, 48, 12]
    with pytest.raises(ValueError, match="coarsest"):
        HEALPix(nside=1).coarsen()


@pytest.mark.parametrize("bad", [0, 3, 12, -4, 2.5, 16384])
def test_bad_nside(bad):
    with pytest.raises(ValueError, match="nside"):
        HEALPix(nside=bad)


def test_bad_indices():
    with pytest.raises(ValueError, match="out of range"):
        HEALPix(nside=2, indices=[0, 48])
    with pytest.raises(ValueError, match="out of range"):
        HEALPix(nside=2, indices=[-1, 3])
    with pytest.raises(ValueError, match="repeated"):
        HEALPix(nside=2, indices=[3, 4, 3])
    with pytest.raises(ValueError, match="integer"):
        HEALPix(nside=2, indices=[0.5, 1])


def test_full_set_of_indices_is_the_full_sphere():
    assert HEALPix(nside=2, indices=np.arange(48)).full_sphere


def test_ring_map_where_nested_expected_is_caught():
    cl = 1.0 / (np.arange(49) + 1.0) ** 2
    np.random.seed(3)
    ring = hp.synfast(cl, 16)  # healpy makes RING maps
    nested = hp.reorder(ring, r2n=True)
    s = HEALPix(nside=16)
    s.check_map(nested)  # right ordering: silent
    with pytest.raises(ValueError, match="RING-ordered.*reorder"):
        s.check_map(ring)
    with pytest.raises(ValueError, match="NESTED-ordered"):
        check_map_order(nested, nest=False)
    check_map_order(np.random.default_rng(0).standard_normal(3072), nest=True)  # noise: can't tell, no error


def test_wrong_pixel_count_is_an_error():
    with pytest.raises(ValueError, match="3071 entries.*3072 pixels"):
        HEALPix(nside=16).check_map(np.zeros(3071))


def test_state_round_trip_and_compact_ranges():
    from graphsphere.sampling import from_spec, from_state

    for s in [HEALPix(4), HEALPix(4, nest=False), HEALPix(4, indices=[5, 1, 2])]:
        assert from_state(s.to_state()) == s
    # a patch is one run of consecutive NESTED ids: stored as [start, stop), not 4096 ids
    patch = HEALPix(64, indices=np.arange(4096, 8192))
    assert patch.to_state() == {"type": "HEALPix", "nside": 64, "nest": True, "ranges": [[4096, 8192]]}
    assert from_state(patch.to_state()) == patch
    scattered = HEALPix(4, indices=[7, 1, 30, 2])                 # runs would be longer than the ids
    assert scattered.to_state()["indices"] == [7, 1, 30, 2]
    assert from_spec("healpix", nside=4, ranges=[[0, 3], [10, 12]]) == HEALPix(4, indices=[0, 1, 2, 10, 11])
    assert HEALPix(4, indices=[1, 2]) != HEALPix(4, indices=[2, 1])   # the order is the data's order


def test_unseen_pixels_of_float32_maps_are_missing_too():
    """float32's UNSEEN (-1.63750004e30) is not healpy.UNSEEN once cast to float64: a RING map with
    UNSEEN holes, stored as float32, is still caught by the ordering check and still read as missing
    (found by mutation testing of sampling: the check compared after the cast and saw no holes)."""
    from graphsphere.data.skymaps import read_map_file
    from graphsphere.sampling.healpix import check_map_order, unseen

    nside = 32
    m = hp.synfast(1.0 / (np.arange(3 * nside) + 1.0) ** 2, nside, new=True, pixwin=False)  # RING, smooth
    holes = np.random.default_rng(0).choice(m.size, m.size // 10, replace=False)
    m[holes] = hp.UNSEEN
    assert int(unseen(m.astype(np.float32).astype(np.float64)).sum()) == int(hp.mask_bad(m.astype(np.float32)).sum())
    for dtype in (np.float64, np.float32):
        with pytest.raises(ValueError, match="RING"):
            check_map_order(m.astype(dtype), nest=True)
    import tempfile, os
    path = os.path.join(tempfile.mkdtemp(), "m.npy")
    np.save(path, m.astype(np.float32))
    read = read_map_file(path, ordering="ring")[0, :, 0]
    assert np.isnan(read).sum() == holes.size
