"""``python -m cryoflex_scipion.engine <command> [options]``."""
import argparse
import importlib
import sys

from .commands import COMMANDS


def _describe(module_name):
    doc = importlib.import_module(module_name).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cryoflex_scipion.engine",
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
    return modules[args.command].main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
