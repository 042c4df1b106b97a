"""FlowVAE: encoder -> q0(z0|x) -> flow -> zK -> decoder, with prior p(zK).

It returns the ingredients of the ELBO (``ELBOTerms``), not a loss; the
objectives in ``nfvae.objectives`` turn them into one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nfvae.distributions import StandardNormal, standard_normal_log_prob
from nfvae.flows import FlowSequence
from nfvae.likelihoods import Likelihood


def _at_least_float32(t: Tensor) -> Tensor:
    """float16/bfloat16 (autocast outputs) -> float32; float32 and float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _full_precision(device_type: str):
    """Switch autocast off where it is on: the flow's log-dets and the log-densities
    lose too much in bfloat16 (8 bits of mantissa) for an objective of ~1e2 nats."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return nullcontext()


@dataclass
class ELBOTerms:
    """Per-sample, per-example terms; S = number of posterior samples.

    log_px, log_pz, log_q0, sum_log_det: (S, B); z0, zK: (S, B, D);
    mu, log_sigma, context: (B, ...); decoder_params: (S, B, P, *data_shape).
    """

    log_px: Tensor
    log_pz: Tensor
    log_q0: Tensor
    sum_log_det: Tensor
    z0: Tensor
    zK: Tensor
    mu: Tensor
    log_sigma: Tensor
    decoder_params: Tensor

    @property
    def log_qK(self) -> Tensor:
        """log qK(zK|x) = log q0(z0|x) - sum_k log|det J_k| (change of variables)."""
        return self.log_q0 - self.sum_log_det

    @property
    def kl(self) -> Tensor:
        """Single-sample KL estimate log qK(zK|x) - log p(zK)."""
        return self.log_qK - self.log_pz

    @property
    def log_weight(self) -> Tensor:
        """Importance weight log p(x, zK) - log qK(zK|x); its mean is the ELBO."""
        return self.log_px + self.log_pz - self.log_qK


class FlowVAE(nn.Module):
    """A VAE whose diagonal-Gaussian posterior q0 is refined by a flow.

    ``prior(dim=latent_dim)`` builds p(zK) (``nfvae.priors``: the standard normal, the
    default, or a flow over it); it offers ``log_prob``, ``sample`` and ``push``.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        encoder: Callable[..., nn.Module],
        decoder: Callable[..., nn.Module],
        flow: Callable[..., FlowSequence],
        likelihood: Likelihood,
        prior: Callable[..., nn.Module] | None = None,
    ):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"model.latent_dim must be >= 1, got {latent_dim}")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.encoder = encoder(data_shape=self.data_shape)
        context_dim = self.encoder.out_dim
        self.to_mu = nn.Linear(context_dim, latent_dim)
        self.to_log_sigma = nn.Linear(context_dim, latent_dim)
        self.flow = flow(dim=latent_dim, context_dim=context_dim)
        self.decoder = decoder(
            latent_dim=latent_dim, data_shape=self.data_shape, num_params=likelihood.num_params
        )
        self.prior = StandardNormal(latent_dim) if prior is None else prior(dim=latent_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, *data_shape) -> mu (B, D), log_sigma (B, D), context (B, H)."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"expected x of shape (B, {', '.join(map(str, self.data_shape))}), "
                f"got {tuple(x.shape)}"
            )
        context = self.encoder(x)
        return self.to_mu(context), self.to_log_sigma(context), context

    def forward(self, x: Tensor, num_samples: int = 1, eps: Tensor | None = None) -> ELBOTerms:
        """``eps``: optional standard-normal noise (S, B, D) used instead of a fresh draw
        (fixed evaluation noise, ``nfvae.evaluation``); its S replaces ``num_samples``.

        Under autocast (``trainer.precision=bf16-mixed``) the encoder and decoder run in
        low precision, while q0, the flow with its log-dets and every log-density are
        computed in float32 (or the model's wider dtype).
        """
        mu, log_sigma, context = map(_at_least_float32, self.encode(x))
        return self.terms_given_posterior(x, mu, log_sigma, context, num_samples, eps)

    def terms_given_posterior(self, x: Tensor, mu: Tensor, log_sigma: Tensor, context: Tensor,
                              num_samples: int = 1, eps: Tensor | None = None) -> ELBOTerms:
        """``forward`` from given posterior parameters instead of the encoder's: mu,
        log_sigma (B, D) of q0 and the flow's context (B, H). Per-example optimisation
        of q (the amortization gap, ``nfvae.diagnose.gaps``) runs through here."""
        batch, dim = mu.shape
        if eps is None:
            eps = torch.randn(num_samples, batch, dim, dtype=mu.dtype, device=mu.device)
        else:
            if eps.dim() != 3 or tuple(eps.shape[1:]) != (batch, dim):
                raise ValueError(f"eps must have shape (S, {batch}, {dim}), got {tuple(eps.shape)}")
            num_samples = eps.shape[0]
            eps = eps.to(dtype=mu.dtype, device=mu.device)
        with _full_precision(mu.device.type):
            z0 = mu + log_sigma.exp() * eps  # reparameterization: gradients reach the encoder
            log_q0 = standard_normal_log_prob(eps) - log_sigma.sum(-1)
            # Sample-major rows (s*B + b); flows with context-only parameters compute
            # them once per data point, not once per sample.
            zK, sum_log_det = self.flow.forward_repeated(z0.reshape(-1, dim), context,
                                                         num_samples)
            log_pz = self.prior.log_prob(zK)
        decoder_params = _at_least_float32(self.decoder(zK))
        decoder_params = decoder_params.view(num_samples, batch, *decoder_params.shape[1:])
        zK = zK.view(num_samples, batch, dim)
        with _full_precision(mu.device.type):
            log_px = self.likelihood.log_prob(x, decoder_params, len(self.data_shape))
        return ELBOTerms(
            log_px=log_px,
            log_pz=log_pz.view(num_samples, batch),
            log_q0=log_q0,
            sum_log_det=sum_log_det.view(num_samples, batch),
            z0=z0,
            zK=zK,
            mu=mu,
            log_sigma=log_sigma,
            decoder_params=decoder_params,
        )

    @torch.no_grad()
    def sample(self, num_samples: int, noise: Tensor | None = None) -> Tensor:
        """Decode draws zK ~ p(zK); returns the likelihood's mean (N, *data_shape).

        ``noise``: the prior's base draws u (N, D) to use instead of fresh ones (fixed
        noise, so that figures compare across epochs); zK is the prior's image of u.
        """
        if noise is None:
            z = self.prior.sample(num_samples)
        else:
            if noise.dim() != 2 or noise.shape[1] != self.latent_dim:
                raise ValueError(f"noise must have shape (N, {self.latent_dim}), "
                                 f"got {tuple(noise.shape)}")
            z = self.prior.push(noise.to(self.to_mu.weight))[0]
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean of p(x|zK) for one posterior draw zK ~ qK(.|x); shape of x."""
        terms = self.forward(x, num_samples=1)
        return self.likelihood.mean(terms.decoder_params[0])
