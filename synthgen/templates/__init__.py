"""The shape-template bank: build one from a TotalSegmentator download, label maps or both, use the
procedural default bank, read templates fast, summarise and preview a bank.

Public API (imported lazily, so build worker processes do not import torch):

    open_bank(path, fingerprint=None) -> TemplateBank
    build_from_totalsegmentator(src_dir, out, spacing=1.5, workers=None, progress=True) -> BuildReport
    build_from_label_maps(src_dir, out, spacing=None, workers=None, progress=True) -> BuildReport
    build_from_sources(out, {"totalsegmentator": dir, "label-maps": dir}, spacing=1.5, ...) -> BuildReport
    default_bank() -> TemplateBank
    resolve_bank(name, fingerprint=None) -> TemplateBank     # "default" or a path
    summarize_bank(bank) -> str
    render_bank_preview(bank, out_png, count=48) -> str
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TemplateBank": "bank", "TemplateEntry": "bank", "TemplateIndex": "bank", "open_bank": "bank",
    "BuildReport": "build", "build_from_totalsegmentator": "build", "build_from_label_maps": "build",
    "build_from_sources": "build",
    "default_bank": "default", "resolve_bank": "default", "DEFAULT_BANK_NAME": "default",
    "summarize_bank": "summary", "render_bank_preview": "summary",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'synthgen.templates' has no attribute {name!r}")
    return getattr(importlib.import_module(f"synthgen.templates.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
