"""PPEPS-WGM segmentation: recovers known evidence blobs, isolates a tag, batched == per-image, edge cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lvlmva_desktop.core.method.segment import (
    COVARIANCE_TYPES,
    SegmentationResult,
    SegmentSettings,
    ppeps_wgm,
    ppeps_wgm_single,
)
from lvlmva_desktop.core.runtime.jobs import Cancelled, TaskState


def blob_map(h, w, centres, masses, sigmas, dtype=torch.float64):
    """Sum of isotropic Gaussian blobs, each normalised on the pixel grid to carry exactly its mass."""
    r = torch.arange(h, dtype=torch.float64)[:, None]
    c = torch.arange(w, dtype=torch.float64)[None, :]
    out = torch.zeros(h, w, dtype=torch.float64)
    for (cr, cc), m, s in zip(centres, masses, sigmas):
        g = torch.exp(-((r - cr) ** 2 + (c - cc) ** 2) / (2 * s * s))
        out += m * g / g.sum()
    return out.to(dtype)


def add_negative_noise(pos, seed):
    """Negative clutter (noise and a negative blob) where there is no positive evidence: must be ignored."""
    gen = torch.Generator().manual_seed(seed)
    h, w = pos.shape
    empty = pos < 1e-9 * pos.max()
    noise = -torch.rand(h, w, generator=gen, dtype=torch.float64) * pos.max().item()
    neg_blob = -blob_map(h, w, [(h - 8, w - 8)], [0.5], [3.0]) * empty
    return (pos + noise * empty + neg_blob).to(pos.dtype)


def match(fitted, true):
    """Permutation of fitted components that minimises the total distance to the true centres."""
    best, best_cost = None, math.inf
    for perm in itertools.permutations(range(len(fitted)), len(true)):
        cost = sum(float(torch.dist(fitted[i], true[k])) for k, i in enumerate(perm))
        if cost < best_cost:
            best, best_cost = perm, cost
    return list(best)


def check_valid(res: SegmentationResult, b, h, w, j):
    assert res.labels.shape == (b, h, w) and res.labels.dtype == torch.int64
    assert res.weights.shape == (b, j) and res.evidence.shape == (b, j)
    assert res.means.shape == (b, j, 2) and res.covariances.shape == (b, j, 2, 2)
    assert res.n_iter.shape == (b,) and res.log_likelihood.shape == (b,)
    assert res.fallback.shape == (b,) and res.fallback.dtype == torch.bool
    for t in (res.weights, res.means, res.covariances, res.evidence, res.log_likelihood):
        assert torch.isfinite(t).all()
    assert res.labels.min() >= 0 and res.labels.max() < j
    assert torch.allclose(res.weights.sum(1), torch.ones(b, dtype=res.weights.dtype), atol=1e-5)
    assert torch.allclose(res.evidence.sum(1), torch.ones(b, dtype=res.evidence.dtype), atol=1e-5)
    # descending mixing weights: segment 0 holds the most evidence
    assert (res.weights[:, :-1] >= res.weights[:, 1:]).all()
    # covariances symmetric positive definite
    cov = res.covariances.double()
    assert torch.allclose(cov, cov.transpose(-1, -2))
    assert (torch.linalg.eigvalsh(cov) > 0).all()
    # labels never use empty components
    for i in range(b):
        used = torch.unique(res.labels[i])
        assert (res.weights[i, used] > 0).all()


THREE_BLOB_SCENES = [
    ([(16.0, 16.0), (44.0, 20.0), (28.0, 48.0)], [3.0, 3.5, 2.5]),
    ([(12.0, 50.0), (50.0, 50.0), (30.0, 14.0)], [2.5, 3.0, 3.5]),
    ([(20.0, 12.0), (20.0, 44.0), (50.0, 30.0)], [3.0, 2.0, 3.0]),
    ([(48.0, 14.0), (14.0, 30.0), (46.0, 50.0)], [3.5, 3.0, 2.5]),
]
MASSES = [0.5, 0.3, 0.2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recovers_known_blobs_for_a_batch(dtype):
    maps = torch.stack(
        [
            add_negative_noise(blob_map(64, 64, c, MASSES, s, dtype), seed=i)
            for i, (c, s) in enumerate(THREE_BLOB_SCENES)
        ]
    )
    # the paper's positive part: the negative clutter is ignored
    res = ppeps_wgm(maps, SegmentSettings(n_components=3, evidence="positive"))
    check_valid(res, len(THREE_BLOB_SCENES), 64, 64, 3)
    assert res.weights.dtype == dtype
    for i, (centres, _) in enumerate(THREE_BLOB_SCENES):
        true = torch.tensor(centres, dtype=torch.float64)
        fitted = res.means[i].double()
        perm = match(fitted, true)
        for k, idx in enumerate(perm):
            assert torch.dist(fitted[idx], true[k]) < 2.0
            assert abs(float(res.weights[i, idx]) - MASSES[k]) < 0.02
            # hard segments of well separated blobs hold the same evidence as the soft weights
            assert abs(float(res.evidence[i, idx]) - MASSES[k]) < 0.02
        # the largest blob is segment 0
        assert perm[0] == 0


def test_rows_and_columns_are_not_swapped_on_non_square_maps():
    a = blob_map(40, 80, [(10.0, 60.0), (30.0, 15.0)], [0.7, 0.3], [2.0, 3.0])
    res = ppeps_wgm(a, SegmentSettings(n_components=2))
    check_valid(res, 1, 40, 80, 2)
    assert torch.allclose(res.means[0, 0], torch.tensor([10.0, 60.0], dtype=torch.float64), atol=0.1)
    assert torch.allclose(res.means[0, 1], torch.tensor([30.0, 15.0], dtype=torch.float64), atol=0.1)
    assert torch.allclose(res.covariances[0, 0], 4.0 * torch.eye(2, dtype=torch.float64), atol=0.3)


def test_separate_tag_blob_becomes_its_own_segment():
    a = blob_map(64, 64, [(32.0, 30.0), (5.0, 58.0)], [0.9, 0.1], [9.0, 1.5], torch.float32)
    res = ppeps_wgm(add_negative_noise(a, seed=3), SegmentSettings(n_components=4))
    check_valid(res, 1, 64, 64, 4)
    lab = res.labels[0]
    rr, cc = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    tag = (rr - 5) ** 2 + (cc - 58) ** 2 <= 4
    tag_labels = torch.unique(lab[tag])
    assert len(tag_labels) == 1
    tag_label = int(tag_labels)
    centre = (rr - 32) ** 2 + (cc - 30) ** 2 <= 100
    assert not (lab[centre] == tag_label).any()
    assert abs(float(res.weights[0, tag_label]) - 0.1) < 0.01
    assert torch.dist(res.means[0, tag_label], torch.tensor([5.0, 58.0])) < 0.5


def random_scenes(n, size, seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(n):
        k = int(torch.randint(1, 5, (1,), generator=gen))
        centres = (torch.rand(k, 2, generator=gen) * (size - 16) + 8).tolist()
        masses = (torch.rand(k, generator=gen) + 0.1).tolist()
        sigmas = (torch.rand(k, generator=gen) * 4 + 1.5).tolist()
        pos = blob_map(size, size, centres, masses, sigmas)
        maps.append(pos + 1e-4 * pos.max() * torch.randn(size, size, generator=gen, dtype=torch.float64))
    return torch.stack(maps).to(dtype)


def test_batched_equals_per_image_float64():
    maps = random_scenes(6, 48, seed=1, dtype=torch.float64)
    batched = ppeps_wgm(maps, SegmentSettings())
    for i in range(len(maps)):
        single = ppeps_wgm_single(maps[i])
        assert torch.equal(single.labels[0], batched.labels[i])
        assert torch.allclose(single.weights[0], batched.weights[i], atol=1e-9)
        assert torch.allclose(single.means[0], batched.means[i], atol=1e-7)
        assert int(single.n_iter[0]) == int(batched.n_iter[i])


def test_batched_matches_per_image_float32():
    """float32 rounding differs with the batch shape, which can move EM's stopping point by one iteration."""
    maps = random_scenes(6, 48, seed=2, dtype=torch.float32)
    batched = ppeps_wgm(maps, SegmentSettings(), batch_size=4)  # two chunks, the second one partial
    for i in range(len(maps)):
        single = ppeps_wgm_single(maps[i])
        agree = (single.labels[0] == batched.labels[i]).float().mean()
        assert agree > 0.995
        assert torch.allclose(single.weights[0], batched.weights[i], atol=5e-3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(32, 40),
        lambda: -torch.rand(32, 40, generator=torch.Generator().manual_seed(0)),
        lambda: torch.full((32, 40), float("nan")),
    ],
    ids=["zeros", "negative-only", "all-nan"],
)
def test_maps_without_evidence_fall_back_to_uniform(make):
    res = ppeps_wgm(make(), SegmentSettings(n_components=4, evidence="positive"))
    check_valid(res, 1, 32, 40, 4)
    assert res.fallback.tolist() == [True]
    # a uniform mass spreads over the whole image: all four segments are used
    assert len(torch.unique(res.labels)) == 4
    assert torch.allclose(res.evidence, torch.bincount(res.labels.flatten(), minlength=4)[None] / (32 * 40.0))
    # the absolute value finds evidence in a negative-only map; zeros and NaN still have none
    res_abs = ppeps_wgm(make(), SegmentSettings(n_components=4, evidence="absolute"))
    assert res_abs.fallback.tolist() == [bool(not (make() < 0).any())]


