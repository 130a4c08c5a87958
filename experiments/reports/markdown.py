"""Markdown tables: the one renderer of the run and study reports."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """A Markdown table: the header, its rule, one line per row of cells.

  Example:
    >>> print(table(["a", "b"], [["1", "2"], ["3", "4"]]))
    | a | b |
    | --- | --- |
    | 1 | 2 |
    | 3 | 4 |
  """
  lines = [_line(header), _line(["---"] * len(header))]
  lines += [_line(cells) for cells in rows]
  return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
  return "| " + " | ".join(cells) + " |"
