"""PPEPS-WGM: segment an image where the classifier's evidence lies (weighted Gaussian mixture).

Positive predictive-effect probability segmentation: the positive part of an attribution map toward the
true label, a+ = max(a, 0) -- or, with ``SegmentSettings.evidence = "absolute"`` (the default here), its
absolute value |a|, so that evidence *against* the class (a shortcut that lowers the other classes' scores)
gets segments too (docs/method.md, step 4) -- is normalised to a probability mass p over pixels. A
J-component Gaussian mixture is fitted to the pixels' normalised (row, col) coordinates, pixel i weighted by
M * p_i (M pixels), and every pixel goes to its most responsible component. Segments therefore follow the
evidence: a separate blob of evidence (a watermark, a tag in a corner) becomes its own segment, and a
component's mixing weight is the share of the evidence it holds.

No library fits a GMM with sample weights, so this is a small weighted EM over 2-D points, batched over
images in torch: all images of a chunk share one set of tensor ops, with (B, J, K) responsibilities, a
log-sum-exp E-step and per-image convergence, on whatever device the input is on.

Choices that the method leaves open, and what this module does:

* Coordinates are normalised to [0, 1] (row / (H - 1), col / (W - 1)); internally they are centred at 0.5
  for float accuracy. ``tol`` and ``reg_covar`` are in these normalised units. Results (means,
  covariances) are reported in pixel units.
* Covariance floor: ``reg_covar`` (default 1e-6, normalised units, like scikit-learn) is added to the
  diagonal, plus -- with ``pixel_cell_variance`` (default on) -- the variance of one pixel cell, 1/12 px^2
  per axis (Sheppard's correction: a pixel stands for a unit square of the continuous evidence density,
  not a point). This floor is resolution-independent, so a single-pixel blob gets a round component of
  standard deviation ~0.29 px instead of a degenerate one, and no component can collapse onto one pixel.
  Reported covariances include the floor (as scikit-learn's ``covariances_`` do).
* Maps with no positive attribution (all <= 0) or with any non-finite value get a uniform p: the map
  carries no usable evidence (a NaN/inf usually means the attribution itself broke), but the image still
  gets a well-defined segmentation. Their ``evidence`` is then each segment's share of pixels.
* Initialisation: weighted k-means++ seeding (first centre drawn with probability p_i, the next with
  probability ~ p_i D_i^2), refined by at most ``kmeans_iter`` weighted Lloyd steps, then one M-step from
  the hard k-means assignment (as scikit-learn's "kmeans" init). Every image uses the same seeded uniform
  draws, so an image's result does not depend on which other images share its batch.
* Convergence: the weighted mean log-likelihood sum_i p_i log f(x_i) (density in normalised units) is
  computed in each E-step; an image stops when it changes by less than ``tol``. ``n_iter`` counts EM
  iterations as scikit-learn does.
* Components are ordered by descending mixing weight, so segment 0 holds the most evidence. Components
  that lose all their mass get weight exactly 0, are never used by ``labels`` and keep their last finite
  mean and covariance.
* EM runs only on pixels with p_i > 0 (padded to a common length per chunk with zero weight) when that
  saves at least a quarter of the pixels; all pixels are labelled once at the end.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from lvlmva_desktop.core.method.settings import (
    COVARIANCE_TYPES as COVARIANCE_TYPES,  # re-exported (tests, callers)
)
from lvlmva_desktop.core.method.settings import EVIDENCE_KINDS, LEGACY_VALUES, SegmentSettings
from lvlmva_desktop.core.runtime.jobs import TaskState, ensure_state
from lvlmva_desktop.core.runtime.memory import run_batched

# log mixing weight used for empty components: exp() of it is exactly 0 in float32 and float64, yet it is
# finite (no inf * 0 = NaN in matmuls) and far below any log density of a live component.
_DEAD_LOG_WEIGHT = -1e30
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class SegmentationResult:
    """One segmentation per image; components are ordered by descending mixing weight."""

    labels: torch.Tensor  # (B, H, W) int64, segment index 0..J-1 per pixel
    weights: torch.Tensor  # (B, J) mixing weights = share of positive evidence per component (sum to 1)
    means: torch.Tensor  # (B, J, 2) centres in pixel coordinates (row, col)
    covariances: torch.Tensor  # (B, J, 2, 2) in pixel units, floor included
    evidence: torch.Tensor  # (B, J) share of positive attribution mass inside each hard segment of labels
    n_iter: torch.Tensor  # (B,) EM iterations used
    log_likelihood: torch.Tensor  # (B,) final weighted mean log-likelihood (normalised coordinates)
    fallback: torch.Tensor  # (B,) bool, no positive evidence or a non-finite value: segmented with uniform p


def evidence_map(attribution: torch.Tensor, kind: str = "positive") -> torch.Tensor:
    """The non-negative evidence PPEPS-WGM segments: the positive part (paper) or the absolute value.

    NaN and inf pass through unchanged (the fit treats such maps as carrying no usable evidence).
    """
    if kind == "positive":
        return torch.where(torch.isfinite(attribution), attribution.clamp_min(0), attribution)
    if kind == "absolute":
        return torch.where(torch.isfinite(attribution), attribution.abs(), attribution)
    raise ValueError(f"Unknown evidence kind '{kind}'; choose one of {EVIDENCE_KINDS}.")


def recorded_evidence(settings: dict | str | None) -> str:
    """The evidence kind an explanation was segmented with, from its recorded settings (a dict, or the JSON
    text of an ``explanations`` row); explanations from before the setting have its legacy value."""
    d = json.loads(settings or "{}") if isinstance(settings, str) or settings is None else settings
    return str({**LEGACY_VALUES["segment"], **(d.get("segment") or {})}["evidence"])


# -- helpers -----------------------------------------------------------------------------------------------
def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _param_dtype(device: torch.device) -> torch.dtype:
    # J-sized parameter algebra is tiny, so do it in float64 wherever the device has it
    return torch.float32 if device.type == "mps" else torch.float64


def _evidence_mass(att: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M) probability mass p over pixels and a (B,) flag for maps that fell back to uniform."""
    b, m = att.shape
    finite = torch.isfinite(att)
    pos = torch.where(finite, att, torch.zeros((), dtype=att.dtype, device=att.device)).clamp_min(0)
    mx = pos.amax(dim=1, keepdim=True)
    usable = finite.all(dim=1) & (mx.squeeze(1) > 0)
    # divide by the max first so the sum cannot overflow (float32 maps with huge values)
    pos = pos / torch.where(mx > 0, mx, torch.ones_like(mx))
    s = pos.sum(dim=1, keepdim=True)
    p = pos / torch.where(s > 0, s, torch.ones_like(s))
    p = torch.where(usable[:, None], p, torch.full_like(p, 1.0 / m))
    return p, ~usable


