"""The report's figures, drawn with matplotlib (Agg, no screen) and returned as PNG bytes."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from autorisk_tf.data import sequence_example as seqex

MATPLOTLIB_MISSING = ("matplotlib is not installed, so the report has tables but no figures; "
                      "install the report extra (pip install -e '.[report]').")
_MISSING_COLOUR = (1.0, 1.0, 1.0)
_OTHER_COLOUR = (0.75, 0.75, 0.75)


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# Families that draw Chinese, Japanese and Korean item names, most preferred first (Debian's
# fonts-noto-cjk, then other common ones).
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC",
                "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei",
                "PingFang SC")


def cjk_family(installed: Sequence[str]) -> str | None:
    """The most preferred CJK-capable font family among the installed ones.

    Args:
        installed: sequence of str. Font family names matplotlib knows.

    Returns:
        A family of `CJK_FAMILIES`, or None when none is installed (CJK text is then drawn
        as boxes).
    """
    names = set(installed)
    return next((family for family in CJK_FAMILIES if family in names), None)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    family = cjk_family([font.name for font in font_manager.fontManager.ttflist])
    if family and family not in plt.rcParams["font.sans-serif"]:
        # Latin text keeps matplotlib's default; glyphs it lacks fall back to the CJK font.
        plt.rcParams["font.sans-serif"] = ["DejaVu Sans", family,
                                           *plt.rcParams["font.sans-serif"]]
    return plt


def _png(figure) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _label_colours(values: np.ndarray) -> tuple[list, list[tuple[str, tuple]]]:
    """Point colours and legend entries of label values (binary 0/1 or categories)."""
    plt = _pyplot()
    missing = [v == "" or (isinstance(v, float) and np.isnan(v)) for v in values]
    names = sorted({str(v) for v, m in zip(values, missing, strict=True) if not m})
    binary = set(names) <= {"0.0", "1.0"}
    palette = ({"0.0": (0.6, 0.6, 0.7), "1.0": (0.85, 0.1, 0.1)} if binary else
               {n: plt.get_cmap("tab10")(i % 10)[:3] for i, n in enumerate(names)})
    colours = [_OTHER_COLOUR if m else palette[str(v)]
               for v, m in zip(values, missing, strict=True)]
    legend = [(("positive" if n == "1.0" else "negative") if binary else n, palette[n])
              for n in names]
    return colours, legend


def maps_figure(maps: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                titles: dict[tuple[str, str], str]) -> bytes:
    """Scatter plots of 2-D maps: one row per label, one column per map.

    Args:
        maps: `{map name: float [N, 2]}` (such as UMAP and PCA).
        labels: `{label name: [N] values}` (binary floats or category strings).
        titles: `{(map name, label name): panel title}`.

    Returns:
        PNG bytes.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    figure, axes = plt.subplots(len(labels), len(maps), squeeze=False,
                                figsize=(4.6 * len(maps), 4.0 * len(labels)))
    for row, (label, values) in enumerate(labels.items()):
        colours, legend = _label_colours(np.asarray(values, dtype=object))
        order = np.argsort([c == (0.85, 0.1, 0.1) for c in colours], kind="stable")
        for col, (name, xy) in enumerate(maps.items()):
            ax = axes[row, col]
            ax.scatter(xy[order, 0], xy[order, 1], c=[colours[i] for i in order], s=7,
                       linewidths=0)
            ax.set_title(titles.get((name, label), f"{name}: {label}"), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, -1].legend(handles=[Patch(color=c, label=n) for n, c in legend[:10]],
                             fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _png(figure)


def curves_figure(curves: dict[str, dict[str, list[dict]]]) -> bytes:
    """Few-label curves: AUC against labels used, one panel per label, bands over seeds.

    Args:
        curves: `{label: {method: points of few_labels.curve}}`.

    Returns:
        PNG bytes.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(curves), squeeze=False,
                                figsize=(5.2 * len(curves), 3.8))
    for ax, (label, methods) in zip(axes[0], curves.items(), strict=True):
        for method, points in methods.items():
            x = [p["labels"] for p in points]
            line, = ax.plot(x, [p["mean"] for p in points], marker="o", ms=3, label=method)
            ax.fill_between(x, [p["min"] for p in points], [p["max"] for p in points],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("training labels")
        ax.set_ylabel("test AUC")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(figure)


def training_figure(scalars: dict[str, tuple[np.ndarray, np.ndarray]],
                    final: dict[str, float]) -> bytes:
    """Pre-training curves: losses, masked-event and contrastive accuracies.

    Masked-event accuracy per field is drawn against its majority class, quick-thought and
    slice accuracy against chance (both from the run's held-out evaluation, when it ran).

    Args:
        scalars: `read_scalars` of the run.
        final: `read_final_metrics` of the run.

    Returns:
        PNG bytes.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for tag in sorted(t for t in scalars if t == "loss" or t.endswith("/loss")
                      and t.count("/") == 1):
        axes[0].plot(*scalars[tag], label=tag)
    axes[0].set_title("losses", fontsize=10)
    accuracies = sorted(t for t in scalars if t.startswith("mlm/") and t.endswith("/accuracy"))
    for tag in accuracies:
        line, = axes[1].plot(*scalars[tag], label=tag.split("/")[1])
        majority = final.get(f"valid/{tag[:-len('accuracy')]}majority")
        if majority is not None:
            axes[1].axhline(majority, color=line.get_color(), linestyle="--", linewidth=0.8)
    axes[1].set_title("masked events: accuracy (dashed: majority class)", fontsize=10)
    for task in ("qt", "slice"):
        if f"{task}/accuracy" in scalars:
            line, = axes[2].plot(*scalars[f"{task}/accuracy"], label=f"{task} accuracy")
            chance = final.get(f"valid/{task}/chance")
            if chance is not None:
                axes[2].axhline(chance, color=line.get_color(), linestyle="--", linewidth=0.8)
    axes[2].set_title("in-batch contrastive accuracy (dashed: chance)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _png(figure)


def field_colours(sequences: Sequence[dict], field) -> tuple[Callable, list]:
    """A colour for every value of one field, shared by all the strips of a report.

    Categorical and text fields: the 10 most frequent values get their own colour, the
    rest grey. Numeric fields: deciles on a light-to-dark scale. Missing values are white.

    Args:
        sequences: sequence of dict. Examples (`reader.read_sequences`).
        field: Field. The schema field.

    Returns:
        `(colour_of, legend)`: value -> RGB, and `[(text, RGB)]` for a legend.
    """
    plt = _pyplot()
    name = seqex.field_feature(field.name)
    if field.kind == "numeric":
        values = np.concatenate([s[name] for s in sequences]).astype(np.float64)
        values = values[np.isfinite(values)]
        edges = np.quantile(values, np.linspace(0.1, 0.9, 9)) if len(values) else np.zeros(9)
        cmap = plt.get_cmap("viridis_r")

        def colour_of(value):
            if not np.isfinite(value):
                return _MISSING_COLOUR
            return cmap(int(np.searchsorted(edges, value, side="right")) / 9.0)[:3]

        return colour_of, [("lowest decile", cmap(0.0)[:3]), ("highest decile", cmap(1.0)[:3])]
    counts = Counter(v for s in sequences for v in s[name] if v != "")
    top = [v for v, _ in counts.most_common(10)]
    palette = {v: plt.get_cmap("tab10")(i)[:3] for i, v in enumerate(top)}
    legend = [(v if len(v) <= 22 else v[:21] + "...", palette[v]) for v in top]
    if len(counts) > len(top):
        legend.append(("other", _OTHER_COLOUR))
    return (lambda v: _MISSING_COLOUR if v == "" else palette.get(v, _OTHER_COLOUR)), legend


def strips_figure(rows: Sequence[tuple[str, dict]], fields: Sequence, colours: dict,
                  width: int = 60, title: str = "",
                  attributions: Sequence[np.ndarray] | None = None,
                  marked: Sequence[set] | None = None) -> bytes:
    """Compact event strips: one band per field for each user, one cell per event.

    The most recent event is on the right.

    Args:
        rows: `[(row title, example)]`, examples as `reader.read_sequences` yields them.
        fields: sequence of Field. The fields shown, one band each.
        colours: `{field name: field_colours(...)}`.
        width: int. Most recent events shown.
        title: str. Figure title.
        attributions: sequence of float arrays [length] or None. One more band per user:
            each event's attribution, red for positive and blue for negative, scaled to
            the user's largest.
        marked: sequence of sets of event indices or None. Events marked with a black
            dot on the attribution band (such as the planted ones).

    Returns:
        PNG bytes.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    bands = len(fields) + (attributions is not None)
    image = np.ones((len(rows) * (bands + 1), width, 3))
    dots = []
    for r, (_, example) in enumerate(rows):
        for b, field in enumerate(fields):
            colour_of = colours[field.name][0]
            values = example[seqex.field_feature(field.name)][-width:]
            for i, value in enumerate(values):
                image[r * (bands + 1) + b, width - len(values) + i] = colour_of(value)
        if attributions is not None:
            values = np.asarray(attributions[r], np.float64)
            scale = max(float(np.abs(values).max()) if len(values) else 0.0, 1e-12)
            shown = values[-width:]
            start = width - len(shown)
            image[r * (bands + 1) + bands - 1, start:] = plt.get_cmap("bwr")(
                0.5 + 0.5 * shown / scale)[:, :3]
            offset = len(values) - len(shown)
            dots += [(start + i - offset, r * (bands + 1) + bands - 1)
                     for i in sorted((marked or [set()] * len(rows))[r]) if i >= offset]
    figure, ax = plt.subplots(figsize=(9.5, 0.3 * len(rows) * (bands + 1) + 0.9))
    ax.imshow(image, aspect="auto", interpolation="nearest")
    if dots:
        ax.scatter(*zip(*dots, strict=True), s=8, c="black", marker="o")
    ax.set_yticks([r * (bands + 1) + (bands - 1) / 2 for r in range(len(rows))])
    ax.set_yticklabels([name for name, _ in rows], fontsize=7)
    ax.set_xticks([0, width - 1])
    ax.set_xticklabels([f"{width} events ago", "latest"], fontsize=7)
    handles = [Patch(color=c, label=f"{field.name}: {text}") for field in fields
               for text, c in colours[field.name][1]]
    if attributions is not None:
        handles += [Patch(color=plt.get_cmap("bwr")(1.0)[:3], label="attribution: raises"),
                    Patch(color=plt.get_cmap("bwr")(0.0)[:3], label="attribution: lowers")]
    ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or "bands: " + ", ".join(f.name for f in fields), fontsize=9)
    return _png(figure)
