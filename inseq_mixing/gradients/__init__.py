"""Measures computed by differentiating the model rather than from its per-layer records: hidden token attribution
(HTA) and gradient-weighted attention rollout."""

from __future__ import annotations

from .hta import HiddenTokenAttribution, hidden_token_attribution, hta

__all__ = ["HiddenTokenAttribution", "hidden_token_attribution", "hta"]
