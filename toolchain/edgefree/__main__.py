"""``python -m edgefree``: the ``edgefree`` command, as torchrun runs it (``torchrun ... -m edgefree build``).

``record`` writes an uncaught error to torchrun's error file, so torchrun names the failed rank and its error.
"""

from torch.distributed.elastic.multiprocessing.errors import record

from edgefree.cli import cli, main

if __name__ == "__main__":
    main(record(cli))
