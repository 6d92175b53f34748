"""Run-to-run variability from stored test logits: SDs, pairwise diversity, ensemble gain, CKA (seed 002 §5).

Inputs are R models' logits on the same examples, ``[R, N, C]``, and the labels ``[N]``. Pairwise
metrics are computed as R × R matrices with matrix products (one Python iteration per model at
most, never one per pair): R = 100 is 4,950 pairs. Error bars follow the authors' code where the
seed defines them (the SDs: bootstrap) and are a jackknife over models for the pairwise means,
which the seed prints without error bars. Everything in float64 except the bulk logit arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("acc_sd", "loss_sd", "disagreement", "spearman", "ensemble_delta")
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 1  # the authors' np.random.seed(1)
_BOOTSTRAP_CHUNK = 4_000_000  # resampled values held at once (32 MB of float64)
_PAIR_BLOCK = 16  # partners summed at once in the ensemble pass (16 × C × N float32: 6.4 MB at CIFAR-10 size)


@dataclass(frozen=True)
class Value:
    """A metric and its error bar (NaN where it is undefined, e.g. one model)."""

    value: float
    error: float


# ---- per-model scores and their SD -------------------------------------------------------------

def check_logits(logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """``logits`` as a float array [R, N, C] of finite values; one clear ValueError otherwise."""
    logits = np.asarray(logits)
    if logits.ndim != 3 or logits.shape[1] == 0 or logits.shape[2] < 2:
        raise ValueError(f"logits must be [models, examples, classes ≥ 2]; got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("logits hold NaN or infinite values (a diverged run): leave that run out")
    if labels is not None and np.shape(labels) != logits.shape[1:2]:
        raise ValueError(f"labels must be [{logits.shape[1]}] to match the logits; got shape {np.shape(labels)}")
    return logits


def accuracy_percent(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each model's accuracy in %: 100 · mean_n [argmax_c z_nc = y_n]; shape [R]."""
    return 100.0 * (logits.argmax(-1) == labels).mean(-1)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each model's mean test cross-entropy: mean_n logsumexp(z_n) − z_n,y_n (float64); shape [R]."""
    z = logits.astype(np.float64)
    top = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(z, labels[None, :, None].astype(np.intp), -1)[..., 0]
    return (lse - picked).mean(-1)


def sd(values: np.ndarray) -> float:
    """SD over runs with ddof = 0 (``np.std``, as the authors' code); 0 for one run.

    Taken about the first value (the same SD), so identical values give exactly 0, not a rounding residue.
    """
    values = np.asarray(values, dtype=np.float64)
    return float(np.std(values - values[:1])) if len(values) else float("nan")


