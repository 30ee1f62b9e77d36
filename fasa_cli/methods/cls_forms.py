"""Classification forms of methods registered for detection (Table 7).

  baseline  softmax cross-entropy with a linear classifier, uniform sampling: the host's default
  chu       Chu et al.'s plug-in (fasa_cli/methods/chu.py, unchanged) hosted on the classifier:
            its ClassifierBatch holds the pooled features of the batch's images (all positives,
            no background), fc_cls and the run's loss. CIFAR images give no RoI-level
            confusion: the confusing classes come from the same running mean softmax score per
            class. `freeze_in_phase_two` trains only fc_cls in phase II, as Chu's phase II does.
"""

from __future__ import annotations

from fasa_cli.methods import baseline as _baseline  # noqa: F401  (registers "baseline" first)
from fasa_cli.methods import chu as _chu  # noqa: F401  (registers "chu" first)
from fasa_cli.methods.api import add_task_form

add_task_form("baseline", "classification",
              changes=("nothing (softmax cross-entropy, linear classifier, uniform sampling)",))
add_task_form("chu", "classification", edit=_chu.Chu.edit_run,
              changes=("classifier loss: fused tail features (classifier plug-in)",
                       "optional second stage: only fc_cls trains in phase II"))
