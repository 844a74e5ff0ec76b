"""certlib.sparse.check: perturbed re-estimates of Sparsified SmoothGrad and their comparison with the certificate."""
import dataclasses

import torch

from certlib.sparse import check as sparse_check
from certlib.sparse import smoothgrad as S


def _attribute(xb):
    return xb.sum(1) * torch.linspace(0.5, 1.5, xb.shape[-1])      # a smooth, input-dependent map


def test_random_runs_use_the_same_noise_and_each_eps_once():
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = sparse_check.eps_values(0.5)
    assert eps == (0.05, 0.125, 0.25, 0.5)
    marks = []
    runs = sparse_check.random_runs(_attribute, x, 0.5, 20, (25.0,), 3, eps, directions=2,
                                    progress=lambda d, t, what: marks.append((d, t)))
    assert [(r.kind, r.eps) for r in runs] == [("random", e) for e in eps for _ in range(2)]
    assert marks[-1][0] == marks[-1][1]                             # the shared bar reaches its end
    base = S.sample_smoothgrad(_attribute, x, 0.5, 20, (25.0,), seed=3)
    zero = sparse_check.random_runs(_attribute, x, 0.5, 20, (25.0,), 3, [0.0])[0]
    assert (zero.samples.ones == base.ones).all()                   # ε = 0 with the same seed: the same draws


def test_overlap_checks_pair_each_point_with_the_certified_overlap():
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    base = S.sample_smoothgrad(_attribute, x, 0.5, 200, (25.0,), seed=0)
    runs = sparse_check.random_runs(_attribute, x, 0.5, 200, (25.0,), 0, [0.0, 0.05])
    cert = S.certify_topk(base, "sparsified", 25.0, 25.0, 0.05, 0.05)
    checks = sparse_check.overlap_checks(cert, base, runs, "σ = 0.5")
    assert [c.eps for c in checks] == [0.0, 0.05] and checks[0].empirical == 1.0     # identical draws at ε = 0
    for c, run in zip(checks, runs):
        assert c.certified == float(cert.paired_at([run.eps])[0]) and c.violates == (c.empirical < c.certified)
    assert sparse_check.violation_summary([dataclasses.replace(c, empirical=0.5, certified=0.75) for c in checks]) \
        .startswith("2 empirical overlap(s) fall below")
    assert sparse_check.violation_summary([dataclasses.replace(c, empirical=1.0) for c in checks]) is None
