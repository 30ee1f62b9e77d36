"""The baseline: Mask R-CNN with softmax cross-entropy and uniform image sampling.

It changes nothing; registering it makes "baseline" a built method like any other."""

from __future__ import annotations

from fasa_cli.methods.api import register_method


@register_method("baseline", table="1,2,4", summary="Mask R-CNN, softmax cross-entropy, uniform image sampling")
def baseline(edit, args) -> None:
    """No change to the run."""
