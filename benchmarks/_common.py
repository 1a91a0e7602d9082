"""Shared helpers of the benchmark scripts."""
import json
import os


def report(result, out=None):
    """Print the result as JSON and save it to ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as fh:
            fh.write(text)
