"""What people see: the playground's widgets and controls, plots, the run list, a run's output files.
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