def _grid(h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(6, M) features [r^2, 2rc, c^2, r, c, 1] of centred normalised coordinates, and the (2,) pixel scale.

    One matmul with these features evaluates every component's quadratic log density (E-step) and gives
    every sufficient statistic (M-step), which keeps the batched fit to a few passes over (B, J, M).
    """
    scale = torch.tensor([max(h - 1, 1), max(w - 1, 1)], dtype=torch.float64)
    rows = torch.arange(h, dtype=torch.float64) / scale[0] - 0.5
    cols = torch.arange(w, dtype=torch.float64) / scale[1] - 0.5
    r = rows[:, None].expand(h, w).reshape(-1)
    c = cols[None, :].expand(h, w).reshape(-1)
    feats = torch.stack([r * r, 2 * r * c, c * c, r, c, torch.ones_like(r)])
    return feats.to(device=device, dtype=dtype), scale


def _scores(coef: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """(B, J, K) = coef (B, J, 6) @ feats ((6, K) shared or (B, 6, K) per image)."""
    return torch.matmul(coef, feats)


def _stats(q: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """(B, J, 6) weighted sums of the features for weights q (B, J, K)."""
    if feats.dim() == 2:
        b, j, k = q.shape
        return (q.reshape(b * j, k) @ feats.T).reshape(b, j, 6)
    return torch.bmm(q, feats.transpose(1, 2))


def _gauss_coef(
    logw: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """(B, J, 6) coefficients so that coef @ feats = log w_j + log N(x | mean_j, cov_j)."""
    a, b, c = covs[..., 0, 0], covs[..., 0, 1], covs[..., 1, 1]
    det = a * c - b * b
    p00, p01, p11 = c / det, -b / det, a / det
    mr, mc = means[..., 0], means[..., 1]
    lin_r = p00 * mr + p01 * mc
    lin_c = p01 * mr + p11 * mc
    const = -0.5 * (mr * lin_r + mc * lin_c) - 0.5 * torch.log(det) - _LOG_2PI + logw
    return torch.stack([-0.5 * p00, -0.5 * p01, -0.5 * p11, lin_r, lin_c, const], dim=-1).to(dtype)


def _kmeans_coef(centres: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, J, 6) coefficients so that coef @ feats = -|x - centre_j|^2."""
    cr, cc = centres[..., 0], centres[..., 1]
    one = torch.ones_like(cr)
    zero = torch.zeros_like(cr)
    return torch.stack([-one, zero, -one, 2 * cr, 2 * cc, -(cr * cr + cc * cc)], dim=-1).to(dtype)


class _Model:
    """The M-step: mixing weights, means and covariances (float64 where possible) from weighted sums."""

    def __init__(self, floor: torch.Tensor, covariance: str, alive_threshold: float) -> None:
        self.floor = floor  # (2,) diagonal covariance floor, normalised units
        self.covariance = covariance
        self.alive_threshold = alive_threshold

    def m_step(
        self, stats: torch.Tensor, prev_means: torch.Tensor, prev_covs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mixing weights, means and covariances from (B, J, 6) weighted sums; empty components keep theirs."""
        s = stats.to(prev_means.dtype)
        nk = s[..., 5]
        alive = nk > self.alive_threshold
        safe = torch.where(alive, nk, torch.ones_like(nk))
        # a weighted mean of points in the box stays in the box: the clamps only undo rounding
        mean = (s[..., 3:5] / safe[..., None]).clamp(-0.5, 0.5)
        mr, mc = mean[..., 0], mean[..., 1]
        vr = (s[..., 0] / safe - mr * mr).clamp(0.0, 0.25)
        vc = (s[..., 2] / safe - mc * mc).clamp(0.0, 0.25)
        bound = torch.sqrt(vr * vc)
        cv = (0.5 * s[..., 1] / safe - mr * mc).clamp(-1.0, 1.0)
        cv = torch.minimum(torch.maximum(cv, -bound), bound)
        vr = vr + self.floor[0]
        vc = vc + self.floor[1]
        if self.covariance == "diag":
            cv = torch.zeros_like(cv)
        elif self.covariance == "spherical":
            vr = vc = 0.5 * (vr + vc)
            cv = torch.zeros_like(cv)
        cov = torch.stack([torch.stack([vr, cv], -1), torch.stack([cv, vc], -1)], -2)
        weights = torch.where(alive, nk, torch.zeros_like(nk))
        weights = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
        means = torch.where(alive[..., None], mean, prev_means)
        covs = torch.where(alive[..., None, None], cov, prev_covs)
        return weights, means, covs


def _log_weights(weights: torch.Tensor) -> torch.Tensor:
    return torch.where(
        weights > 0, weights.clamp_min(1e-300).log(), torch.full_like(weights, _DEAD_LOG_WEIGHT)
    )


def _argmax_components(scores: torch.Tensor) -> torch.Tensor:
    """(B, K) index of the best of J components (first on ties); torch's argmax over a short middle dim is slow."""
    best = scores[:, 0]
    idx = torch.zeros(best.shape, dtype=torch.int64, device=scores.device)
    for j in range(1, scores.shape[1]):
        sj = scores[:, j]
        idx.masked_fill_(sj > best, j)
        best = torch.maximum(best, sj)
    return idx


def _tiles(k: int, b: int, j: int, device: torch.device) -> list[slice]:
    """Pixel tiles so that one (B, J, tile) tensor stays cache-sized on CPU: about 2x faster than one pass."""
    budget = 1 << 19 if device.type == "cpu" else 1 << 25
    t = max(1024, budget // max(b * j, 1))
    return [slice(s, min(s + t, k)) for s in range(0, k, t)]


def _e_step(
    coef: torch.Tensor, feats: torch.Tensor, p: torch.Tensor, ref: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted responsibilities q = p_i * r_ij (B, J, K) and the weighted log-likelihood sum (B,).

    ``ref`` (B,) names a live component per image: log f(x) = log(w_ref N_ref(x)) - log r_ref(x) is exact
    and finite there, which saves a separate log-sum-exp pass over (B, J, K).
    """
    logp = _scores(coef, feats)
    logr = torch.log_softmax(logp, dim=1)
    idx = ref.view(-1, 1, 1).expand(-1, 1, logp.shape[2])
    lse = (logp.gather(1, idx) - logr.gather(1, idx)).squeeze(1)
    del logp
    ll = (lse * p).sum(dim=1)
    q = logr.exp_().mul_(p.unsqueeze(1))
    return q, ll


def _em_pass(
    coef: torch.Tensor, feats: torch.Tensor, p: torch.Tensor, ref: torch.Tensor, pdtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """E-step plus M-step sufficient statistics, tile by tile: (B, J, 6) sums and (B,) log-likelihood."""
    b, j, _ = coef.shape
    stats = torch.zeros(b, j, 6, dtype=pdtype, device=coef.device)
    ll = torch.zeros(b, dtype=pdtype, device=coef.device)
    for sl in _tiles(p.shape[1], b, j, coef.device):
        f = feats[..., sl]
        q, part = _e_step(coef, f, p[:, sl], ref)
        stats += _stats(q, f).to(pdtype)
        ll += part.to(pdtype)
    return stats, ll


def _kmeans_pass(
    centres: torch.Tensor, feats: torch.Tensor, p: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-centre labels (B, K) and the statistics (B, J, 6) of that hard, p-weighted assignment."""
    b, j, _ = centres.shape
    coef = _kmeans_coef(centres, dtype)
    labels = torch.empty(p.shape, dtype=torch.int64, device=p.device)
    stats = torch.zeros(b, j, 6, dtype=centres.dtype, device=p.device)
    for sl in _tiles(p.shape[1], b, j, p.device):
        f = feats[..., sl]
        lab = _argmax_components(_scores(coef, f))
        labels[:, sl] = lab
        q = torch.zeros(b, j, lab.shape[1], dtype=dtype, device=p.device)
        q.scatter_(1, lab.unsqueeze(1), p[:, sl].unsqueeze(1))
        stats += _stats(q, f).to(centres.dtype)
    return labels, stats


def _label_pass(
    coef: torch.Tensor, feats: torch.Tensor, p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Most responsible component per pixel (B, M) and the weighted log-likelihood (B,); component 0 is live."""
    b, j, _ = coef.shape
    labels = torch.empty(p.shape, dtype=torch.int64, device=p.device)
    ll = torch.zeros(b, dtype=torch.float64 if p.dtype == torch.float64 else torch.float32, device=p.device)
    for sl in _tiles(p.shape[1], b, j, p.device):
        logp = _scores(coef, feats[..., sl])
        labels[:, sl] = _argmax_components(logp)
        ll += ((logp[:, 0] - torch.log_softmax(logp, dim=1)[:, 0]) * p[:, sl]).sum(dim=1)
    return labels, ll


def _kmeans_pp(
    p: torch.Tensor, feats: torch.Tensor, n: int, uniforms: torch.Tensor, pdtype: torch.dtype
) -> torch.Tensor:
    """(B, J, 2) weighted k-means++ seeds: draw j uses the shared uniform u_j by inverse-CDF sampling."""
    b, _ = p.shape
    r = feats[..., 3, :]
    c = feats[..., 4, :]
    d2 = None
    centres = []
    for j in range(n):
        if d2 is None:
            w = p
        else:
            w = p * d2
            w = torch.where(w.sum(dim=1, keepdim=True) > 0, w, p)
        cdf = torch.cumsum(w, dim=1)
        target = uniforms[j].to(cdf.dtype) * cdf[:, -1:]
        idx = torch.searchsorted(cdf, target.contiguous(), right=True).clamp_max(cdf.shape[1] - 1)
        cr = (r.expand(b, -1) if r.dim() == 1 else r).gather(1, idx)
        cc = (c.expand(b, -1) if c.dim() == 1 else c).gather(1, idx)
        centres.append(torch.cat([cr, cc], dim=1))
        dist = (r - cr) ** 2 + (c - cc) ** 2
        d2 = dist if d2 is None else torch.minimum(d2, dist)
    return torch.stack(centres, dim=1).to(pdtype)


class _ActiveSet:
    """Images of a chunk that are still iterating, and their per-image pixel tensors.

    Finished images stop being updated at once, but are dropped from the (large) pixel tensors only when a
    quarter of the rows are idle: a few big copies per fit instead of one per finished image.
    """

    def __init__(self, b: int, device: torch.device, **tensors: torch.Tensor) -> None:
        self.rows = torch.arange(b, device=device)  # chunk index of each compacted row
        self.live = torch.ones(b, dtype=torch.bool, device=device)
        self.n_live = b
        self.tensors = tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self.tensors[name] = value

    def retire(self, done: torch.Tensor) -> bool:
        """Mark live rows (``done`` is aligned with them) as finished; False once none is left."""
        n_done = int(done.sum())
        if n_done == 0:
            return True
        live_idx = torch.nonzero(self.live).squeeze(1)
        self.live[live_idx[done]] = False
        self.n_live -= n_done
        if self.n_live == 0:
            return False
        if self.n_live <= 0.75 * len(self.rows):
            keep = self.live
            self.rows = self.rows[keep]
            for name, t in self.tensors.items():
                # the features are shared by all images (6, K) unless gathered per image (B, 6, K)
                if name != "feats" or t.dim() == 3:
                    self.tensors[name] = t[keep]
            self.live = torch.ones(len(self.rows), dtype=torch.bool, device=keep.device)
        return True


def _fit_chunk(att: torch.Tensor, st: SegmentSettings, state: TaskState | None = None) -> SegmentationResult:
    """Fit one chunk of (B, H, W) maps with one set of batched tensor ops."""
    b, h, w = att.shape
    m = h * w
    j = st.n_components
    dev = att.device
    dtype = _work_dtype(att)
    pdtype = _param_dtype(dev)
    p, fallback = _evidence_mass(evidence_map(att.to(dtype), st.evidence).reshape(b, m))
    feats_all, scale = _grid(h, w, dtype, dev)

    floor = torch.full((2,), float(st.reg_covar), dtype=torch.float64)
    if st.pixel_cell_variance:
        floor = floor + (1.0 / scale) ** 2 / 12.0
    floor = floor.to(device=dev, dtype=pdtype)
    model = _Model(floor, st.covariance, alive_threshold=torch.finfo(dtype).tiny * 1e6)

    # EM sees only pixels carrying evidence, padded to a common K with zero weight (fixed shapes)
    k = int((p > 0).sum(dim=1).max())
    if k <= 0.75 * m:
        order = torch.sort((p > 0).to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :k]
        p_fit = p.gather(1, order)
        feats = feats_all[:, order].permute(1, 0, 2).contiguous()  # (B, 6, K)
    else:
        p_fit, feats = p, feats_all

    # -- initialisation: weighted k-means++ seeds, Lloyd refinement, M-step from the hard assignment --------
    gen = torch.Generator().manual_seed(int(st.seed))
    uniforms = torch.rand(j, generator=gen, dtype=torch.float64).to(dev)
    centres = _kmeans_pp(p_fit, feats, j, uniforms, pdtype)
    labels, stats = _kmeans_pass(centres, feats, p_fit, dtype)
    act = _ActiveSet(b, dev, p=p_fit, feats=feats, labels=labels)
    for _ in range(int(st.kmeans_iter)):
        rows, live = act.rows, act.live
        s_a = stats[rows]
        nk = s_a[..., 5]
        alive = nk > model.alive_threshold
        safe = torch.where(alive, nk, torch.ones_like(nk))
        c_a = torch.where(alive[..., None], s_a[..., 3:5] / safe[..., None], centres[rows]).clamp(-0.5, 0.5)
        new, s_a = _kmeans_pass(c_a, act["feats"], act["p"], dtype)
        upd = rows[live]
        centres[upd], stats[upd] = c_a[live], s_a[live]
        # an image whose assignment no longer changes sits at a fixed point of Lloyd's iteration
        stable = (new == act["labels"]).all(dim=1)[live]
        act["labels"] = new
        if not act.retire(stable):
            break
    del act, labels
    init_covs = torch.diag_embed(floor).expand(b, j, 2, 2)
    weights, means, covs = model.m_step(stats, centres, init_covs)

    # -- EM with per-image convergence: converged images stop changing and leave the pixel tensors ------
    n_iter = torch.zeros(b, dtype=torch.int64, device=dev)
    prev_ll = torch.full((b,), -math.inf, dtype=pdtype, device=dev)
    act = _ActiveSet(b, dev, p=p_fit, feats=feats)
    for it in range(1, int(st.max_iter) + 1):
        if state is not None:
            state.check()
        rows, live = act.rows, act.live
        w_a, m_a, c_a = weights[rows], means[rows], covs[rows]
        coef = _gauss_coef(_log_weights(w_a), m_a, c_a, dtype)
        stats, ll = _em_pass(coef, act["feats"], act["p"], w_a.argmax(dim=1), pdtype)
        w_a, m_a, c_a = model.m_step(stats, m_a, c_a)
        upd = rows[live]
        weights[upd], means[upd], covs[upd] = w_a[live], m_a[live], c_a[live]
        change = ll[live] - prev_ll[upd]
        prev_ll[upd] = ll[live]
        n_iter[upd] = it
        if not act.retire(change.abs() < st.tol):
            break
    del act

    # -- order by evidence, then label every pixel once ----------------------------------------------------
    order = torch.sort(weights, dim=1, descending=True, stable=True).indices
    weights = weights.gather(1, order)
    means = means.gather(1, order[..., None].expand(-1, -1, 2))
    covs = covs.gather(1, order[..., None, None].expand(-1, -1, 2, 2))
    seg, ll = _label_pass(_gauss_coef(_log_weights(weights), means, covs, dtype), feats_all, p)
    evidence = torch.zeros(b, j, dtype=dtype, device=dev).scatter_add_(1, seg, p)

    scale_d = scale.to(device=dev, dtype=pdtype)
    return SegmentationResult(
        labels=seg.reshape(b, h, w),
        weights=weights.to(dtype),
        means=((means + 0.5) * scale_d).to(dtype),
        covariances=(covs * scale_d[:, None] * scale_d[None, :]).to(dtype),
        evidence=evidence,
        n_iter=n_iter,
        log_likelihood=ll,
        fallback=fallback,
    )


def _as_batch(attributions: torch.Tensor) -> torch.Tensor:
    if not isinstance(attributions, torch.Tensor):
        raise ValueError(f"attributions must be a torch.Tensor, got {type(attributions).__name__}.")
    if attributions.dim() == 2:
        attributions = attributions.unsqueeze(0)
    if attributions.dim() != 3:
        raise ValueError(
            f"attributions must be (B, H, W) or (H, W) (summed over colour channels), got shape "
            f"{tuple(attributions.shape)}."
        )
    if attributions.shape[1] < 1 or attributions.shape[2] < 1:
        raise ValueError(
            f"attribution maps must have at least one pixel, got shape {tuple(attributions.shape)}."
        )
    if attributions.is_complex():
        raise ValueError("attributions must be real-valued.")
    return attributions


def _empty(att: torch.Tensor, j: int) -> SegmentationResult:
    _, h, w = att.shape
    dev, dt = att.device, _work_dtype(att)
    return SegmentationResult(
        labels=torch.zeros(0, h, w, dtype=torch.int64, device=dev),
        weights=torch.zeros(0, j, dtype=dt, device=dev),
        means=torch.zeros(0, j, 2, dtype=dt, device=dev),
        covariances=torch.zeros(0, j, 2, 2, dtype=dt, device=dev),
        evidence=torch.zeros(0, j, dtype=dt, device=dev),
        n_iter=torch.zeros(0, dtype=torch.int64, device=dev),
        log_likelihood=torch.zeros(0, dtype=dt, device=dev),
        fallback=torch.zeros(0, dtype=torch.bool, device=dev),
    )


def _concat(parts: list[SegmentationResult]) -> SegmentationResult:
    if len(parts) == 1:
        return parts[0]
    fields = SegmentationResult.__dataclass_fields__
    return SegmentationResult(**{f: torch.cat([getattr(r, f) for r in parts]) for f in fields})


def ppeps_wgm(
    attributions: torch.Tensor,
    settings: SegmentSettings | None = None,
    state: TaskState | None = None,
    batch_size: int = 64,
) -> SegmentationResult:
    """Segment each attribution map where its positive evidence lies, in batched chunks of images.

    ``attributions`` is (B, H, W) or (H, W) (a 2-D map gives a result with B = 1), float32 or float64 (other
    types are computed in float32), on CPU or CUDA; the fit runs on that device. Progress and cancellation
    go through ``state`` once per chunk of ``batch_size`` images (and cancellation also between EM steps).
    """
    st = settings if settings is not None else SegmentSettings()
    st.validate()
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    att = _as_batch(attributions)
    state = ensure_state(state)
    n = att.shape[0]
    if n == 0:
        return _empty(att, st.n_components)
    with (
        torch.no_grad()
    ):  # on GPU out-of-memory the chunk is halved, finished chunks kept (core/runtime/memory.py)
        parts = run_batched(
            lambda a, b: _fit_chunk(att[a:b], st, state),
            n,
            int(batch_size),
            state,
            what="segmenting attribution maps",
            progress_message=lambda done, n: f"Segmented {done}/{n} attribution maps",
        )
    return _concat(parts)


def ppeps_wgm_single(
    attribution: torch.Tensor, settings: SegmentSettings | None = None
) -> SegmentationResult:
    """Reference one-image fit (the B = 1 path of the batched code); the benchmark loops over it."""
    st = settings if settings is not None else SegmentSettings()
    st.validate()
    att = _as_batch(attribution)
    if att.shape[0] != 1:
        raise ValueError(
            f"ppeps_wgm_single takes one map, (H, W) or (1, H, W); got shape {tuple(att.shape)}."
        )
    with torch.no_grad():
        return _fit_chunk(att, st)
