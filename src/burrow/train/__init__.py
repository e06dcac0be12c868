"""Training: baseline and RETRO on the same chunk-aligned sequences, with resumable, atomic runs.

    from pathlib import Path
    from burrow.train import TrainConfig, train, load_run
    result = train(TrainConfig(model="retro-cpu-small", memory=Path("mem"), out=Path("runs/retro"), steps=500))
    model = load_run("runs/retro")                         # RUN/final (or its newest checkpoint)
"""

from typing import TYPE_CHECKING

from burrow.lazy import lazy_exports

if TYPE_CHECKING:
    from burrow.train.config import TrainConfig, resolve_model_config
    from burrow.train.distributed import train  # one process, or DDP / FSDP2 under torchrun
    from burrow.train.loop import TrainResult, evaluate_loss, load_run, train_step

__all__ = ["TrainConfig", "TrainResult", "evaluate_loss", "load_run", "resolve_model_config", "train", "train_step"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "config": ["TrainConfig", "resolve_model_config"],
    "distributed": ["train"],
    "loop": ["TrainResult", "evaluate_loss", "load_run", "train_step"],
})
