"""How well a judge agrees with people, and whether that is enough to trust it.

On paired 1-5 scores (the judge's and a person's for the same trace):

- quadratic-weighted Cohen's kappa, the usual figure for an ordinal scale, with a BCa
  bootstrap interval that resamples items (scipy.stats.bootstrap, paired). Assumptions:
  items are independent draws from the population the labels stand for; the BCa interval
  is approximate for small n (the simulation in bench/judge_trust_eval.py measures its
  coverage);
- exact and within-one agreement (raw agreement overstates agreement on skewed scales, so
  it is shown beside kappa, never instead of it);
- Spearman's rank correlation (scipy.stats.spearmanr);
- the 5x5 confusion matrix (rows: person, columns: judge), the judge's mean bias
  (judge - person) and the largest disagreements.

The trust rule: *validated* when there are at least ``min_labels`` labels and the lower
bound of kappa's interval is at least ``bar``; otherwise *unvalidated*, with the reason.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

SCALE = np.arange(1, 6)
K = len(SCALE)
# Quadratic disagreement weights on 1..5: (i - j)^2 / (K - 1)^2.
_W = ((SCALE[:, None] - SCALE[None, :]) ** 2 / (K - 1) ** 2).astype(float)

MIN_LABELS = 50
KAPPA_BAR = 0.6
CONFIDENCE = 0.95
N_RESAMPLES = 2000


def weighted_kappa(a, b, axis: int = -1) -> np.ndarray | float:
    """Quadratic-weighted Cohen's kappa of two raters' 1-5 scores along ``axis``.

    1 - sum(w * observed) / sum(w * expected), expected from the two raters' marginals.
    Written here because scipy has no weighted kappa (scikit-learn's, which the tests
    compare against, is a test dependency only). Vectorised so that the bootstrap can
    evaluate thousands of resamples at once. NaN when it is undefined (both raters give one
    single score, so chance disagreement is zero).
    """
    a = np.moveaxis(np.asarray(a), axis, -1)
    b = np.moveaxis(np.asarray(b), axis, -1)
    oa = (a[..., None] == SCALE).astype(float)  # (..., n, K)
    ob = (b[..., None] == SCALE).astype(float)
    n = a.shape[-1]
    observed = np.einsum("...ni,...nj->...ij", oa, ob) / n
    expected = oa.mean(axis=-2)[..., :, None] * ob.mean(axis=-2)[..., None, :]
    num = (observed * _W).sum(axis=(-2, -1))
    den = (expected * _W).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(den > 0, 1.0 - num / np.where(den > 0, den, 1.0), np.nan)
    return float(kappa) if np.ndim(kappa) == 0 else kappa


def kappa_interval(
    judge, human, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """BCa bootstrap interval of the weighted kappa, resampling items (pairs stay together).

    (nan, nan) when kappa is undefined or there are fewer than 3 items.
    """
    judge = np.asarray(judge)
    human = np.asarray(human)
    if len(judge) < 3 or math.isnan(weighted_kappa(judge, human)):
        return (math.nan, math.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # Degenerate resamples (perfect agreement) are handled below, not warned about.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (judge, human),
            weighted_kappa,
            paired=True,
            vectorized=True,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isnan(low) or math.isnan(high):
        # BCa needs a defined kappa on every jackknife sample; fall back to percentiles.
        boot = res.bootstrap_distribution
        boot = boot[~np.isnan(boot)]
        if not len(boot):
            return (math.nan, math.nan)
        tail = (1 - confidence) / 2 * 100
        low, high = (float(x) for x in np.percentile(boot, [tail, 100 - tail]))
    return (low, high)


@dataclass
class Disagreement:
    item: str
    judge_score: int
    human_score: int


@dataclass
class Agreement:
    n: int
    kappa: float
    kappa_low: float
    kappa_high: float
    exact: float
    within_one: float
    spearman: float
    mean_bias: float  # judge - person
    confusion: list[list[int]]  # rows: person 1..5, columns: judge 1..5
    largest: list[Disagreement] = field(default_factory=list)

    def kappa_text(self) -> str:
        if math.isnan(self.kappa):
            return "κ undefined"
        if math.isnan(self.kappa_low):
            return f"κ {self.kappa:.2f} [no interval]"
        return f"κ {self.kappa:.2f} [{self.kappa_low:.2f}, {self.kappa_high:.2f}]"


def agreement(
    judge_scores,
    human_scores,
    items: list[str] | None = None,
    n_largest: int = 10,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Agreement:
    """Every agreement figure for paired scores (same order; ``items`` names the pairs)."""
    j = np.asarray(judge_scores, dtype=int)
    h = np.asarray(human_scores, dtype=int)
    if j.shape != h.shape or j.ndim != 1:
        raise ValueError("judge and human scores must be two lists of the same length")
    if len(j) and (not np.isin(j, SCALE).all() or not np.isin(h, SCALE).all()):
        raise ValueError("scores must be integers 1-5")
    n = len(j)
    if n == 0:
        nan = math.nan
        return Agreement(0, nan, nan, nan, nan, nan, nan, nan, [[0] * K for _ in range(K)])
    kappa = weighted_kappa(j, h)
    low, high = kappa_interval(j, h, n_resamples=n_resamples, seed=seed)
    diff = j - h
    if n >= 3 and len(set(j)) > 1 and len(set(h)) > 1:
        rho = float(stats.spearmanr(j, h).statistic)
    else:
        rho = math.nan  # a constant rater has no ranks to correlate
    confusion = np.zeros((K, K), dtype=int)
    np.add.at(confusion, (h - 1, j - 1), 1)
    names = items if items is not None else [str(i) for i in range(n)]
    order = sorted(range(n), key=lambda i: (-abs(int(diff[i])), names[i]))
    largest = [
        Disagreement(names[i], int(j[i]), int(h[i])) for i in order[:n_largest] if diff[i] != 0
    ]
    return Agreement(
        n=n,
        kappa=kappa,
        kappa_low=low,
        kappa_high=high,
        exact=float(np.mean(diff == 0)),
        within_one=float(np.mean(np.abs(diff) <= 1)),
        spearman=rho,
        mean_bias=float(np.mean(diff)),
        confusion=confusion.tolist(),
        largest=largest,
    )


@dataclass
class TrustStatus:
    judge_identity: str
    status: str  # 'validated' or 'unvalidated'
    reason: str
    n_labels: int
    kappa: float
    kappa_low: float
    kappa_high: float
    min_labels: int
    bar: float
    judge_changed_on: str | None = None  # the latest anchor run that found judge drift

    @property
    def validated(self) -> bool:
        return self.status == "validated"

    def line(self) -> str:
        """One line for reports and notifications."""
        return f"judge {self.judge_identity}: {self.status} ({self.reason})"

    def warning(self) -> str | None:
        """The prominent line a gate or A/B report leads with when the judge is unvalidated."""
        if self.validated:
            return None
        return (
            "WARNING: UNVALIDATED JUDGE: its scores in this report are not backed by "
            f"agreement with people ({self.reason}); the verdict is computed as usual"
        )


def trust_from(
    identity: str,
    result: Agreement,
    min_labels: int = MIN_LABELS,
    bar: float = KAPPA_BAR,
) -> TrustStatus:
    """Apply the trust rule to an agreement result."""
    figures = f"{result.n} labels; {result.kappa_text()}"
    used = [j + 1 for j in range(K) if any(row[j] for row in result.confusion)]
    if result.n and len(used) == 1:
        # Kappa is 0 by construction then, and every resample agrees: say why.
        figures += f"; the judge gave every labelled trace a {used[0]}"
    if result.n < min_labels:
        status, reason = "unvalidated", f"{figures}; needs {min_labels} labels"
    elif math.isnan(result.kappa_low):
        status, reason = "unvalidated", f"{figures}; no interval for κ"
    elif result.kappa_low < bar:
        status, reason = "unvalidated", f"{figures}; lower bound below {bar:g}"
    else:
        status, reason = "validated", f"{figures}; lower bound ≥ {bar:g}"
    return TrustStatus(
        identity,
        status,
        reason,
        result.n,
        result.kappa,
        result.kappa_low,
        result.kappa_high,
        min_labels,
        bar,
    )
