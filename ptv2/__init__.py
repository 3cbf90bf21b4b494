"""ptv2: P-Tuning v2 experiment runner."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["MixedPromptPredictor", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import ptv2` (the CLIs' --version, tools reading __version__) does not import torch.
    if name == "MixedPromptPredictor":
        from ptv2.mixed import MixedPromptPredictor

        return MixedPromptPredictor
    raise AttributeError(f"module 'ptv2' has no attribute {name!r}")
