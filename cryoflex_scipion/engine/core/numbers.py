"""Lists of numbers as users write them: ``'7-9, 12'`` (mode numbers, frames, GPU ids...)."""

__all__ = ["parse_number_list", "parse_origin"]


def parse_number_list(text, what="list"):
    """``'7-9, 12'`` -> ``[7, 8, 9, 12]``; None or blank -> None.

    Raises ValueError naming ``what`` for anything else than integers and ascending ``a-b`` ranges,
    or a number given twice, so that every command and protocol refuses the same inputs the same way.
    """
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        a, dash, b = part.partition("-")
        try:
            first, last = int(a), (int(b) if dash else int(a))
        except ValueError:
            raise ValueError("%s %r: use numbers and ranges such as '7-9,12'" % (what, text)) from None
        if last < first:
            raise ValueError("%s %r: range %s is reversed, write %d-%d" % (what, text, part, last, first))
        out.extend(range(first, last + 1))
    if not out:
        raise ValueError("%s %r names no number" % (what, text))
    if len(set(out)) != len(out):
        raise ValueError("%s %r names a number twice" % (what, text))
    return out


def parse_origin(text, what="--origin"):
    """``'x,y,z'`` (A) -> a tuple of three finite floats; None or blank -> None.  Raises ValueError naming
    ``what`` otherwise."""
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(abs(v) < float("inf") for v in values):
        raise ValueError("%s %r: give three numbers x,y,z in A" % (what, text))
    return values
