"""The evaluation report: planted analogies, maps, sections left out, the page in a browser."""

import csv
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from autorisk_tf import simulate
from autorisk_tf.report import projection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_umap = pytest.mark.skipif(not projection.umap_available(),
                                reason="umap-learn is not installed (the report extra)")


def test_planted_analogies_swap_one_factor_only():
    quadruples = list(simulate.analogy_quadruples(seed=3, count=6))
    again = list(simulate.analogy_quadruples(seed=3, count=6))
    assert [row for _, row in quadruples] == [row for _, row in again]
    factors = {}
    for (a, b, c, d), row in quadruples:
        assert [u.user_id for u in (a, b, c, d)] == [row[r] for r in "abcd"]
        assert all(u.labels["profile"] == "ordinary" for u in (a, b, c, d))
        for first, second in ((a, b), (c, d)):  # one behaviour, two factor values
            np.testing.assert_array_equal(first.times_ms, second.times_ms)
            assert first.event_type == second.event_type
            assert first.channel == second.channel and first.device == second.device
            changed = {name for name in ("pay_method", "amount", "item")
                       if getattr(first, name) != getattr(second, name)}
            assert changed == {row["field"]}, (row, changed)
        assert len(a) != len(c) or a.event_type != c.event_type  # two behaviours
        factors[row["factor"]] = row
        if row["factor"] == "pay_method":
            assert {p for p in a.pay_method if p} == {row["x"]}
            assert {p for p in d.pay_method if p} == {row["y"]}
        if row["factor"] == "amount_level":
            ratio = [y / x for x, y in zip(a.amount, b.amount, strict=True) if x]
            np.testing.assert_allclose(ratio, 25.0, rtol=0.05)
    assert set(factors) == {"pay_method", "amount_level", "item_family"}


def test_simulator_writes_analogies_csv_and_their_users(tmp_path):
    summary = simulate.write_dataset(str(tmp_path), seed=1, num_users=20, num_shards=1,
                                     num_analogies=2)
    with open(tmp_path / "analogies.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and summary["users"] == 28
    with open(tmp_path / "labels.csv", newline="", encoding="utf-8") as f:
        users = {r["user_id"] for r in csv.DictReader(f)}
    assert {r[role] for r in rows for role in "abcd"} <= users


@needs_umap
def test_maps_are_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(size=(60, 12)), rng.normal(size=(60, 12)) + 3])
    first = projection.umap_coordinates(x, seed=4, n_neighbors=10)
    np.testing.assert_array_equal(first, projection.umap_coordinates(x, seed=4, n_neighbors=10))
    assert not np.allclose(first, projection.umap_coordinates(x, seed=5, n_neighbors=10))
    pca = projection.pca_coordinates(x, seed=0)
    np.testing.assert_array_equal(pca, projection.pca_coordinates(x, seed=0))
    y = np.repeat([0.0, 1.0], 60)
    assert projection.map_auc(first, y) > 0.95
    assert projection.map_auc(pca, y) > 0.95
    assert abs(projection.map_auc(rng.normal(size=(120, 2)), y) - 0.5) < 0.2


@pytest.fixture(scope="module")
def report_data(tmp_path_factory):
    """600 simulated users (seed 11), 24 planted analogy quadruples (96 users) and 4 rings
    of 5, preprocessed: the output folder (`../raw/analogies.csv` and `rings.csv` beside
    it). The session's pre-trained encoder never saw these users."""
    from tests.conftest import _simulate_and_preprocess

    return _simulate_and_preprocess(tmp_path_factory.mktemp("report_data"), 600,
                                    num_analogies=24, seed=11, num_rings=4)


