"""Command-line glue of the engine: the options every command shares and ``fail``.

Run-time services (progress, logging, batching, devices, summaries) live in
:mod:`.core.runtime`; library modules import them from there, never from here.
"""
import sys

from .core import runtime

__all__ = ["add_common_args", "fail", "select_device", "gpu_ids"]


def fail(msg):
    """Stop with a clear one-line message (exit status 2) instead of a traceback."""
    print("ERROR: %s" % " ".join(str(msg).split("\n")), file=sys.stderr, flush=True)
    sys.exit(2)


def add_common_args(parser, batch_size=64):
    g = parser.add_argument_group("execution")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to compute; auto = the first visible GPU if any (default: auto)")
    g.add_argument("--batch-size", type=int, default=batch_size,
                   help="items per batch; halved automatically when the GPU runs out of memory "
                        "(default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    return g


def select_device(name, threads=0):
    """:func:`.core.runtime.select_device`, failing with a message."""
    try:
        return runtime.select_device(name, threads)
    except runtime.EngineInputError as exc:
        fail(str(exc))


def gpu_ids(spec):
    """:func:`.core.runtime.gpu_ids`, failing with a message."""
    try:
        return runtime.gpu_ids(spec)
    except runtime.EngineInputError as exc:
        fail(str(exc))
