"""Tolerances: how close two outputs must be to count as the same."""

from __future__ import annotations

from dataclasses import dataclass

from modelport.errors import ConfigError

__all__ = ["EXACT", "SignalTolerance", "Tolerance"]


@dataclass(frozen=True)
class Tolerance:
    """Elementwise bound ``|a - b| <= atol + rtol * |b|`` where ``b`` is the reference."""

    atol: float
    rtol: float

    def __post_init__(self) -> None:
        if self.atol < 0 or self.rtol < 0:
            raise ConfigError(f"tolerances must be >= 0, got atol={self.atol}, rtol={self.rtol}")

    def __add__(self, other: Tolerance) -> Tolerance:
        return Tolerance(self.atol + other.atol, self.rtol + other.rtol)

    def __str__(self) -> str:
        return f"atol={self.atol:g}, rtol={self.rtol:g}"


#: Pure rewiring must not change a single bit.
EXACT = Tolerance(0.0, 0.0)


@dataclass(frozen=True)
class SignalTolerance:
    """Floor for lossy transforms (quantization): output SQNR in dB and cosine similarity.

    Elementwise bounds make no sense for INT8; what must hold is that the signal stays well
    above the quantization noise on every output.
    """

    min_sqnr_db: float
    min_cosine: float

    def check(self, sqnr_db: float, cosine: float) -> str | None:
        """Why the output fails the floor (None when it passes)."""
        if not sqnr_db >= self.min_sqnr_db:
            return f"SQNR {sqnr_db:.1f} dB < {self.min_sqnr_db:g} dB"
        if not cosine >= self.min_cosine:
            return f"cosine {cosine:.5f} < {self.min_cosine:g}"
        return None

    def __str__(self) -> str:
        return f"SQNR >= {self.min_sqnr_db:g} dB, cosine >= {self.min_cosine:g}"
