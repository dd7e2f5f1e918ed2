"""Markdown helpers shared by the build report, the bench report and the benchmarks."""


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table; cells are rendered with ``str``.

    Example:
        >>> print(markdown_table(["a", "b"], [[1, 2]]))
        | a | b |
        |---|---|
        | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(value) -> str:
    """A percentage with two decimals, or "-" where there is none.

    Example:
        >>> percent(99.7222), percent(None)
        ('99.72', '-')
    """
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def cost_table(cost: dict, zeros: int = 0) -> str:
    """Multiply-adds and parameters of teacher and student (``cost``: ``{"teacher": {macs, params}, "student":
    ...}``), the student's as a ratio of the teacher's too, and how many of its parameters are ``zeros``
    (magnitude pruning's: stored, and computed by dense runtimes)."""
    t, s = cost["teacher"], cost["student"]
    zero = f"; {zeros:,} of them zero" if zeros else ""
    return markdown_table(["model", "multiply-adds (batch 1)", "parameters"],
                          [["teacher", f"{t['macs']:,}", f"{t['params']:,}"],
                           ["student", f"{s['macs']:,} ({s['macs'] / t['macs']:.2f}x)",
                            f"{s['params']:,} ({s['params'] / t['params']:.2f}x{zero})"]])
