"""``python -m cryoflex_scipion.engine <command> [options]``.

Every problem with the user's input ends here as one ``ERROR:`` line on stderr and exit status 2: argparse's
own errors, the option rules of :mod:`.core.validate` (checked before any command starts), and any
:class:`~.core.errors.EngineInputError` or unreadable file a command meets later.
"""
import argparse
import importlib
import sys

from .commands import COMMANDS
from .core import validate
from .core.errors import EngineInputError


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (sub-commands inherit the class)."""

    def error(self, message):
        print("ERROR: %s: %s (see %s --help)" % (self.prog, message, self.prog), file=sys.stderr, flush=True)
        sys.exit(2)


def _describe(module_name):
    doc = importlib.import_module(module_name).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _input_error(message):
    print("ERROR: %s" % " ".join(str(message).split()), file=sys.stderr, flush=True)
    return 2


def main(argv=None):
    parser = _Parser(prog="python -m cryoflex_scipion.engine",
                     description="CryoFlex engine (numpy/torch, no Scipion needed).")
    sub = parser.add_subparsers(dest="command", metavar="command")
    modules = {}
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        p = sub.add_parser(name, help=_describe(module_name), description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_args(p)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # commands that start worker processes repeat their own command line
    if args.command is None:
        parser.print_help()
        return 1
    try:
        validate.check_options(args)
        return modules[args.command].main(args) or 0
    except EngineInputError as exc:
        return _input_error(exc)
    except OSError as exc:  # an input that cannot be read, an output that cannot be written
        where = " ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        return _input_error("%s%s" % (exc.strerror or exc, (": " + where) if where else ""))


if __name__ == "__main__":
    sys.exit(main())
