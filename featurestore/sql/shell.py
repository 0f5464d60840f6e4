"""`siqa sql` without a query: a small interactive DuckDB shell over the store's views (`featurestore.sql`).

Statements may span lines and run when a line ends with `;`. Dot commands:
    .tables           views and table macros ready to query
    .schema NAME      columns of one view
    .help             this list
    .quit / .exit     leave (so does end of input or Ctrl-D)
Only reads run, on the same sandboxed connection as `siqa sql QUERY` (`featurestore.sql.user_connection`);
any other statement is refused with one line and the shell goes on. `siqa sql .tables` runs one dot command.
Ctrl-C drops the statement being typed. With a terminal, lines are edited and kept in a readline
history file (`$SIQA_SQL_HISTORY`, default ~/.siqa_sql_history); fed from a pipe, the shell prints no
prompts, so `siqa sql < questions.sql` works as a script.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import duckdb
import pandas as pd

from ..errors import SiqaError
from . import Extension, error_line, quote_identifier, read_statements, user_connection

PROMPT, CONTINUE = "siqa> ", "  ..> "
MAX_ROWS = 200
HELP = """.tables           views and table macros
.schema NAME      columns of a view
.help             this list
.quit             leave
SQL ends with ';' and may span lines. Try: SELECT * FROM feature_srocc LIMIT 10;"""


def _history_path() -> Path:
    return Path(os.environ.get("SIQA_SQL_HISTORY") or Path.home() / ".siqa_sql_history")


def _setup_readline():
    """Line editing and history for a terminal; None where readline is unavailable (it is optional)."""
    try:
        import readline
    except ImportError:
        return None
    path = _history_path()
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(2000)
    return readline


def _tables(con: duckdb.DuckDBPyConnection) -> str:
    views = [r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall()]
    macros = [f"{name}({', '.join(params)})" for name, params in con.execute(
        "SELECT function_name, parameters FROM duckdb_functions() "
        "WHERE function_type = 'table_macro' AND NOT internal ORDER BY function_name").fetchall()]
    return "\n".join(["views: " + ", ".join(views), "macros: " + (", ".join(macros) or "-")])


def _format(df: pd.DataFrame) -> str:
    with pd.option_context("display.max_rows", MAX_ROWS, "display.min_rows", 20,
                           "display.max_columns", 50, "display.width", 200):
        text = df.to_string(index=False, max_rows=MAX_ROWS) if len(df.columns) else "(no columns)"
    return f"{text}\n({len(df)} row{'s' if len(df) != 1 else ''})"


def run_statements(con: duckdb.DuckDBPyConnection, text: str, out: TextIO) -> bool:
    """Run every statement of `text`, printing each result; an error is printed and ends this text only.
    Returns whether every statement ran."""
    try:
        statements = read_statements(text)
        for statement in statements:
            con.execute(statement)
            if con.description is not None:
                print(_format(con.fetchdf()), file=out)
    except duckdb.PermissionException as exc:
        print(f"error: {error_line(exc)}", file=out)
        return False
    except duckdb.Error as exc:
        print(f"error: {str(exc).strip()}", file=out)
        return False
    except SiqaError as exc:
        print(f"error: {exc}", file=out)
        return False
    except KeyboardInterrupt:  # Ctrl-C during a long query stops the query, not the shell
        print("interrupted", file=out)
        return False
    return True


def _dot_command(con: duckdb.DuckDBPyConnection, line: str, out: TextIO) -> bool | None:
    """Handle one dot command: None when the shell should end, else whether the command ran (a failed one
    counts like a failed statement, so a script or a one-shot `siqa sql .cmd` exits non-zero)."""
    word, _, arg = line.partition(" ")
    if word in (".quit", ".exit", ".q"):
        return None
    if word == ".tables":
        print(_tables(con), file=out)
    elif word == ".schema":
        if not arg.strip():
            print("error: usage: .schema NAME (.tables lists the names)", file=out)
            return False
        return run_statements(con, f"DESCRIBE {quote_identifier(arg.strip())};", out)
    elif word == ".help":
        print(HELP, file=out)
    else:
        print(f"error: unknown command {line!r}; .help lists them", file=out)
        return False
    return True


def interactive(root: str | Path, stdin: TextIO | None = None, out: TextIO | None = None,
                extensions: Iterable[Extension] = (), readable: Iterable[str | Path] = ()) -> int:
    """Read statements until `.quit` or end of input and print their results; `extensions` as for `connect`,
    `readable` as for `user_connection`. Returns how many statements failed (a script fed from a pipe exits
    non-zero on that)."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    con = user_connection(root, extensions=extensions, readable=readable)
    tty = stdin.isatty() and stdin is sys.stdin
    readline = _setup_readline() if tty else None
    if tty:
        print(f"siqa sql on {root} - {_tables(con)}\n.help for commands; statements end with ';'", file=out)
    buffer: list[str] = []
    failed = 0
    try:
        while True:
            prompt = CONTINUE if buffer else PROMPT
            try:
                line = input(prompt) if tty else stdin.readline()
            except KeyboardInterrupt:
                print("^C", file=out)
                buffer.clear()
                continue
            except EOFError:  # Ctrl-D
                print(file=out)
                break
            if not tty and line == "":  # end of a piped input
                break
            line = line.rstrip("\n")
            if not buffer and line.strip().startswith("."):
                ran = _dot_command(con, line.strip(), out)
                if ran is None:
                    break
                failed += not ran
                continue
            if line.strip():
                buffer.append(line)
            if buffer and line.rstrip().endswith(";"):
                failed += not run_statements(con, "\n".join(buffer), out)
                buffer.clear()
        if buffer:  # a last statement without ';' still runs
            failed += not run_statements(con, "\n".join(buffer), out)
    finally:
        con.close()
        if readline is not None:
            try:
                readline.write_history_file(_history_path())
            except OSError:
                pass
    return failed
