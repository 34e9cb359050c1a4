"""Other frameworks: the kit's SFT term and critic inside TRL's GRPOTrainer.
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
