"""lm-eval's own command line with burrow's model registered: ``python -m burrow.tasks.harness``.

lm-eval 0.4.13 finds models only in its registry, filled from its own ``MODEL_MAPPING`` when
``lm_eval.models`` is imported; it has no entry-point group for models from other packages. So
``lm_eval --model burrow`` cannot work from the bare ``lm_eval`` script; this module registers
``burrow`` and then runs lm-eval's unchanged CLI (every lm-eval option works as documented):

    burrow tasks configs -o cfg                                   # the offline task configs
    python -m burrow.tasks.harness run --model burrow --model_args run=runs/retro,memory=mem,mode=on \\
        --tasks burrow_arc_easy --include_path cfg --limit 50
"""

from __future__ import annotations

from burrow.tasks.models import register


def main() -> None:
    """Register burrow's model, then hand over to lm-eval's CLI."""
    from lm_eval.__main__ import cli_evaluate

    register()
    cli_evaluate()


if __name__ == "__main__":
    main()
