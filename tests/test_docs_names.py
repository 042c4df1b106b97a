"""The names the documentation tells a user to look for exist.

A TensorBoard tag in README.md or docs/*.md (``viz/images/samples``) must be one that
short runs of the shipped configurations write, and a config key (``objective.num_samples``,
``flow.family.num_bins=16``) must be one that the real conf/ composes. The diagnosis's
"look at:" hints name tags too. When tags or keys move (the ``viz/`` and ``zz_`` groups,
``model.num_samples`` -> ``objective.num_samples``), the old names left in the prose
fail here instead of sending a reader to a card that is not there.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nfvae.tb_logger import tensorboard_tag
from nfvae.training import train
from nfvae.validation import MOVED, RULES
from tests.conftest import CONF_DIR, ROOT
from tests.tests_support import compose_default, read_events

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Tags that the short runs below cannot write, each with where it comes from. Every one
#: must still be written literally by nfvae's code (checked below), so a renamed tag
#: cannot hide here.
ELSEWHERE = {
    "zz_test_curve/nll": "nfvae.curves.NLLCurveLogger: only experiment=iwae/* (MNIST, "
                         "1000 x 1000 importance samples a point)",
    "zz_test_curve/nll_vs_train_seconds": "the same callback",
    "train/lr": "LearningRateMonitor and scheduler of experiment=iwae/*",
    "ood/nll_histograms": "eval.py task=ood's event file: needs a second dataset of the "
                          "model's shape (tests/test_ood.py)",
    "ood/auroc/<name>": "the same, one per other set",
    "ood/nll_other/<name>": "the same, one per other set",
    "zz_diagnose/amortization_gap": "the opt-in inference gaps (task.gaps=true, ~20 s)",
    "zz_diagnose/approximation_gap": "the same",
}

#: Backticked dotted names of a config group's first segment that are not config keys.
NOT_KEYS = {
    "trainer.fit": "Lightning's Trainer method (docs/scaling.md)",
    "trainer.test": "Lightning's Trainer method (docs/scaling.md)",
    "data.name": "an HParams column: the chosen data option (nfvae/hparams.py)",
    "model.name": "an HParams column: the chosen model option (nfvae/hparams.py)",
}

# -- reading the markdown ----------------------------------------------------------------------


def paragraphs(path: Path) -> list[tuple[int, str, bool]]:
    """(first line, text, inside a fenced block) of each block of ``path``."""
    blocks, lines, start, fenced = [], [], 1, False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            if lines:
                blocks.append((start, "\n".join(lines), fenced))
            lines, start, fenced = [], number + 1, not fenced
        elif not line.strip() and not fenced:
            if lines:
                blocks.append((start, "\n".join(lines), fenced))
            lines, start = [], number + 1
        else:
            lines.append(line)
    if lines:
        blocks.append((start, "\n".join(lines), fenced))
    return blocks


def code_spans(text: str) -> list[str]:
    """The inline code of a paragraph (a table's escaped ``\\|`` unescaped)."""
    return [m.group(2).replace("\\|", "|").strip()
            for m in re.finditer(r"(`+)(.+?)\1", text.replace("\n", " "))]


def doc_spans() -> list[tuple[str, str, str]]:
    """(where, span, its paragraph) of every inline code span of the documentation."""
    found = []
    for path in DOCS:
        for line, text, fenced in paragraphs(path):
            if not fenced:
                found += [(f"{path.name}:{line}", span, text) for span in code_spans(text)]
    return found


# -- tags -----------------------------------------------------------------------------------------

#: A tag in a hint's prose: segments of word characters, ``<k>`` and dots (``T_0.5``),
#: not ending in the sentence's full stop.
TAG_TOKEN = re.compile(r"[A-Za-z_]\w*(?:/[\w<>*.]*[\w<>*])+")


def patterns(name: str) -> list[re.Pattern]:
    """The tags a documented name stands for: ``{a,b}`` and ``a|b`` (in one segment) list
    alternatives, ``<part>`` is any one segment, ``*`` and ``...`` anything."""
    brace = re.search(r"\{([^{}]*)\}", name)
    if brace:
        return [p for alternative in brace.group(1).split(",")
                for p in patterns(name[:brace.start()] + alternative + name[brace.end():])]
    segments = [s.split("|") for s in name.split("/")]
    found = []
    for choice in itertools.product(*segments):
        regex = ""
        for piece in re.split(r"(<[^>]*>|\.\.\.|\*)", "/".join(choice)):
            regex += {"*": ".*", "...": ".*"}.get(piece) or (
                "[^/]+" if piece.startswith("<") else re.escape(piece))
        found.append(re.compile(regex))
    return found


def missing(name: str, tags: set[str]) -> list[str]:
    """The alternatives of ``name`` that match no tag; a Lightning key (``test/nll``)
    counts as its TensorBoard tag (``zz_test/nll``)."""
    name = tensorboard_tag(name)
    return [p.pattern for p in patterns(name) if not any(p.fullmatch(t) for t in tags)]


def experiment_option(span: str) -> bool:
    """``toy/u1``, ``toy/<target>``, ``glow/digits``: an ``experiment=`` option, not a tag."""
    regex = "".join("[^/]+" if piece.startswith("<") else re.escape(piece)
                    for piece in re.split(r"(<[^>]*>)", span))
    return any(re.fullmatch(regex, str(p.relative_to(CONF_DIR / "experiment").with_suffix("")))
               for p in (CONF_DIR / "experiment").rglob("*.yaml"))


def groups(tags: set[str]) -> set[str]:
    """First segments a reader takes for a tag's: the real groups, the figure names'
    own groups (``images`` of ``viz/images/samples``, which a tag without its ``viz/``
    starts with) and Lightning's ``test`` keys."""
    found = {t.split("/")[0] for t in tags} | {"test"}
    found |= {t.split("/")[1] for t in tags if t.startswith(("viz/", "val/")) and t.count("/") > 1}
    return found - {"_hparams_"}


def run_tags(run: Path) -> set[str]:
    events = read_events(run)
    tags = set()
    for names in events.Tags().values():
        if isinstance(names, list):
            # TensorBoard's TEXT tab shows add_text's tag without the plugin's suffix.
            tags |= {n.removesuffix("/text_summary") for n in names}
    return tags


SHORT = ["trainer.enable_progress_bar=false", "~callbacks.progress_bar"]
RUNS = {
    # the shipped defaults (python train.py: digits, planar, every VAE callback), one
    # epoch so that every figure callback draws
    "vae": ["trainer.max_epochs=1"],
    # the figures drawn for latent size 2 only (posteriors, aggregate posterior)
    # (small figures: only their tags count here)
    "vae_latent2": ["model.latent_dim=2", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                    "callbacks.latent.num_points=60", "+callbacks.latent.num_samples=8",
                    "+callbacks.latent.grid_size=20", "+callbacks.latent.posterior_draws=200",
                    "~callbacks.images", "~callbacks.projector", "~callbacks.diagnose",
                    "~callbacks.grad_norm", "test.enabled=false", *SHORT],
    "glow": ["experiment=glow/digits", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
             "module.steps_per_level=1", *SHORT],
    # a 2-D density (maximum likelihood: val/nll); skipping non-finite steps adds its
    # counter, train/skipped_nonfinite
    "two_moons": ["experiment=toy/two_moons", "flow=realnvp", "flow.num_layers=2",
                  "trainer.max_epochs=1", "data.num_train=512", "data.num_val=256",
                  "data.num_test=256", "callbacks.density.grid_size=30",
                  "trainer.log_every_n_steps=1", "training.skip_nonfinite=true",
                  "~callbacks.diagnose", *SHORT],
}


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> dict[str, Path]:
    """The run folder of each short run of a shipped configuration."""
    found = {}
    for name, overrides in RUNS.items():
        found[name] = tmp_path_factory.mktemp(name)
        train(compose_default(overrides, output_dir=found[name]))
    return found


@pytest.fixture(scope="module")
def written(run_dirs) -> dict[str, set[str]]:
    return {name: run_tags(run) for name, run in run_dirs.items()}


@pytest.fixture(scope="module")
def known_tags(written) -> set[str]:
    return set().union(*written.values()) | set(ELSEWHERE)


def test_tags_written_elsewhere_are_still_in_the_code():
    source = "\n".join(p.read_text() for p in (ROOT / "nfvae").rglob("*.py"))
    # A tag with a <part> is written by an f-string: its literal prefix must be there.
    literal = {t: (f'"{t.split("<")[0]}' if "<" in t else f'"{t}"') for t in ELSEWHERE}
    assert [t for t, text in literal.items() if text not in source] == []


def test_every_documented_tag_is_written(known_tags):
    tag_groups = groups(known_tags)
    stale = []
    for where, span, _ in doc_spans():
        if not re.fullmatch(r"[A-Za-z_]\w*/\S*", span) or span.split("/")[0] not in tag_groups:
            continue
        if experiment_option(span):
            continue
        if span.endswith("/"):  # a group: viz/
            ok = span[:-1] in {t.split("/")[0] for t in known_tags} | {"test"}
        else:
            ok = not missing(span, known_tags)
        if not ok:
            stale.append(f"{where}: `{span}`")
    assert stale == [], "documented TensorBoard names that no run writes:\n" + "\n".join(stale)


def hint_tags(text: str) -> list[str]:
    """The tags a "look at: TensorBoard ..." hint names."""
    return [t for line in text.splitlines() if "TensorBoard" in line
            for t in TAG_TOKEN.findall(line.split("TensorBoard", 1)[1].replace(",", " "))]


def diagnose_hints() -> dict[str, str]:
    """Every string constant of nfvae/diagnose/ that names a TensorBoard card."""
    found = {}
    for path in sorted((ROOT / "nfvae" / "diagnose").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.search(r"TensorBoard [A-Z]+:", node.value):
                found[f"{path.name}:{node.lineno}"] = node.value
    return found


def test_the_diagnosis_hints_name_written_tags(run_dirs, known_tags):
    texts = dict(diagnose_hints())
    # the report of the shipped run itself, and the README's copy of one
    report = read_events(run_dirs["vae"]).Tensors(
        "diagnose/report/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "look at: TensorBoard" in report
    texts["the shipped run's diagnose/report"] = report
    for line, text, fenced in paragraphs(ROOT / "README.md"):
        if fenced and "look at: TensorBoard" in text:
            texts[f"README.md:{line}"] = text
    assert len(texts) >= 8  # the hint constants of every check module were found
    stale = [f"{where}: {tag}" for where, text in texts.items() for tag in hint_tags(text)
             if missing(tag, known_tags)]
    assert stale == [], "diagnosis hints naming tags that no run writes:\n" + "\n".join(stale)


# -- config keys --------------------------------------------------------------------------------

ROOT_CONFIGS = ("train", "eval", "visualize")
KEY_TOKEN = re.compile(r"(?P<sign>[~+]?)(?P<key>[a-z_]+(?:\.(?:[A-Za-z0-9_]+|<[^>]*>|\*))+)"
                       r"(?P<rest>[=:].*)?")
FILE_SUFFIXES = ("json", "jsonl", "log", "md", "png", "gif", "yaml", "ckpt", "py", "npz",
                 "toml", "txt", "tsv", "pbtxt", "sh", "mat", "amat", "pid")


@functools.cache
def composed(config: str, override: str | None = None):
    """A root config of the real conf/ with one option chosen, as plain containers (None
    where that option does not compose there)."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config, overrides=[override] if override else [],
                          return_hydra_config=True)
    except Exception:  # an option of another command (task=ood in train.py)
        return None
    return OmegaConf.to_container(cfg, resolve=False)


def has(node, segments: list[str]) -> bool:
    if not segments:
        return True
    if not isinstance(node, dict):
        return False
    first, rest = segments[0], segments[1:]
    if first == "*" or first.startswith("<"):
        return any(has(v, rest) for v in node.values())
    return first in node and has(node[first], rest)


def options(group: str) -> list[str]:
    folder = CONF_DIR / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml")
                  if not any(part.startswith("_") for part in p.relative_to(folder).parts))


def mentions(group: str, option: str, words: list[str]) -> tuple[bool, ...]:
    """Which of ``words`` an option's file, or a private ``_*.yaml`` beside it (which
    experiments include), names as a key (``word:``) or a package (``x@families.word``)."""
    path = CONF_DIR / group / f"{option}.yaml"
    texts = [path.read_text()] + [p.read_text() for p in path.parent.glob("_*.yaml")]
    return tuple(any(re.search(rf"(?m)^\s*{re.escape(w)}\s*:|@\S*\b{re.escape(w)}\b|"
                               rf"\b{re.escape(w)}@", t) for t in texts) for w in words)


def resolves(key: str) -> bool:
    """Whether ``key`` is in a root config as shipped, with one option of a group on its
    path chosen (``data.split_seed``: data=frey_faces) or with one experiment."""
    segments = key.split(".")
    if any(has(composed(c), segments) for c in ROOT_CONFIGS if composed(c) is not None):
        return True
    tries = []
    for i in range(len(segments) - 1, 0, -1):
        group = "/".join(segments[:i])
        if (CONF_DIR / group).is_dir():
            # the command whose defaults choose the group (task: eval.py's)
            config = next(c for c in ROOT_CONFIGS
                          if group in composed(c)["hydra"]["runtime"]["choices"])
            tries += [(group, config, o, segments[i:]) for o in options(group)]
    tries += [("experiment", "train", o, segments[1:]) for o in options("experiment")]
    # Composing takes ~0.4 s: first the options that name the key's parts (the earlier
    # parts weigh more), a group's before the experiments.
    def rank(t):
        named = mentions(t[0], t[2], [w for w in t[3] if re.fullmatch(r"\w+", w)])
        return not any(named), t[0] == "experiment", tuple(not n for n in named)

    tries.sort(key=rank)
    return any(has(composed(config, f"{group}={o}"), segments) for group, config, o, _ in tries
               if composed(config, f"{group}={o}") is not None)


def top_level_names() -> set[str]:
    names = {p.name for p in CONF_DIR.iterdir() if p.is_dir()} | set(MOVED)
    for config in ROOT_CONFIGS:
        names |= set(composed(config))
    return names


def doc_keys() -> list[tuple[str, str, str, str]]:
    """(where, sign, key, paragraph) of each dotted config key in the documentation:
    inline code, and ``key=value`` words of fenced command lines."""
    found = []
    for path in DOCS:
        for line, text, fenced in paragraphs(path):
            words = (text.split() if fenced
                     else [w for span in code_spans(text) for w in span.split()])
            for word in (w.strip("'\"") for w in words):
                m = KEY_TOKEN.fullmatch(word)
                if m is None or (fenced and not (m.group("rest") or "").startswith("=")):
                    continue
                if m.group("key").rsplit(".", 1)[-1] in FILE_SUFFIXES and not m.group("rest"):
                    continue  # a file name: eval.json
                found.append((f"{path.name}:{line}", m.group("sign"), m.group("key"), text))
    return found


def stale_keys(found: list[tuple[str, str, str, str]]) -> list[str]:
    """``where: key`` of each (where, sign, key, paragraph) that conf/ does not have."""
    moved = {r.key: r.moved_to for r in RULES if r.moved_to}
    names = top_level_names()
    stale = []
    for where, sign, key, paragraph in found:
        if key.split(".")[0] not in names or key in NOT_KEYS:
            continue
        if sign == "+":  # adds a key the config does not have
            continue
        if key in moved:  # an old name is fine only where its new one is given beside it
            ok = moved[key] in paragraph
        else:
            ok = key.split(".")[0] not in MOVED and resolves(key)
        if not ok:
            stale.append(f"{where}: `{sign}{key}`")
    return stale


def test_every_documented_config_key_resolves():
    stale = stale_keys(doc_keys())
    assert stale == [], "documented config keys that conf/ does not have:\n" + "\n".join(stale)


OPTION = re.compile(r"(?<![\w.])(?P<sign>[~+]?)"
                    r"(?P<key>[a-z_]+(?:\.(?:[A-Za-z0-9_]+|<[^>]*>|\*))+)=")


def code_and_conf_options() -> list[tuple[str, str, str, str]]:
    """Every ``key=`` of nfvae's strings (error messages, hints, docstrings) and of
    conf/'s comments: what a user is told to type."""
    found = []
    for path in sorted((ROOT / "nfvae").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found += [(f"{path.relative_to(ROOT)}:{node.lineno}", m.group("sign"),
                           m.group("key"), node.value) for m in OPTION.finditer(node.value)]
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            comment = line.split("#", 1)[1] if "#" in line else ""
            found += [(f"{path.relative_to(ROOT)}:{number}", m.group("sign"), m.group("key"),
                       comment) for m in OPTION.finditer(comment)]
    return found


def test_options_in_messages_and_conf_comments_resolve():
    found = code_and_conf_options()
    assert any(key == "training.skip_nonfinite" for _, _, key, _ in found)  # the scan works
    stale = stale_keys(found)
    assert stale == [], "options named by nfvae or conf/ that conf/ does not have:\n" + \
        "\n".join(stale)
