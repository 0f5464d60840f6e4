"""Byte-reproducible files: the same content gives the same bytes, whenever and wherever it is written.

`deterministic_zip(entries)`: a zip whose entries carry one fixed date and mode.
`reproducible_xlsx(rows)`: a one-sheet workbook; openpyxl stamps the save time into docProps/core.xml and
into its own zip entries, so both are replaced by the fixed date. Every text is stored as text, also one
that starts like a formula (a picture named `=1+1.png`). The demo's score workbooks and the
submission's prediction.xlsx are both written here.
"""
from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Sequence

FIXED_DATE = (2020, 1, 1, 0, 0, 0)
#: what starts a formula in a spreadsheet: a cell text beginning so is stored as text, never as a formula
FORMULA_STARTS = ("=", "+", "-", "@")
_FIXED_STAMP = "%04d-%02d-%02dT%02d:%02d:%02dZ" % FIXED_DATE


def deterministic_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries.items():
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, payload)
    return buffer.getvalue()


def reproducible_xlsx(rows: Iterable[Sequence]) -> bytes:
    """A workbook whose one sheet holds `rows` (the first is usually the header), as bytes."""
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(list(row))
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str) and cell.value.startswith(FORMULA_STARTS):
                cell.data_type = "s"  # openpyxl takes a text starting with '=' as a formula: keep it text
    raw = io.BytesIO()
    workbook.save(raw)
    entries = {}
    with zipfile.ZipFile(io.BytesIO(raw.getvalue())) as saved:
        for info in saved.infolist():
            payload = saved.read(info.filename)
            if info.filename == "docProps/core.xml":
                payload = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)",
                                 rb"\g<1>" + _FIXED_STAMP.encode() + rb"\g<3>", payload)
            entries[info.filename] = payload
    return deterministic_zip(entries)
