"""Readers: turn a file or folder in a known format into a `Source` that DuckDB can scan.

A reader does not load rows into Python. It works out *how* to scan the file (a DuckDB table
function call), which source column feeds each canonical field, and which item and user side
files sit beside it. `recsight.data.ingest` then validates and cleans the rows inside DuckDB.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsight.data.layout import EVENTS_DIR, events_glob, is_layout, read_manifest
from recsight.data.schema import COLUMN_SYNONYMS
from recsight.errors import InputError

FORMATS: tuple[str, ...] = ("movielens-100k", "movielens-1m", "taobao", "csv", "parquet", "jsonl")

_TAOBAO_BEHAVIORS = {"pv", "buy", "cart", "fav"}
_ML1M_RATING_NAMES = ("ratings.dat",)
_ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
_ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


@dataclass
class Source:
    """How to scan one events file, and what sits beside it.

    `scan_sql` is a DuckDB table expression (e.g. ``read_csv('f.csv', ...)``); `columns` maps
    canonical field -> source column; `constants` gives fixed values for fields the format
    implies (MovieLens rows are ratings). `header_lines` converts row positions to file lines.
    """

    path: Path
    format: str
    scan_sql: str
    columns: dict[str, str]
    constants: dict[str, str] = field(default_factory=dict)
    header_lines: int = 0
    default_tz: str = "UTC"
    rating_scale: tuple[float, float] | None = None
    event_type_fallback: str | None = None
    row_number_column: str | None = None
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    items_path: Path | None = None
    users_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: a layout whose user ids are already pseudonyms: its key's fingerprint
    pseudonym_key_fingerprint: str | None = None
    fill_rating: str | None = None  # a layout's --fill-rating policy, kept by its ingest


def _sql_str(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _check_readable_text(path: Path) -> bytes:
    """Return the head of a text file, failing clearly on missing, empty or binary files."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file")
    head = path.open("rb").read(65536)
    if not head.strip():
        raise InputError(f"{path}: the file is empty, expected rows of events")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(
            f"{path}: the file is UTF-16 encoded; expected UTF-8 (convert it, e.g. "
            "iconv -f UTF-16 -t UTF-8)"
        )
    if b"\x00" in head:
        raise InputError(
            f"{path}: looks like binary data (NUL bytes), expected a text file "
            "(CSV/TSV, JSON Lines, MovieLens or Taobao) or a .parquet file"
        )
    return head


def check_line_endings(path: Path, chunk: int = 1 << 20) -> None:
    """Fail with the line of the first bare carriage return (an old-Mac line end) in a
    file whose lines end in \\n or \\r\\n: DuckDB's reader takes one line-ending style per
    file and fails on a mix with a generic message. A file of bare-CR lines only reads as it
    is. For files the reader failed on (the check reads the whole file)."""
    if not path.is_file():
        return
    line, prev, first_cr = 1, b"", None
    with path.open("rb") as f:
        while block := f.read(chunk):
            data = prev + block
            # a CR at the end of the block may be the first half of a CRLF: decide next time
            body, prev = (data[:-1], data[-1:]) if data.endswith(b"\r") else (data, b"")
            at = body.replace(b"\r\n", b"\n\n").find(b"\r")
            if first_cr is None and at >= 0:
                first_cr = line + body.count(b"\n", 0, at)
            line += body.count(b"\n")
            if first_cr is not None and line > 1:
                break
    if first_cr is None and prev:  # the file's last byte
        first_cr = line
    if first_cr is not None and line > 1:
        raise InputError(
            f"{path}: line {first_cr}: a bare carriage return (\\r, an old Mac line end) among "
            "lines that end in \\n; expected one line-ending style throughout (convert the "
            "file's line endings to \\n)"
        )


