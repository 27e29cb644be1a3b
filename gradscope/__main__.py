"""``python -m gradscope ...``: the same command line as ``gradscope ...`` (for torchrun: ``torchrun
--nproc_per_node 2 -m gradscope run train.py``)."""
from gradscope.cli import main

if __name__ == "__main__":  # pragma: no cover - run as a program
    main(prog_name="gradscope")