def test_nan_or_inf_anywhere_gives_the_uniform_fallback_and_finite_outputs():
    a = blob_map(32, 32, [(8.0, 8.0)], [1.0], [2.0], torch.float32)
    with_nan, with_inf = a.clone(), a.clone()
    with_nan[3, 4] = float("nan")
    with_inf[20, 20] = float("inf")
    maps = torch.stack([a, with_nan, with_inf, torch.zeros(32, 32)])
    res = ppeps_wgm(maps, SegmentSettings(n_components=3))
    check_valid(res, 4, 32, 32, 3)
    assert res.fallback.tolist() == [False, True, True, True]
    # the broken maps are segmented exactly like an empty one
    for i in (1, 2):
        assert torch.equal(res.labels[i], res.labels[3])
        assert torch.allclose(res.weights[i], res.weights[3])


def test_single_pixel_evidence_gives_finite_non_degenerate_fit():
    a = torch.zeros(64, 64, dtype=torch.float64)
    a[10, 50] = 3.0
    res = ppeps_wgm(a, SegmentSettings(n_components=4))
    check_valid(res, 1, 64, 64, 4)
    assert torch.allclose(res.weights[0], torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    assert (res.labels == 0).all()
    assert torch.allclose(res.means[0, 0], torch.tensor([10.0, 50.0], dtype=torch.float64))
    # the floor: one pixel cell (1/12 px^2) plus reg_covar in normalised units
    floor = 1.0 / 12.0 + 1e-6 * 63.0**2
    assert torch.allclose(res.covariances[0, 0], floor * torch.eye(2, dtype=torch.float64))


def test_two_pixel_evidence_and_more_components_than_points():
    a = torch.zeros(16, 16)
    a[2, 3] = 1.0
    a[12, 13] = 1.0
    res = ppeps_wgm(a, SegmentSettings(n_components=5))
    check_valid(res, 1, 16, 16, 5)
    assert torch.allclose(res.weights[0, :2], torch.tensor([0.5, 0.5]), atol=1e-6)
    assert res.labels[0, 2, 3] != res.labels[0, 12, 13]


def test_deterministic_and_seeded():
    maps = random_scenes(3, 40, seed=5, dtype=torch.float32)
    first = ppeps_wgm(maps, SegmentSettings(seed=7))
    second = ppeps_wgm(maps.clone(), SegmentSettings(seed=7))
    for field in SegmentationResult.__dataclass_fields__:
        assert torch.equal(getattr(first, field), getattr(second, field)), field


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_covariance_types(covariance):
    centres, sigmas = THREE_BLOB_SCENES[0]
    maps = blob_map(64, 64, centres, MASSES, sigmas, torch.float32)[None]
    res = ppeps_wgm(maps, SegmentSettings(n_components=3, covariance=covariance))
    check_valid(res, 1, 64, 64, 3)
    cov = res.covariances
    if covariance in ("diag", "spherical"):
        assert (cov[..., 0, 1] == 0).all() and (cov[..., 1, 0] == 0).all()
    if covariance == "spherical":
        assert torch.allclose(cov[..., 0, 0], cov[..., 1, 1])


def test_float64_on_cpu_keeps_dtype_and_device():
    a = blob_map(24, 24, [(6.0, 6.0), (18.0, 16.0)], [0.6, 0.4], [2.0, 2.0])
    res = ppeps_wgm(a, SegmentSettings(n_components=2))
    for t in (res.weights, res.means, res.covariances, res.evidence, res.log_likelihood):
        assert t.dtype == torch.float64 and t.device.type == "cpu"
    assert res.labels.device.type == "cpu"


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    "centres",
    [[(8.0, 9.0), (22.0, 24.0), (24.0, 7.0)], [(10.0, 10.0), (16.0, 16.0), (24.0, 22.0)]],
    ids=["separated", "overlapping"],
)
def test_matches_sklearn_on_integer_weights_by_repetition(covariance, centres):
    """Integer masses are repeated points: an unweighted GMM on the repeats is the same weighted problem."""
    mixture = pytest.importorskip("sklearn.mixture")
    import numpy as np

    h = w = 32
    pos = blob_map(h, w, centres, [0.5, 0.3, 0.2], [3.0, 2.5, 3.0])
    counts = torch.round(600 * pos).to(torch.int64)  # small integer masses
    assert 1 < counts.max() <= 10
    rows, cols = torch.nonzero(counts, as_tuple=True)
    points = torch.stack([rows, cols], 1).double().repeat_interleave(counts[rows, cols], dim=0).numpy()

    reg = 1e-6  # normalised units; sklearn works in pixels, so scale it by (size - 1)^2
    settings = SegmentSettings(
        n_components=3,
        covariance=covariance,
        reg_covar=reg,
        pixel_cell_variance=False,
        tol=1e-9,
        max_iter=1000,
    )
    ours = ppeps_wgm(counts.double(), settings)
    gm = mixture.GaussianMixture(
        n_components=3,
        covariance_type=covariance,
        reg_covar=reg * (h - 1) ** 2,
        tol=1e-9,
        max_iter=1000,
        random_state=0,
    ).fit(points)
    sk_means = torch.from_numpy(gm.means_)
    perm = match(ours.means[0], sk_means)
    for k, idx in enumerate(perm):
        assert torch.dist(ours.means[0, idx], sk_means[k]) < 0.1
        assert abs(float(ours.weights[0, idx]) - gm.weights_[k]) < 0.005
        sk_cov = np.eye(2) * gm.covariances_[k] if covariance != "full" else gm.covariances_[k]
        assert np.allclose(ours.covariances[0, idx].numpy(), sk_cov, rtol=0.02, atol=0.02)
    # same objective: the mean log-likelihood, ours per normalised unit^2, sklearn's per px^2
    assert float(ours.log_likelihood[0]) - math.log((h - 1) * (w - 1)) == pytest.approx(
        gm.score(points), abs=1e-4
    )


