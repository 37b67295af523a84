"""Whether this CPU runs bfloat16 natively, detected rather than assumed.

``precision: bf16`` on a model entry only pays where the CPU has bf16 instructions
(AVX512_BF16, or AMX tiles on Sapphire Rapids and later Xeons). Elsewhere (for
example AMD EPYC before Zen 4, or Intel before Cooper Lake) oneDNN emulates bf16
with fp32 arithmetic plus conversions, which is slower than fp32 and still loses
precision; adrun then keeps fp32 and says so in the record.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PRECISIONS = ("fp32", "bf16")
_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_bf16() -> tuple[bool, str]:
    """(True, which instructions) where bf16 matmuls run natively on this CPU, else (False, why not)."""
    import torch

    found = []
    cpu = getattr(torch, "cpu", None)
    for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported")):
        check = getattr(cpu, probe, None)
        try:
            if check is not None and check():
                found.append(name)
        except Exception:  # a private probe that misbehaves counts as absent
            pass
    if not found:
        found = [flag for flag in _FLAGS if flag in cpu_flags()]
    if found:
        return True, "+".join(found)
    return False, "this CPU has no avx512_bf16 or amx_bf16 instructions"


def resolve(asked: str) -> dict[str, str]:
    """The precision a cell runs at: ``asked``, or fp32 where bf16 is not native."""
    if asked not in PRECISIONS:
        raise ValueError(f"unknown precision {asked!r}; choose one of {', '.join(PRECISIONS)}")
    if asked == "fp32":
        return {"asked": "fp32", "used": "fp32", "note": "exact path"}
    native, why = native_bf16()
    if native:
        return {"asked": "bf16", "used": "bf16", "note": f"native bf16 ({why})"}
    return {"asked": "bf16", "used": "fp32", "note": f"bf16 asked, fp32 used: {why}"}


def ask_for_huge_pages() -> None:
    """Have torch's CPU allocator ask for transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``).

    With it, torch madvises THP for its blocks of 2 MB and more. A memory-bank model
    allocates ~100 MB blocks per batch and per search chunk; with 4 KB pages the kernel
    faults every page in: 5.7M faults and a quarter of the CPU time for 48 batches of
    wide_resnet50_2, 0.6M with huge pages (measured on this project's machine). Linux only;
    a value the user set is kept (``THP_MEM_ALLOC_ENABLE=0`` turns it off), and where the
    kernel's THP is "never" it changes nothing. torch reads it once, at import: call this
    before importing torch.
    """
    if sys.platform.startswith("linux"):
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