def _cells(markdown: str, first: str, second: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [first, second]:
            return cells
    raise AssertionError(f"no row {first} | {second}")


@pytest.fixture(scope="module")
def full_report(pretrained, report_data, tmp_path_factory):
    """The report of the session's pre-trained encoder on its data, every section on.

    One label count (120) and one seed, fine-tuning for one epoch: the section's
    mechanics, not its level (curves over several counts: tests/test_few_labels.py).
    """
    from autorisk_tf.finetune import SequenceClassifier
    from autorisk_tf.report.build import Options, build_report

    trainer, _ = pretrained
    output = tmp_path_factory.mktemp("report")
    raw = os.path.join(os.path.dirname(report_data), "raw")
    # Reason codes of a classifier with an untrained head: the section's mechanics.
    classifier = SequenceClassifier(trainer.embedder(), name="clf")
    classifier.build()
    (output / "clf").mkdir()
    classifier.save(str(output / "clf" / "classifier.keras"))
    options = Options(labels=["is_risk"], analogies=os.path.join(raw, "analogies.csv"),
                      rings=os.path.join(raw, "rings.csv"), label_counts=["120"], seeds=1,
                      finetune_steps=1, classifier=str(output / "clf"),
                      planted=os.path.join(raw, "planted_events.csv"))
    paths = build_report(report_data, trainer.model_dir, str(output), options)
    with open(paths["markdown"], encoding="utf-8") as f:
        return output, paths, f.read()


def test_analogy_recall_beats_random_neighbours(full_report):
    _, _, markdown = full_report
    encoder = _cells(markdown, "encoder", "all")
    random = _cells(markdown, "random neighbour", "all")
    assert float(encoder[3]) > 3 * float(random[3]), (encoder, random)  # recall@10
    assert float(_cells(markdown, "bag of event counts", "all")[3]) > float(random[3])


def test_ring_members_find_their_ring_far_above_random(full_report):
    _, _, markdown = full_report
    rows = {cells[0]: float(cells[1]) for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()
        if line.startswith("| ")) if len(cells) == 2 and cells[1][:1].isdigit()}
    encoder, random = rows["encoder"], rows["random vectors"]
    # 4 rings of 5 among 716 users: 20 random neighbours hold 0.03 of a ring on average.
    assert encoder > 5 * random and encoder > 0.3, rows
    assert rows["bag of event counts"] > 5 * random, rows
    assert "ring.png" in markdown