def bootstrap_sd_error(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> float:
    """The SD (ddof 0) of the SD over ``resamples`` resamples of the R values with replacement.

    Table 5.1's "standard deviation of each standard deviation" (authors' code: 10,000 resamples,
    seed 1). NaN for fewer than 2 values. Deterministic for a seed (numpy's PCG64).
    """
    values = np.asarray(values, dtype=np.float64)
    r = len(values)
    if r < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _BOOTSTRAP_CHUNK // r)
    sds = np.concatenate([
        values[rng.integers(0, r, size=(min(per_chunk, resamples - start), r))].std(axis=1)
        for start in range(0, resamples, per_chunk)])
    return float(sds.std())


# ---- pairwise matrices (R × R, symmetric; the diagonal is not used) -----------------------------

def pair_disagreement(logits: np.ndarray) -> np.ndarray:
    """% of examples on which models i and j predict different classes (argmax), for every pair.

    One vectorised comparison per model i against all j > i (R passes over [R, N] class indices).
    """
    r, n, _ = logits.shape
    predicted = logits.argmax(-1)
    out = np.zeros((r, r))
    for i in range(r - 1):
        out[i, i + 1:] = out[i + 1:, i] = 100.0 * (predicted[i] != predicted[i + 1:]).mean(-1)
    return out


def average_ranks(values: np.ndarray, block: int = 8) -> np.ndarray:
    """Ranks along the last axis of a 2-D array, ties sharing their average rank (scipy's ``rankdata``), float64.

    One argsort per row (unstable, ~5× faster: the order inside a tie group does not matter); a row
    without ties gets 1..n scattered back, a row with ties the mean position of each run of equal
    sorted values. Rows go ``block`` at a time, so the temporaries stay in cache.
    """
    rows, n = values.shape
    ranks = np.empty((rows, n))
    positions = np.arange(1.0, n + 1.0)
    for start in range(0, rows, block):
        chunk = values[start:start + block]
        order = np.argsort(chunk, axis=1)
        ordered = np.take_along_axis(chunk, order, axis=1)
        tied = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        for k, row_order in enumerate(order):
            ranks[start + k, row_order] = _tied_positions(ordered[k]) if tied[k] else positions
    return ranks


def _tied_positions(ordered: np.ndarray) -> np.ndarray:
    """For sorted values, each position's rank (1-based) averaged over its run of equal values."""
    starts = np.ones(len(ordered), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = np.flatnonzero(starts)
    last = np.append(first[1:], len(ordered)) - 1
    return ((first + last) / 2.0 + 1.0)[np.cumsum(starts) - 1]


def pair_spearman(logits: np.ndarray) -> np.ndarray:
    """Spearman's ρ between the flattened logits (length N·C) of models i and j, for every pair.

    ρ is Pearson's correlation of the ranks (average ranks on ties, float64): one matrix product of the
    centred, unit-norm rank vectors. Without ties it is the authors' 1 − 6Σd²/(n(n² − 1)).
    """
    ranks = average_ranks(logits.reshape(len(logits), -1))
    ranks -= ranks.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ranks, axis=1)
    unit = ranks / np.where(norms > 0, norms, 1.0)[:, None]
    return unit @ unit.T


def pair_ensemble_accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy (%) of the two-model ensemble ½(z_i + z_j) (averaged logits), for every pair.

    The halving does not change the argmax. The pair is right on an example when its true-class sum
    beats the largest other-class sum: the true class is masked to −∞ in a copy of the logits laid out
    [R, C, N] (so the max over classes runs over contiguous rows), and partners are summed a block at
    a time into one reused buffer. A tie at the maximum is resolved as ``argmax`` does (first class).
    """
    r, n, c = logits.shape
    columns = np.arange(n)
    true = logits[:, columns, labels]  # [R, N]
    masked = np.ascontiguousarray(logits.transpose(0, 2, 1))
    masked[:, labels, columns] = -np.inf
    buffer = np.empty((_PAIR_BLOCK, c, n), dtype=masked.dtype)
    out = np.zeros((r, r))
    for i in range(r - 1):
        for j in range(i + 1, r, _PAIR_BLOCK):
            m = min(_PAIR_BLOCK, r - j)
            others = np.add(masked[i], masked[j:j + m], out=buffer[:m]).max(axis=1)
            summed_true = true[i] + true[j:j + m]  # the same float32 sums as in z_i + z_j
            hits = summed_true > others
            tied = np.nonzero(summed_true == others)
            if len(tied[0]):  # the true class shares the maximum: argmax takes the first such class
                pairs = logits[i, tied[1]] + logits[j + tied[0], tied[1]]
                hits[tied] = pairs.argmax(-1) == labels[tied[1]]
            out[i, j:j + m] = out[j:j + m, i] = 100.0 * hits.mean(-1)
    return out


def pair_ensemble_delta(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Eq. 5.1's term per pair: acc(½(z_i + z_j)) − ½(acc(z_i) + acc(z_j)), in percentage points."""
    acc = accuracy_percent(logits, labels)
    return pair_ensemble_accuracy(logits, labels) - 0.5 * (acc[:, None] + acc[None, :])


def mean_over_pairs(matrix: np.ndarray) -> float:
    """(1 / C(R,2)) Σ_{i<j} M_ij of a symmetric R × R matrix; NaN for R < 2."""
    r = len(matrix)
    if r < 2:
        return float("nan")
    return float(matrix[np.triu_indices(r, 1)].mean())


def jackknife_pair_error(matrix: np.ndarray) -> float:
    """Jackknife standard error over models of the mean over pairs; NaN for R < 3.

    θ₍ₖ₎ = (S − Σ_{j≠k} M_kj) / C(R−1, 2) leaves model k out of S = Σ_{i<j} M_ij;
    SE² = (R−1)/R · Σ_k (θ₍ₖ₎ − mean θ₍·₎)² (Efron & Stein 1981; all O(R²)).
    """
    r = len(matrix)
    if r < 3:
        return float("nan")
    upper = np.triu(matrix, 1)
    total = upper.sum()
    rows = upper.sum(0) + upper.sum(1)
    left_out = (total - rows) / ((r - 1) * (r - 2) / 2)
    return float(np.sqrt((r - 1) / r * ((left_out - left_out.mean()) ** 2).sum()))


def _pair_value(matrix: np.ndarray) -> Value:
    return Value(mean_over_pairs(matrix), jackknife_pair_error(matrix))


# ---- the five metrics of Tables 5.1/5.5/B.1 -------------------------------------------------------

def variability(logits: np.ndarray, labels: np.ndarray | None, resamples: int = BOOTSTRAP_RESAMPLES,
                seed: int = BOOTSTRAP_SEED) -> dict[str, Value]:
    """Accuracy SD (%), CE SD, mean pairwise disagreement (%), Spearman ρ and ensemble Δ (%) over R models.

    SDs: ddof 0 ± bootstrap SD of the SD. Pairwise means (Eq. 5.1 for Δ) ± jackknife over models;
    NaN where undefined (pairs need R ≥ 2, their error bars R ≥ 3; without labels, the three
    metrics that need them).
    """
    logits = check_logits(logits, labels)
    out = {"disagreement": _pair_value(pair_disagreement(logits)), "spearman": _pair_value(pair_spearman(logits))}
    if labels is None:
        return {**dict.fromkeys(("acc_sd", "loss_sd", "ensemble_delta"), Value(np.nan, np.nan)), **out}
    labels = np.asarray(labels)
    acc, loss = accuracy_percent(logits, labels), cross_entropy(logits, labels)
    return {
        "acc_sd": Value(sd(acc), bootstrap_sd_error(acc, resamples, seed)),
        "loss_sd": Value(sd(loss), bootstrap_sd_error(loss, resamples, seed)),
        **out,
        "ensemble_delta": _pair_value(pair_ensemble_delta(logits, labels)),
    }


def variability_reduction(method: dict[str, float], baseline: dict[str, float]) -> float:
    """Variability reduction (%) of a method against a baseline (Table 5.5's last column, seed002.md §5.1).

    VR = 100 · mean{1 − SD_acc/SD_acc⁰, 1 − SD_CE/SD_CE⁰, 1 − dis/dis⁰, 1 − (1 − ρ)/(1 − ρ⁰), 1 − Δ/Δ⁰}:
    the correlation enters as 1 − ρ (lower is less diverse).
    """
    ratios = [method[k] / baseline[k] for k in ("acc_sd", "loss_sd", "disagreement", "ensemble_delta")]
    ratios.append((1.0 - method["spearman"]) / (1.0 - baseline["spearman"]))
    return float(100.0 * np.mean([1.0 - q for q in ratios]))


# ---- linear CKA (Kornblith et al. 2019) -------------------------------------------------------------

def _centered_grams(features: list[np.ndarray]) -> np.ndarray:
    """Gram matrices X_c X_cᵀ of column-centred features, [R, n, n] float64 (equals H K H, K = X Xᵀ)."""
    n = {len(f) for f in features}
    if len(n) != 1:
        raise ValueError(f"CKA compares the same examples: got {sorted(n)} rows")
    grams = []
    for f in features:
        x = np.asarray(f, dtype=np.float64).reshape(len(f), -1)
        x = x - x.mean(axis=0)
        grams.append(x @ x.T)
    return np.stack(grams)


def _hsic_matrix(grams: np.ndarray, debiased: bool) -> np.ndarray:
    """HSIC (up to a common factor) between every pair of Gram matrices, [R, R].

    Biased: ⟨HKH, HLH⟩_F. Debiased: Song et al. (2012) eq. 5, with K̃ = K, diagonal zeroed:
    [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)).
    """
    r, n, _ = grams.shape
    if not debiased:
        flat = grams.reshape(r, -1)
        return flat @ flat.T
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 examples; got {n}")
    zeroed = grams.copy()
    zeroed[:, np.arange(n), np.arange(n)] = 0.0
    flat = zeroed.reshape(r, -1)
    row_sums = zeroed.sum(axis=2)
    totals = row_sums.sum(axis=1)
    return (flat @ flat.T + np.outer(totals, totals) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (row_sums @ row_sums.T)) / (n * (n - 3))


def cka_matrix(features: list[np.ndarray], debiased: bool = False) -> np.ndarray:
    """Linear CKA between every pair of representations of the same n examples, [R, R].

    CKA(K, L) = HSIC(K, L) / √(HSIC(K, K) · HSIC(L, L)) with K = X Xᵀ (Kornblith et al. 2019, eq. 3);
    each X is [n, ...] (flattened per example). Costs R·n² float64 for the Gram matrices.
    """
    hsic = _hsic_matrix(_centered_grams(features), debiased)
    scale = np.sqrt(np.clip(np.diag(hsic), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return hsic / np.outer(scale, scale)


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA between two representations [n, p] and [n, q] of the same examples (Kornblith et al. 2019)."""
    return float(cka_matrix([x, y], debiased)[0, 1])
