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
