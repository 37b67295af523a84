"""Markdown text that names user-supplied things (labels, categories, folders) safely."""

from __future__ import annotations


def md_escape(text) -> str:
    """A name safe inside a Markdown table cell: ``|`` would end the cell, ``<``/``>`` open HTML."""
    text = " ".join(str(text).splitlines())
    for char, escaped in (
        ("\\", "\\\\"),
        ("&", "&amp;"),
        ("|", "\\|"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("](", "\\]("),
        ("`", "\\`"),
    ):
        text = text.replace(char, escaped)
    return text


def metric_title(metric: str) -> str:
    """``pixel_AUROC`` -> ``pixel AUROC``."""
    return metric.replace("_", " ")