def _head_lines(head: bytes, encoding: str = "utf-8", n: int = 50) -> list[str]:
    # utf-8-sig: a byte order mark (as spreadsheets write) is not part of the first column name
    text = head.decode("utf-8-sig" if encoding == "utf-8" else encoding, errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(head) == 65536 and lines:
        lines = lines[:-1]  # the last line may be cut mid-row
    return lines[:n]


def detect_delimiter(lines: list[str], path: Path | None = None) -> str:
    """Pick the delimiter that splits the sample lines into the same number (>1) of fields.

    Written by hand because DuckDB's sniffer can pick a wrong delimiter when some rows are
    malformed, and Python's csv.Sniffer does not know the two-character MovieLens `::`.
    """
    best, best_score = None, 0.0
    for delim in ("::", "\t", ",", ";", "|"):
        counts = [
            len(next(csv.reader([ln], delimiter=delim)))
            if len(delim) == 1
            else len(ln.split(delim))
            for ln in lines
        ]
        if not counts:
            continue
        mode = max(set(counts), key=counts.count)
        if mode < 2:
            continue
        score = counts.count(mode) / len(counts) + 0.001 * mode
        if score > best_score:
            best, best_score = delim, score
    if best is None:
        where = f"{path}: " if path else ""
        raise InputError(
            f"{where}could not detect a delimiter: every sample line has a single field; expected "
            "columns separated by ',', tab, ';', '|' or '::'"
        )
    return best


def _split(line: str, delim: str) -> list[str]:
    return line.split(delim) if len(delim) > 1 else next(csv.reader([line], delimiter=delim))


def _looks_like_header(lines: list[str], delim: str) -> bool:
    first = [f.strip().lower() for f in _split(lines[0], delim)]
    known = {s for syns in COLUMN_SYNONYMS.values() for s in syns}
    if any(f in known for f in first):
        return True
    if len(lines) < 2:
        return False

    def numeric(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return False

    rest = [_split(ln, delim) for ln in lines[1:]]
    for j, name in enumerate(first):
        col = [r[j] for r in rest if j < len(r)]
        if col and not numeric(name) and all(numeric(v) for v in col if v):
            return True
    return False


def resolve_columns(
    available: list[str], mapping: dict[str, str] | None, path: Path
) -> dict[str, str]:
    """Map canonical fields onto source columns: explicit `mapping` first, then synonyms."""
    mapping = dict(mapping or {})
    lower = {c.lower(): c for c in available}
    for canon, src in mapping.items():
        if src not in available and src.lower() not in lower:
            raise InputError(
                f"{path}: --map {canon}={src}: no column {src!r}; the file has columns "
                f"{', '.join(available)}"
            )
        mapping[canon] = src if src in available else lower[src.lower()]
    used = set(mapping.values())
    for canon, synonyms in COLUMN_SYNONYMS.items():
        if canon in mapping:
            continue
        for syn in synonyms:
            if syn in lower and lower[syn] not in used:
                mapping[canon] = lower[syn]
                used.add(lower[syn])
                break
    missing = [c for c in ("user_id", "item_id") if c not in mapping]
    if missing:
        raise InputError(
            f"{path}: missing required column(s) {', '.join(missing)}; the file has columns "
            f"{', '.join(available)}. Name them with --map, e.g. --map user_id=<column>"
        )
    return mapping


def _positional_columns(n: int, path: Path) -> dict[str, str]:
    order = {
        2: ("user_id", "item_id"),
        3: ("user_id", "item_id", "value"),
        4: ("user_id", "item_id", "value", "timestamp"),
    }
    if n not in order:
        raise InputError(
            f"{path}: no header row and {n} columns; name the columns with --map, e.g. "
            "--map user_id=column0 --map item_id=column1"
        )
    return {canon: f"column{i}" for i, canon in enumerate(order[n])}


def read_csv_source(
    path: Path, mapping: dict[str, str] | None = None, encoding: str = "utf-8"
) -> Source:
    """A delimited text file, delimiter and header detected."""
    head = _check_readable_text(path)
    lines = _head_lines(head, encoding)
    delim = detect_delimiter(lines, path)
    header = _looks_like_header(lines, delim)
    n_cols = len(_split(lines[0], delim))
    if header:
        names = [f.strip() for f in _split(lines[0], delim)]
        columns = resolve_columns(names, mapping, path)
    else:
        names = [f"column{i}" for i in range(n_cols)]
        columns = (
            resolve_columns(names, mapping, path) if mapping else _positional_columns(n_cols, path)
        )
    col_spec = "{" + ", ".join(f"{_sql_str(n)}: 'VARCHAR'" for n in names) + "}"
    scan = (
        f"read_csv({_sql_str(path)}, delim={_sql_str(delim)}, header={str(header).lower()}, "
        f"columns={col_spec}, quote='\"', escape='\"', ignore_errors=true, store_rejects=true, "
        f"encoding={_sql_str(encoding)}, null_padding=false)"
    )
    src = Source(path, "csv", scan, columns, header_lines=int(header))
    if not header:
        src.notes.append(
            "no header row: columns taken as " + ", ".join(f"{v}={k}" for k, v in columns.items())
        )
    return src


def read_parquet_source(
    path: Path, mapping: dict[str, str] | None, con, files: str | None = None
) -> Source:
    """A Parquet file (or a folder snapshot with events/items/users.parquet); `files`, a glob
    of a dataset layout's event files (`recsight.data.layout`), whose `seq` orders the rows."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    scan_of = _sql_str(files or path)
    opts = ", hive_partitioning = false" if files else ", file_row_number = true"
    try:
        names = [
            r[0]
            for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({scan_of}{opts})").fetchall()
        ]
    except Exception as exc:  # duckdb raises several error types for a broken file
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    columns = resolve_columns(names, mapping, path)
    fallback = None
    if "raw_event_type" in names and "event_type" in names and "event_type" not in (mapping or {}):
        # a recsight snapshot: re-map the raw types, falling back to the canonical ones
        columns["event_type"], fallback = "raw_event_type", "event_type"
    return Source(
        path,
        "parquet",
        f"read_parquet({scan_of}{opts})",
        columns,
        row_number_column="seq" if files else "file_row_number",
        event_type_fallback=fallback,
    )


def read_jsonl_source(path: Path, mapping: dict[str, str] | None, con) -> Source:
    """JSON Lines: one object per line; every field read as text so ids stay strings."""
    _check_readable_text(path)
    try:
        names = [
            r[0]
            for r in con.execute(
                f"DESCRIBE SELECT * FROM read_json({_sql_str(path)}, format='newline_delimited')"
            ).fetchall()
        ]
    except Exception as exc:
        raise InputError(f"{path}: not valid JSON Lines ({_first_line(exc)})") from None
    columns = resolve_columns(names, mapping, path)
    col_spec = "{" + ", ".join(f"{_sql_str(n)}: 'VARCHAR'" for n in names) + "}"
    scan = (
        f"read_json({_sql_str(path)}, format='newline_delimited', columns={col_spec}, "
        "ignore_errors=false)"
    )
    return Source(path, "jsonl", scan, columns)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def read_taobao_source(path: Path) -> Source:
    """Taobao UserBehavior: headerless `user_id,item_id,category_id,behavior,timestamp`."""
    _check_readable_text(path)
    names = ["user_id", "item_id", "category_id", "behavior", "timestamp"]
    col_spec = "{" + ", ".join(f"'{n}': 'VARCHAR'" for n in names) + "}"
    scan = (
        f"read_csv({_sql_str(path)}, delim=',', header=false, columns={col_spec}, "
        "ignore_errors=true, store_rejects=true)"
    )
    columns = {
        "user_id": "user_id",
        "item_id": "item_id",
        "category": "category_id",
        "event_type": "behavior",
        "timestamp": "timestamp",
    }
    return Source(path, "taobao", scan, columns, default_tz="Asia/Shanghai")


def _ml_ratings_source(path: Path, delim: str, fmt: str, n_fields: int) -> Source:
    names = ["user_id", "item_id", "value", "timestamp"][:n_fields]
    col_spec = "{" + ", ".join(f"'{n}': 'VARCHAR'" for n in names) + "}"
    scan = (
        f"read_csv({_sql_str(path)}, delim={_sql_str(delim)}, header=false, "
        f"columns={col_spec}, quote='', ignore_errors=true, store_rejects=true)"
    )
    columns = {n: n for n in names}
    return Source(
        path, fmt, scan, columns, constants={"event_type": "rating"}, rating_scale=(1.0, 5.0)
    )


def read_movielens_100k(path: Path) -> Source:
    """MovieLens 100K: `u.data` (or the folder), with `u.item` and `u.user` beside it."""
    ratings = path / "u.data" if path.is_dir() else path
    _check_readable_text(ratings)
    src = _ml_ratings_source(ratings, "\t", "movielens-100k", 4)
    folder = ratings.parent
    if (folder / "u.item").exists():
        src.items_path = folder / "u.item"
        src.items = _read_ml100k_items(folder / "u.item")
    if (folder / "u.user").exists():
        src.users_path = folder / "u.user"
        users = pd.read_csv(
            folder / "u.user",
            sep="|",
            header=None,
            dtype=str,
            names=["user_id", "age", "gender", "occupation", "zip_code"],
        )
        users["age"] = pd.to_numeric(users["age"], errors="coerce").astype("Int64")
        src.users = users
    return src


def _read_ml100k_items(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(
        path,
        sep="|",
        header=None,
        dtype=str,
        encoding="latin-1",
        names=[
            "item_id",
            "title",
            "release_date",
            "video_release_date",
            "imdb_url",
            *_ML100K_GENRES,
        ],
    )
    flags = raw[list(_ML100K_GENRES)].astype(int).to_numpy().astype(bool)
    genres = [[g for g, f in zip(_ML100K_GENRES, row, strict=True) if f] for row in flags]
    return pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": raw["title"],
            "category": [g[0] if g else None for g in genres],
            "tags": genres,
            "release_date": raw["release_date"],
            "imdb_url": raw["imdb_url"],
        }
    )


def _ml1m_candidates(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("ratings*.dat"))


def read_movielens_1m(path: Path) -> Source:
    """MovieLens 1M: `::`-separated ratings (4 fields) or `user::item` pairs (2 fields), latin-1,
    with `movies.dat` and `users.dat` beside it."""
    if path.is_dir():
        candidates = _ml1m_candidates(path)
        if not candidates:
            raise InputError(f"{path}: no ratings*.dat file in this MovieLens 1M folder")
        if len(candidates) > 1:
            raise InputError(
                f"{path}: more than one candidate ratings file: "
                + ", ".join(p.name for p in candidates)
                + "; point at the one to ingest"
            )
        path = candidates[0]
    head = _check_readable_text(path)
    lines = _head_lines(head, "latin-1")
    n_fields = len(lines[0].split("::"))
    if n_fields not in (2, 4):
        raise InputError(
            f"{path}: line 1 has {n_fields} '::'-separated fields; expected "
            "UserID::MovieID::Rating::Timestamp or UserID::MovieID"
        )
    src = _ml_ratings_source(path, "::", "movielens-1m", n_fields)
    if n_fields == 2:
        src.notes.append("pairs file: no ratings and no timestamps")
    folder = path.parent
    if (folder / "movies.dat").exists():
        src.items_path = folder / "movies.dat"
        rows = [
            ln.split("::")
            for ln in (folder / "movies.dat").read_text(encoding="latin-1").splitlines()
            if ln
        ]
        genres = [r[2].split("|") if len(r) > 2 and r[2] else [] for r in rows]
        src.items = pd.DataFrame(
            {
                "item_id": [r[0] for r in rows],
                "title": [r[1] for r in rows],
                "category": [g[0] if g else None for g in genres],
                "tags": genres,
            }
        )
    if (folder / "users.dat").exists():
        src.users_path = folder / "users.dat"
        rows = [
            ln.split("::")
            for ln in (folder / "users.dat").read_text(encoding="latin-1").splitlines()
            if ln
        ]
        occ = [int(r[3]) for r in rows]
        src.users = pd.DataFrame(
            {
                "user_id": [r[0] for r in rows],
                "gender": [r[1] for r in rows],
                "age": pd.array([int(r[2]) for r in rows], dtype="Int64"),
                "occupation": [_ML1M_OCCUPATIONS[o] if 0 <= o < 21 else str(o) for o in occ],
                "zip_code": [r[4] for r in rows],
            }
        )
        src.notes.append("users.dat age is the MovieLens age-group code (1, 18, 25, ...)")
    return src


def detect_format(path: Path) -> str:
    """Guess the format of a file or folder from its name and first lines."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        if (path / "u.data").exists():
            return "movielens-100k"
        if _ml1m_candidates(path):
            return "movielens-1m"
        if (path / "events.parquet").exists() or is_layout(path):
            return "parquet"
        raise InputError(
            f"{path}: cannot tell the format of this folder; expected u.data (MovieLens 100K), "
            "ratings*.dat (MovieLens 1M), events.parquet (a recsight snapshot) or manifest.json "
            "with events/ (a recsight dataset layout); "
            "or point at a file and pass --format"
        )
    name = path.name.lower()
    if name == "u.data":
        return "movielens-100k"
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    head = _check_readable_text(path)
    if name.endswith(".dat") and b"::" in head.split(b"\n", 1)[0]:
        return "movielens-1m"
    lines = _head_lines(head)
    if lines and lines[0].lstrip().startswith("{"):
        return "jsonl"
    rows = [ln.split(",") for ln in lines]
    if rows and all(len(r) == 5 and r[3].strip() in _TAOBAO_BEHAVIORS for r in rows):
        return "taobao"
    return "csv"


def open_source(path: str | Path, fmt: str | None, mapping: dict[str, str] | None, con) -> Source:
    """Resolve `path` (file or folder) and `fmt` (or detect it) into a `Source`."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "movielens-100k":
        return read_movielens_100k(path)
    if fmt == "movielens-1m":
        return read_movielens_1m(path)
    if fmt == "taobao":
        return read_taobao_source(path)
    if fmt == "parquet":
        folder = path if path.is_dir() else None
        if folder and is_layout(folder):
            manifest = read_manifest(folder)  # a newer layout version is refused here
            src = read_parquet_source(folder / EVENTS_DIR, mapping, con, events_glob(folder))
            src.pseudonym_key_fingerprint = manifest.pseudonym_key_fingerprint
            src.fill_rating = manifest.fill_rating
            if manifest.time_min is None:
                # a log without timestamps: the layout's all-null column is not data to check
                src.columns.pop("timestamp", None)
        else:
            events = folder / "events.parquet" if folder else path
            src = read_parquet_source(events, mapping, con)
        if folder:
            for kind in ("items", "users"):
                side = folder / f"{kind}.parquet"
                if side.exists():
                    setattr(src, f"{kind}_path", side)
                    setattr(src, kind, read_side_table(side))
        return src
    if fmt == "jsonl":
        return read_jsonl_source(path, mapping, con)
    return read_csv_source(path, mapping)


def read_side_table(path: str | Path, key: str | None = None) -> pd.DataFrame:
    """Read an items or users file (CSV/TSV, Parquet or JSON Lines) into a frame of strings
    (numbers parsed later by column); `key` is the id column to require."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        elif name.endswith((".jsonl", ".ndjson", ".json")):
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            head = _check_readable_text(path)
            delim = detect_delimiter(_head_lines(head), path)
            sep = delim if len(delim) == 1 else "::"
            df = pd.read_csv(
                io.BytesIO(path.read_bytes()),
                sep=sep,
                dtype=str,
                engine="python" if len(delim) > 1 else "c",
            )
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read the table ({_first_line(exc)})") from None
    if key is not None:
        lower = {c.lower(): c for c in df.columns}
        synonyms = COLUMN_SYNONYMS[key]
        found = next((lower[s] for s in synonyms if s in lower), None)
        if found is None:
            raise InputError(
                f"{path}: missing required column {key}; the file has columns "
                f"{', '.join(map(str, df.columns))}"
            )
        df = df.rename(columns={found: key})
    return df