def test_full_report_holds_every_section(full_report):
    output, paths, markdown = full_report
    for title in ("The pre-training run", "Maps of the test users' embeddings",
                  "Few-label learning curves", "Sequence analogy",
                  "Who else behaves like this", "Reason codes", "Nearest neighbours"):
        assert f"## {title}" in markdown
    reasons = markdown.split("## Reason codes")[1].split("## ")[0]
    scores = [float(line.split("|")[2]) for line in reasons.splitlines()
              if line.startswith("| ") and not line.startswith("| user |")]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True), reasons
    for method in ("LR on embeddings", "pre-trained, fine-tuned", "from scratch"):
        cells = _cells(markdown, "is_risk", method)
        assert 0.0 <= float(cells[3]) <= 1.0
    lr = [line for line in markdown.splitlines() if "| is_risk | LR on embeddings | 120 |" in line]
    assert len(lr) == 1 and float(lr[0].split("|")[4]) > 0.7, lr  # 120 labels separate is_risk
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown)
    assert {"training.png", "maps.png", "few_labels.png", "reasons.png"} <= set(images)
    assert any(i.startswith("analogy_") for i in images)
    assert sum(i.startswith("neighbours_") for i in images) == 5
    for image in images:
        with open(output / image, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(paths["html"], encoding="utf-8") as f:
        page = f.read()
    assert page.count("data:image/png;base64,") == len(images)
    assert 'src="' + images[0] not in page  # inlined, nothing to fetch


def test_report_without_labels_features_or_umap_says_why(pretrained, report_data, tmp_path,
                                                          monkeypatch):
    from autorisk_tf.report.build import Options, build_report

    trainer, _ = pretrained
    monkeypatch.setattr(projection, "umap_available", lambda: False)
    paths = build_report(report_data, trainer.model_dir, str(tmp_path / "r"), Options())
    with open(paths["markdown"], encoding="utf-8") as f:
        markdown = f.read()
    assert "No --labels were given, so there are no learning curves." in markdown
    assert "No --analogies file was given" in markdown
    assert "No --rings file was given" in markdown
    assert "No --classifier was given" in markdown
    assert "No --labels were given, so there is no label agreement." in markdown
    assert "## Maps of the test users' embeddings" in markdown  # maps need no labels
    assert "maps.png" in markdown and "LR on embeddings" not in markdown
    assert projection.UMAP_MISSING in markdown and "UMAP: n_neighbors" not in markdown


def test_report_rejects_a_label_that_is_not_binary(pretrained, report_data, tmp_path):
    trainer, _ = pretrained
    result = subprocess.run(
        [sys.executable, "-m", "autorisk_tf.report", "--data", report_data,
         "--model_dir", trainer.model_dir, "--output", str(tmp_path / "r"),
         "--labels", "profile"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1
    assert "label 'profile' is not a binary label" in result.stderr.splitlines()[-1]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get "
                    "install chromium)")
def test_page_renders_in_headless_chromium(full_report, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    _, paths, _ = full_report
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto("file://" + os.path.abspath(paths["html"]), wait_until="load")
        widths = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert len(widths) >= 8 and min(widths) > 0, widths
    assert errors == []
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_finetune_labels_must_be_report_labels(pretrained, report_data, tmp_path):
    from autorisk_tf.report.build import Options, build_report

    trainer, _ = pretrained
    with pytest.raises(ValueError, match=r"--finetune_labels \['takeover'\] must also be in"):
        build_report(report_data, trainer.model_dir, str(tmp_path),
                     Options(labels=["is_risk"], finetune_labels=["takeover"]))


def test_figures_pick_an_installed_cjk_font(monkeypatch):
    import types

    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    from autorisk_tf.report import figures

    assert figures.cjk_family(["DejaVu Sans", "WenQuanYi Zen Hei",
                               "Noto Sans CJK JP"]) == "Noto Sans CJK JP"
    assert figures.cjk_family(["DejaVu Sans"]) is None
    fonts = [types.SimpleNamespace(name="DejaVu Sans"),
             types.SimpleNamespace(name="WenQuanYi Zen Hei")]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", fonts)
    monkeypatch.setitem(plt.rcParams, "font.sans-serif", ["DejaVu Sans", "Arial"])
    figures._pyplot()
    assert plt.rcParams["font.sans-serif"][:2] == ["DejaVu Sans", "WenQuanYi Zen Hei"]


def test_finetune_counts_limit_fine_tuning_to_those_label_counts(monkeypatch):
    from autorisk_tf import few_labels
    from autorisk_tf.report import build

    runs = []

    class FakeFinetuner:
        def __init__(self, *args, **kwargs):
            pass

        def auc(self, pretrained, keys, epochs, seed):
            runs.append((pretrained, len(keys)))
            return 0.5

    monkeypatch.setattr(few_labels, "Finetuner", FakeFinetuner)
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.3).astype(float)
    users = build.Users(np.array([f"u{i}" for i in range(n)], dtype=object),
                        np.array(["train"] * 300 + ["test"] * 100),
                        rng.normal(size=(n, 4)) + y[:, None], {"is_risk": y}, [], [4])
    options = build.Options(labels=["is_risk"], label_counts=["50", "100", "all"], seeds=2,
                            finetune_steps=10, finetune_counts=["50"])
    curves = build.label_curves(users, "is_risk", None, "", None, None, options)
    assert [p["size"] for p in curves["LR on embeddings"]] == ["50", "100", "all"]
    for name in build.FINETUNED:
        assert [p["size"] for p in curves[name]] == ["50"]
    assert sorted(runs) == [(False, 50)] * 2 + [(True, 50)] * 2  # 2 seeds, both kinds
    assert curves["LR on embeddings"][-1]["mean"] > 0.8  # the labels are in the vectors


def test_finetune_counts_must_be_label_counts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "autorisk_tf.report", "--data", str(tmp_path), "--model_dir",
         str(tmp_path), "--output", str(tmp_path / "r"), "--label_counts", "100,all",
         "--finetune_counts", "300"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--finetune_counts ['300'] must also be in --label_counts" in result.stderr
