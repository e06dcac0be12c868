"""Defaults that many configs, commands and schemas share, in one place that imports nothing heavy.

The configs read them at class definition; a command's ``--help`` shows them without importing torch.
"""

#: Device when nobody says: CUDA when present, else the CPU (every config and command defaults to it).
DEFAULT_DEVICE = "auto"
#: Autocast when nobody says: bf16 on CUDA or a CPU with fast bf16, else none.
DEFAULT_PRECISION = "auto"

#: Neighbours per chunk when nobody says otherwise: the paper trains RETRO with k = 2 (and evaluates with up to
#: 10 or 40; docs/fidelity.md says why burrow evaluates with 2).
#: Every config, CLI option and request schema reads this one value.
DEFAULT_K = 2
#: Neighbours retrieved once per query and cached; any k ≤ K_MAX is a slice (the leakage analysis of
#: RETRO §2.6 uses 10).
K_MAX = 10