def test_progress_and_cancel():
    maps = random_scenes(5, 24, seed=3, dtype=torch.float32)
    seen = []
    state = TaskState(on_progress=lambda f, m: seen.append(f))
    res = ppeps_wgm(maps, SegmentSettings(n_components=2), state=state, batch_size=2)
    assert res.labels.shape == (5, 24, 24)
    assert seen == pytest.approx([0.4, 0.8, 1.0])
    cancelled = TaskState()
    cancelled.cancel()
    with pytest.raises(Cancelled):
        ppeps_wgm(maps, state=cancelled)


def test_empty_batch_and_2d_input_shapes():
    res = ppeps_wgm(torch.zeros(0, 8, 9))
    assert res.labels.shape == (0, 8, 9) and res.weights.shape == (0, 4)
    single = ppeps_wgm_single(blob_map(8, 9, [(3.0, 3.0)], [1.0], [1.0]))
    assert single.labels.shape == (1, 8, 9)


@pytest.mark.parametrize(
    ("args", "kwargs", "match_text"),
    [
        ((torch.zeros(8),), {}, "must be"),
        ((torch.zeros(2, 1, 8, 8),), {}, "must be"),
        ((torch.zeros(8, 8), SegmentSettings(n_components=0)), {}, "n_components"),
        ((torch.zeros(8, 8), SegmentSettings(covariance="tied")), {}, "covariance"),
        ((torch.zeros(8, 8), SegmentSettings(max_iter=0)), {}, "max_iter"),
        ((torch.zeros(8, 8), SegmentSettings(reg_covar=-1.0)), {}, "reg_covar"),
        ((torch.zeros(8, 8), SegmentSettings(reg_covar=0.0, pixel_cell_variance=False)), {}, "reg_covar"),
        ((torch.zeros(8, 8),), {"batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_inputs_raise_clear_errors(args, kwargs, match_text):
    with pytest.raises(ValueError, match=match_text):
        ppeps_wgm(*args, **kwargs)


def test_single_rejects_a_batch():
    with pytest.raises(ValueError, match="one map"):
        ppeps_wgm_single(torch.zeros(2, 8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    # well separated blobs have one optimum, so float32 rounding differences cannot change the answer
    maps = torch.stack(
        [
            add_negative_noise(blob_map(64, 64, c, MASSES, s, torch.float32), seed=i)
            for i, (c, s) in enumerate(THREE_BLOB_SCENES)
        ]
    )
    settings = SegmentSettings(n_components=3)
    cpu, gpu = ppeps_wgm(maps, settings), ppeps_wgm(maps.cuda(), settings)
    assert gpu.labels.device.type == "cuda" and gpu.weights.dtype == torch.float32
    check_valid(
        SegmentationResult(**{f: getattr(gpu, f).cpu() for f in SegmentationResult.__dataclass_fields__}),
        4,
        64,
        64,
        3,
    )
    assert (gpu.labels.cpu() == cpu.labels).float().mean() > 0.999
    assert torch.allclose(gpu.weights.cpu(), cpu.weights, atol=1e-3)
    assert torch.allclose(gpu.means.cpu(), cpu.means, atol=0.05)
    # random scenes in float64: same seeds, same EM path up to rounding
    maps64 = random_scenes(8, 64, seed=4, dtype=torch.float64)
    cpu64, gpu64 = ppeps_wgm(maps64), ppeps_wgm(maps64.cuda())
    assert (gpu64.labels.cpu() == cpu64.labels).float().mean() > 0.99
    assert torch.allclose(gpu64.weights.cpu(), cpu64.weights, atol=5e-3)


def test_absolute_evidence_gives_negative_evidence_its_own_segment():
    # a shortcut the model reads as "darker than the reference" carries only negative attribution: the
    # paper's positive part puts no segment on it, the absolute value does
    h = w = 32
    pos = blob_map(h, w, [(10.0, 10.0), (12.0, 20.0)], [0.5, 0.5], [2.5, 2.5])
    neg = blob_map(h, w, [(27.0, 27.0)], [0.8], [1.5])
    att = pos - neg
    by_pos = ppeps_wgm(att, SegmentSettings(n_components=3, evidence="positive"))
    by_abs = ppeps_wgm(att, SegmentSettings(n_components=3, evidence="absolute"))
    corner = (27, 27)
    # positive part: the negative blob gets no component of its own (every centre lies near the digit)
    assert float(torch.cdist(by_pos.means[0], torch.tensor([corner], dtype=by_pos.means.dtype)).min()) > 5
    # absolute value: one component sits on it and holds its share of the evidence
    d = torch.cdist(by_abs.means[0], torch.tensor([corner], dtype=by_abs.means.dtype)).squeeze(1)
    k = int(d.argmin())
    assert float(d[k]) < 1.0
    assert int(by_abs.labels[0, 27, 27]) == k
    assert abs(float(by_abs.evidence[0, k]) - 0.8 / 1.8) < 0.02
    check_valid(by_abs, 1, h, w, 3)


def test_evidence_map_kinds_keep_non_finite_values():
    from lvlmva_desktop.core.method.segment import evidence_map, recorded_evidence

    a = torch.tensor([[-2.0, 3.0], [float("-inf"), float("nan")]])
    p, q = evidence_map(a, "positive"), evidence_map(a, "absolute")
    assert p[0].tolist() == [0.0, 3.0] and q[0].tolist() == [2.0, 3.0]
    assert p[1, 0] == float("-inf") and torch.isnan(p[1, 1]) and q[1, 0] == float("-inf")
    # a map whose only non-finite value is negative infinity still falls back to uniform
    res = ppeps_wgm(torch.tensor([[1.0, float("-inf")], [0.5, 0.0]]), SegmentSettings(n_components=2))
    assert bool(res.fallback[0])
    with pytest.raises(ValueError, match="evidence kind"):
        evidence_map(a, "negative")
    with pytest.raises(ValueError, match="evidence kind"):
        ppeps_wgm(a, SegmentSettings(evidence="both"))
    # explanations made before the setting existed were segmented on the positive part
    assert recorded_evidence({"segment": {"n_components": 4}}) == "positive"
    assert recorded_evidence({"segment": {"evidence": "absolute"}}) == "absolute"
    assert recorded_evidence(None) == "positive"
