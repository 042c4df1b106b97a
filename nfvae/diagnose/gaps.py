"""Amortization and approximation gaps (Cremer, Li & Duvenaud 2018), opt-in.

For a few validation images, q is optimised per example: mu, log sigma of q0 and the
flow's context (so the flow's amortized parameters too) start at the encoder's output
and follow Adam on the ELBO for ``steps`` steps, with the decoder fixed. Then, in nats
per example,

    approximation gap = log p(x) - ELBO(q*),      amortization gap = ELBO(q*) - ELBO(q_enc),

with log p(x) the tighter of the importance-sampled estimates under q_enc and q*. A large
amortization gap says a better encoder (or more training) would help; a large
approximation gap says a more flexible posterior (a better flow) would. Cost: ``steps``
forward and backward passes of ``num_samples`` draws per image, plus two importance
samplings; about 20 s for 32 digits images and 300 steps on one CPU core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nfvae.diagnose.findings import Finding
from nfvae.model import FlowVAE


@dataclass
class Gaps:
    neg_elbo_amortized: float
    neg_elbo_optimized: float
    nll: float

    @property
    def amortization(self) -> float:
        return self.neg_elbo_amortized - self.neg_elbo_optimized

    @property
    def approximation(self) -> float:
        return self.neg_elbo_optimized - self.nll


def _neg_elbo(model: FlowVAE, x: Tensor, posterior: tuple[Tensor, Tensor, Tensor],
              eps: Tensor) -> Tensor:
    return -model.terms_given_posterior(x, *posterior, eps=eps).log_weight.mean(0)  # (B,)


def _nll(model: FlowVAE, x: Tensor, posterior, num_samples: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(num_samples, *posterior[0].shape, generator=generator).to(x)
    log_w = model.terms_given_posterior(x, *posterior, eps=eps).log_weight
    return -(torch.logsumexp(log_w, 0) - math.log(num_samples))


def inference_gaps(model: FlowVAE, x: Tensor, steps: int = 300, lr: float = 1e-2,
                   num_samples: int = 16, is_samples: int = 1000, seed: int = 0) -> Gaps:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            encoded = tuple(t.detach() for t in model.encode(x))
        optimized = tuple(t.clone().requires_grad_(True) for t in encoded)
        optimizer = torch.optim.Adam(optimized, lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            eps = torch.randn(num_samples, *encoded[0].shape, generator=generator).to(x)
            loss = _neg_elbo(model, x, optimized, eps).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            eps = torch.randn(is_samples, *encoded[0].shape,
                              generator=torch.Generator().manual_seed(seed + 1)).to(x)
            amortized = _neg_elbo(model, x, encoded, eps)
            best = _neg_elbo(model, x, tuple(t.detach() for t in optimized), eps)
            nll = torch.minimum(_nll(model, x, encoded, is_samples, seed + 2),
                                _nll(model, x, tuple(t.detach() for t in optimized),
                                     is_samples, seed + 2))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return Gaps(float(amortized.mean()), float(best.mean()), float(nll.mean()))


def gap_findings(gaps: Gaps) -> list[Finding]:
    larger = "amortization" if gaps.amortization > gaps.approximation else "approximation"
    advice = {"amortization": "a larger encoder, longer training, or a flow with amortized "
                              "parameters: per-example optimisation of q gains more than a "
                              "richer q family would",
              "approximation": "a more flexible posterior: more flow layers or a richer "
                               "family (flow=sylvester_orthogonal, iaf)"}[larger]
    return [Finding(
        check="inference_gaps", severity="ok",
        summary=f"-ELBO {gaps.neg_elbo_amortized:.2f} with the encoder's q, "
                f"{gaps.neg_elbo_optimized:.2f} with q optimised per example, NLL "
                f"{gaps.nll:.2f}: amortization gap {gaps.amortization:.2f}, approximation gap "
                f"{gaps.approximation:.2f} nats; the {larger} gap is larger, so try "
                + advice,
        value=max(gaps.amortization, gaps.approximation), threshold=0.0,
        figure="TensorBoard SCALARS: zz_diagnose/amortization_gap, "
               "zz_diagnose/approximation_gap")]
