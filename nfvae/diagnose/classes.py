"""Dropped classes of an image model: the class histogram of its samples.

A small classifier (an MLP on the flattened images, or a linear one), trained once on
the training split less a held-out fifth and cached per dataset, labels
``num_samples`` model samples and the held-out images alike. The reference is the
classifier's histogram on the held-out images, not their true labels, so its own
confusions cancel out; and they are training images, prepared as the classifier saw
them (grey levels, where the validation split of a binarized dataset is binary, and a
model's samples are its likelihood's mean). A class whose share among the samples is
below ``class_mass_fraction`` of its share among the held-out images is missing; above
its inverse, over-represented.

Works for any ``sample(n) -> (n, *data_shape)`` in data space ([0, 1] images): a
flow-VAE's decoded prior draws, an image flow's ``sample(n, temperature)``.

The classifier is cached under ``NFVAE_CACHE_DIR`` (else ``$XDG_CACHE_HOME/nfvae``,
else ``~/.cache/nfvae``) in ``classifiers/<key>.pt``, the key a hash of the training
images and labels and of the classifier's settings: another dataset, split or
setting trains its own. Training costs ~2 s on the 8x8 digits and ~15 s on MNIST on
one CPU core (2000 Adam steps of 128 images).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from nfvae.cache import default_cache_dir
from nfvae.diagnose.findings import Finding
from nfvae.diagnose.thresholds import Thresholds

log = logging.getLogger(__name__)

#: The VAE's sample grid; other models name theirs (``class_findings(figure=...)``).
CLASS_FIGURES = "TensorBoard IMAGES: viz/images/samples"


@dataclass(frozen=True)
class ClassifierSettings:
    hidden: int = 256  # 0: a linear classifier
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    holdout: float = 0.2  # the fraction of the training split kept out as the reference


def _build(num_inputs: int, num_classes: int, settings: ClassifierSettings) -> nn.Module:
    if settings.hidden <= 0:
        return nn.Sequential(nn.Flatten(), nn.Linear(num_inputs, num_classes))
    return nn.Sequential(nn.Flatten(), nn.Linear(num_inputs, settings.hidden), nn.ReLU(),
                         nn.Linear(settings.hidden, num_classes))


def cache_key(x: Tensor, y: Tensor, settings: ClassifierSettings) -> str:
    digest = hashlib.sha1()
    for t in (x.float().contiguous(), y.long().contiguous()):
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.cpu().numpy().tobytes())
    digest.update(repr(sorted(asdict(settings).items())).encode())
    return digest.hexdigest()[:16]


def train_classifier(x: Tensor, y: Tensor, settings: ClassifierSettings) -> nn.Module:
    """Minibatch Adam on the cross-entropy; deterministic given ``settings.seed``."""
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        net = _build(x[0].numel(), int(y.max()) + 1, settings)
    x, y = x.float().cpu(), y.long().cpu()
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    for _ in range(settings.steps):
        batch = torch.randint(len(x), (settings.batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def cached_classifier(x: Tensor, y: Tensor, settings: ClassifierSettings = ClassifierSettings(),
                      cache_dir: str | Path | None = None) -> nn.Module:
    """The classifier of the training split ``(x, y)``, from the cache or trained now."""
    path = Path(cache_dir or default_cache_dir()) / "classifiers" / (
        cache_key(x, y, settings) + ".pt")
    net = _build(x[0].numel(), int(y.max()) + 1, settings)
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    net = train_classifier(x, y, settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        torch.save(net.state_dict(), partial)
        partial.replace(path)  # atomic: a concurrent run never reads half a file
    except OSError as error:
        log.warning("could not cache the sample classifier at %s (%s); set NFVAE_CACHE_DIR "
                    "to a writable folder to train it once", path, error)
    return net


@torch.no_grad()
def predict(classifier: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    return torch.cat([classifier(x[i:i + batch_size].float().cpu()).argmax(1)
                      for i in range(0, len(x), batch_size)])


def histogram(labels: Tensor, num_classes: int) -> Tensor:
    return torch.bincount(labels, minlength=num_classes).double() / max(len(labels), 1)


def holdout_split(x: Tensor, y: Tensor, settings: ClassifierSettings
                  ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(fit, reference): a seeded ``settings.holdout`` of the images kept out of training."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(settings.seed))
    cut = len(x) - max(1, int(round(settings.holdout * len(x))))
    fit, held = order[:cut], order[cut:]
    return (x[fit], y[fit]), (x[held], y[held])


def class_findings(sample: Callable[[int], Tensor], train: tuple[Tensor, Tensor],
                   thresholds: Thresholds, num_samples: int = 1000,
                   cache_dir: str | Path | None = None,
                   settings: ClassifierSettings = ClassifierSettings(),
                   class_names: list[str] | None = None, figure: str = CLASS_FIGURES
                   ) -> tuple[list[Finding], Tensor]:
    """Findings for the classes the samples miss or over-represent; also the ratios
    (share among samples / share among held-out training images) per class, (C,)."""
    fit, (x_ref, y_ref) = holdout_split(*train, settings)
    num_classes = int(train[1].max()) + 1
    names = class_names or [str(c) for c in range(num_classes)]
    classifier = cached_classifier(*fit, settings, cache_dir)
    predicted_ref = predict(classifier, x_ref)
    accuracy = float((predicted_ref == y_ref.long().cpu()).double().mean())
    samples = sample(num_samples).detach()
    if samples.shape[1:] != x_ref.shape[1:]:
        raise ValueError(f"samples have shape {tuple(samples.shape[1:])} per image, the data "
                         f"{tuple(x_ref.shape[1:])}: sample(n) must return images in data space")
    reference = histogram(predicted_ref, num_classes)
    shares = histogram(predict(classifier, samples), num_classes)
    ratios = torch.where(reference > 0, shares / reference.clamp_min(1e-12),
                         torch.ones_like(shares))
    fraction = thresholds.class_mass_fraction
    basis = (f"{num_samples} samples labelled by a classifier with {accuracy:.0%} held-out "
             f"accuracy, against its labels of {len(x_ref)} held-out training images")
    present = [c for c in range(num_classes) if reference[c] > 0]
    missing = [c for c in present if float(ratios[c]) < fraction]
    crowded = [c for c in present if float(ratios[c]) > 1 / fraction]

    def listing(classes: list[int], share_of: str) -> str:
        # One finding per kind, however many classes: an early run can miss most of them.
        label = "class" if len(classes) == 1 else "classes"
        verb = "is" if len(classes) == 1 else "are"
        shares_text = ", ".join(f"{names[c]}: {float(shares[c]):.1%} {share_of} "
                                f"{float(reference[c]):.1%}" for c in classes)
        return f"{label} {', '.join(names[c] for c in classes)} {verb}", shares_text

    findings = []
    if missing:
        subject, detail = listing(missing, "of the samples against")
        findings.append(Finding(
            check="dropped_class", severity="problem",
            summary=f"{subject} missing from the samples ({detail} of the data; {basis})",
            value=min(float(ratios[c]) for c in missing), threshold=fraction, figure=figure,
            advice="train longer; for a VAE, a weaker decoder or a flow prior; for a "
                   "flow, more levels or a lower sampling temperature hides, not fixes, it"))
    if crowded:
        subject, detail = listing(crowded, "of the samples against")
        findings.append(Finding(
            check="dropped_class", severity="warning",
            summary=f"{subject} over-represented ({detail} of the data; {basis})",
            value=max(float(ratios[c]) for c in crowded), threshold=1 / fraction,
            figure=figure,
            advice="the model puts too much mass on these classes' images: train longer "
                   "or check for mode collapse in the sample grids"))
    if not findings:
        findings.append(Finding(
            check="dropped_class", severity="ok",
            summary=f"all {num_classes} classes in the samples, each at "
                    f"{float(ratios.min()):.2f} to {float(ratios.max()):.2f} times its share "
                    f"of the data ({basis})",
            value=float(ratios.min()), threshold=fraction, figure=figure))
    return findings, ratios
