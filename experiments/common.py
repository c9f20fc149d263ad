"""What every experiment entry point does before calling the library."""

import os

from absl import flags, logging

from jaxcnn import train


def quiet_logging() -> None:
    """Orbax logs each save at INFO; show warnings only unless --verbosity was given."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def maybe_initialize_distributed() -> None:
    """Join a multi-process run when launch.sh (local-multi, slurm, tpu) asked for one."""
    if "JAXCNN_COORDINATOR" in os.environ:
        train.initialize_distributed(
            os.environ["JAXCNN_COORDINATOR"], int(os.environ["JAXCNN_NUM_PROCESSES"]),
            int(os.environ["JAXCNN_PROCESS_ID"]))
    elif os.environ.get("JAXCNN_DISTRIBUTED") == "1":
        train.initialize_distributed()
