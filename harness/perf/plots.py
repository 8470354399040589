"""Performance plots as PNG bytes: latency CDFs and a throughput bar chart.

Uses matplotlib's object API with the Agg canvas directly, so it neither needs a
display nor switches the backend of a program that imports it.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator, Mapping, Sequence

import numpy as np


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


#: font families that carry Chinese glyphs, in order of preference
CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "SimHei", "Microsoft YaHei", "PingFang SC", "Noto Serif CJK SC")


@functools.cache
def cjk_font() -> str | None:
    """An installed font family with Chinese glyphs, or None."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def bilingual(english: str, chinese: str) -> str:
    """A bilingual axis label when a Chinese font is installed, else English alone."""
    return f"{english} / {chinese}" if cjk_font() else english


@contextlib.contextmanager
def _fonts() -> Iterator[None]:
    import matplotlib

    family = cjk_font()
    settings = {"font.family": ["sans-serif"],
                "font.sans-serif": [family, "DejaVu Sans"]} if family else {}
    with matplotlib.rc_context(settings):
        yield


def _png(figure: object) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


def latency_cdf(title: str, curves: Mapping[str, np.ndarray]) -> bytes:
    """One CDF curve per label, from latency samples in nanoseconds."""
    with _fonts():
        return _latency_cdf(title, curves)


def _latency_cdf(title: str, curves: Mapping[str, np.ndarray]) -> bytes:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.2), dpi=100)
    axes = figure.add_subplot()
    low, high = np.inf, 0.0
    for label, samples in curves.items():
        values = np.sort(np.asarray(samples, dtype=np.float64)) / 1e6
        if values.size == 0:
            continue
        fraction = np.arange(1, values.size + 1) / values.size
        axes.step(values, fraction, where="post", label=f"{label} (n={values.size})")
        low, high = min(low, values[0]), max(high, values[-1])
    if high > 0 and high / max(low, 1e-9) > 20:
        axes.set_xscale("log")
    for level in (0.5, 0.9, 0.99):
        axes.axhline(level, color="0.8", linewidth=0.8, zorder=0)
    axes.set_xlabel(bilingual("latency (ms)", "延迟 (毫秒)"))
    axes.set_ylabel(bilingual("fraction of queries", "查询比例"))
    axes.set_ylim(0, 1.01)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return _png(figure)


def throughput_bars(title: str, groups: Sequence[str], series: Mapping[str, Sequence[float]]
                    ) -> bytes:
    """Grouped bars: one group per model, one bar per target (NaN = not measured)."""
    with _fonts():
        return _throughput_bars(title, groups, series)


def _throughput_bars(title: str, groups: Sequence[str], series: Mapping[str, Sequence[float]]
                     ) -> bytes:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.2), dpi=100)
    axes = figure.add_subplot()
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(groups))
    for i, (label, values) in enumerate(series.items()):
        bars = axes.bar(positions + i * width - 0.4 + width / 2, values, width, label=label)
        axes.bar_label(bars, fmt="%.0f", fontsize="x-small", padding=2)
    finite = [v for values in series.values() for v in values if np.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 20:  # models far apart: a log axis
        axes.set_yscale("log")
        axes.set_ylim(min(finite) / 2, max(finite) * 8)
    elif finite:
        axes.set_ylim(0, max(finite) * 1.25)  # room for the labels and the legend
    axes.set_xticks(positions, list(groups))
    axes.set_ylabel(bilingual("samples/s", "样本/秒"))
    axes.set_title(title)
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    return _png(figure)
