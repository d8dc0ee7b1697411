"""Connection importance of the trained dense network (dissertation §7.4.1).

Each metric scores a connection from its initial weight ``w_i`` and its weight ``w_f`` after
training the dense network; in every layer the highest scores are kept.  The first three are
Zhou et al.'s ("Deconstructing Lottery Tickets"); the last two are the dissertation's hybrids
of *distance from 0* and *moving away from 0*.  The dissertation's Figure 7.6 with their
formulas is not in the text we have, so the two hybrid formulas below are OUR READING:
the movement-type score weighted by the final magnitude.
"""

from __future__ import annotations

import torch


def magnitude(w_i: torch.Tensor, w_f: torch.Tensor) -> torch.Tensor:
    """|w_f|: far from 0 after training."""
    return w_f.abs()


def movement(w_i: torch.Tensor, w_f: torch.Tensor) -> torch.Tensor:
    """|w_f − w_i|: moved far during training (sign changes count fully)."""
    return (w_f - w_i).abs()


def magnitude_increase(w_i: torch.Tensor, w_f: torch.Tensor) -> torch.Tensor:
    """|w_f| − |w_i|: moved away from 0."""
    return w_f.abs() - w_i.abs()


def weighted_movement(w_i: torch.Tensor, w_f: torch.Tensor) -> torch.Tensor:
    """|w_f| · |w_f − w_i| (our reading of the dissertation's hybrid)."""
    return w_f.abs() * (w_f - w_i).abs()


def weighted_magnitude_increase(w_i: torch.Tensor, w_f: torch.Tensor) -> torch.Tensor:
    """|w_f| · (|w_f| − |w_i|) (our reading of the dissertation's hybrid)."""
    return w_f.abs() * (w_f.abs() - w_i.abs())


METRICS = {
    "magnitude": magnitude,
    "movement": movement,
    "magnitude_increase": magnitude_increase,
    "weighted_movement": weighted_movement,
    "weighted_magnitude_increase": weighted_magnitude_increase,
}
