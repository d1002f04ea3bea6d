"""Tables that fit the terminal without cutting a number: too wide, they split into stacked tables by columns.

Every cell stays whole (no_wrap); the key columns (run, weights) repeat in each part so that a row is still read
across parts. At 80 columns a table of six runs and nine metrics becomes two or three parts, never `61…`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    header: str
    left: bool = False  # text columns are left-aligned, numbers right-aligned


def print_table(console: Any, *, title: str, keys: Sequence[Column], values: Sequence[Column],
                rows: Sequence[Sequence[str]], caption: str | None = None, sections: Sequence[int] = ()) -> None:
    """Print `rows` (key cells then value cells) as one table, or as several with the keys repeated.

    `sections`: row indices before which a rule is drawn (aggregates under the single runs).
    """
    parts = _parts(console, title, keys, values, rows, sections)
    for number, columns in enumerate(parts):
        part_title = title if len(parts) == 1 else f"{title} ({number + 1}/{len(parts)})"
        console.print(_table(part_title, keys, columns, rows, sections, values))
    if caption:  # below the last part, at the terminal's width rather than squeezed under a narrow table
        console.print(caption, markup=False, highlight=False)


def _parts(console: Any, title: str, keys: Sequence[Column], values: Sequence[Column],
           rows: Sequence[Sequence[str]], sections: Sequence[int]) -> list[list[Column]]:
    """Greedy: as many value columns per part as fit the console's width (at least one per part)."""
    parts: list[list[Column]] = [[]]
    for column in values:
        trial = [*parts[-1], column]
        if parts[-1] and _width(console, _table(title, keys, trial, rows, sections, values)) > console.width:
            parts.append([column])
        else:
            parts[-1] = trial
    return parts


def _width(console: Any, table: Any) -> int:
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(100_000), table).maximum  # unclamped


def _table(title: str, keys: Sequence[Column], columns: Sequence[Column], rows: Sequence[Sequence[str]],
           sections: Sequence[int], values: Sequence[Column]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in [*keys, *columns]:
        table.add_column(column.header, justify="left" if column.left else "right", no_wrap=True)
    picks = [len(keys) + values.index(column) for column in columns]
    for index, row in enumerate(rows):
        if index in sections:
            table.add_section()
        table.add_row(*row[:len(keys)], *(row[pick] for pick in picks))
    return table
