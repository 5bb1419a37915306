"""ActNorm: per-channel affine with data-dependent initialisation (Glow).

Why: it normalises activations at the start of training without batch statistics at test time. The
``initialized`` flag is a buffer, so weights loaded from a checkpoint are marked initialised automatically.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import FlowLayer, check_4d


class ActNorm(FlowLayer):
    """y = (x + bias) · exp(log_scale), per channel; log-det = H·W·Σ log_scale."""

    def __init__(self, channels: int, init_eps: float = 1e-6):
        super().__init__()
        self.channels = channels
        self.init_eps = init_eps
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        # a Python copy of ``initialized`` once it has been read as True: later training steps do not read the
        # buffer (a tensor → bool sync, and a graph break under torch.compile); loading a state dict resets it
        self._known_initialized = False

    def mark_initialized(self) -> None:
        """Skip data-dependent initialisation (e.g. after loading weights by hand)."""
        self.initialized.fill_(True)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._known_initialized = False  # the loaded ``initialized`` decides again
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def initialize_from(self, x: Tensor) -> None:
        """Set bias/scale so that this batch leaves the layer with zero mean and unit variance per channel."""
        flat = x.transpose(0, 1).reshape(self.channels, -1)
        mean = flat.mean(dim=1)
        std = flat.std(dim=1, unbiased=False)
        self.bias.copy_((-mean).view(1, -1, 1, 1))
        self.log_scale.copy_(torch.log(1.0 / (std + self.init_eps)).view(1, -1, 1, 1))
        self.initialized.fill_(True)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_4d("ActNorm input", x, self.channels)
        if self.training and not self._known_initialized:
            if not bool(self.initialized):
                self.initialize_from(x)
            self._known_initialized = True
        y = (x + self.bias) * torch.exp(self.log_scale)
        logdet = self.log_scale.sum() * (x.shape[2] * x.shape[3])
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        check_4d("ActNorm input", y, self.channels)
        return y * torch.exp(-self.log_scale) - self.bias
