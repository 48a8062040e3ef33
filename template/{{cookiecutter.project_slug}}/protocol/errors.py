"""Run protocol, rarely edited: how a run ends other than by finishing.

The bottom of the project's imports: every other module may raise or catch
these, and this one imports nothing of the project.
"""


class RunInterrupted(Exception):
    """Raised by a training loop that saved a checkpoint and stopped because a signal asked it to."""


class RunDiverged(Exception):
    """Raised by a training loop whose loss stopped being a finite number."""


class RunPruned(Exception):
    """Raised when a search's pruner stops a trial whose epochs fall behind the others': a final state."""


class MetricMissing(LookupError):
    """Raised when a search optimises a metric the run's epochs do not report: the search stops."""


class CheckpointUnusable(Exception):
    """Raised when a run cannot resume from its ``last`` checkpoint: unreadable, or of another model."""


class OtherWorldSize(CheckpointUnusable):
    """Raised when the ``last`` checkpoint was written by a run over another number of processes.

    Each rank's share of the data, and so where it stopped, follows from the world
    size: on another, the run would not continue where it stopped. Refused, the run
    keeps its flag and resumes when launched again on the number it was trained on.
    """
