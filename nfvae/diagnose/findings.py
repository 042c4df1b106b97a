"""What a diagnosis returns: findings with the number behind them, ranked.

A ``Finding`` names one check's verdict on one thing (the model, a layer, a mode),
with the measured value, the threshold it was held to, the figure where a person can
see it, and what to try. ``rank`` orders problems before warnings before passes, and
``render_markdown`` writes the short report that ``eval.py task=diagnose`` prints and
the end-of-training callback logs as the TensorBoard text card ``diagnose/report``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

#: Worst first.
SEVERITIES = ("problem", "warning", "ok")


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    summary: str
    value: float
    threshold: float
    figure: str = ""
    advice: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Problems, then warnings, then passes; the order within a severity is kept."""
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def render_markdown(findings: Iterable[Finding], title: str = "Diagnosis") -> str:
    findings = rank(findings)
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    lines = [f"## {title}", "",
             f"{counts['problem']} problem(s), {counts['warning']} warning(s), "
             f"{counts['ok']} check(s) passed.", ""]
    marks = {"problem": "PROBLEM", "warning": "warning", "ok": "ok"}
    for number, finding in enumerate(findings, 1):
        lines.append(f"{number}. **{marks[finding.severity]}** ({finding.check}): "
                     f"{finding.summary} [value {finding.value:.4g}, threshold "
                     f"{finding.threshold:.4g}]")
        if finding.figure:
            lines.append(f"    - look at: {finding.figure}")  # 4 spaces: a nested list
        if finding.advice and finding.severity != "ok":
            lines.append(f"    - try: {finding.advice}")
    return "\n".join(lines) + "\n"
