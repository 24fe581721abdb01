"""The bad-input corpus: every kind of hostile or broken input, each through ``vsearch data
validate`` and through the commands that read data directly (``train``, ``evaluate``,
``index backfill``): exit 2, one line (at most ~300 characters) naming the file, the row and
the rule, inputs byte-identical, and not one network request (a loopback listener counts).

Each kind copies the session's ``tiny`` data and damages one thing. Validation runs several
kinds per copy (each on its own rows: one GX run checks them all); the other commands stop at
the first error, so they run one kind per copy.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import shutil
import stat
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vsearch import schema
from vsearch.cli import main

pytestmark = pytest.mark.integration

CAT, INTER, REF = schema.CATALOG_FILE, schema.INTERACTIONS_FILE, schema.REFORMULATIONS_FILE
MAX_LINE = 320  # ~300 characters plus the "vsearch <command>: error: " prefix


# --- the loopback listener: any request at all is a failure ---------------------------------


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(_png((32, 32)))

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def listener():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- helpers ---------------------------------------------------------------------------------


def _png(size=(32, 32), mode="RGB", color="red") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int, n_rows: int) -> bytes:
    """A 1-bit greyscale PNG claiming ``width`` x ``height`` px; ``n_rows`` rows of data
    (all of them: a valid file that decodes; fewer: only the header is sound)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * n_rows, 9)) + chunk(b"IEND", b"")


def folder_state(root: Path) -> dict[str, str]:
    """Every entry under root: content hash of regular files, link target, or file type.
    Never opens anything but a regular file (a FIFO would block)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[str(p.relative_to(root))] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() + f":{st.st_mtime_ns}"
            elif not stat.S_ISDIR(st.st_mode):
                out[str(p.relative_to(root))] = f"mode:{stat.S_IFMT(st.st_mode)}"
    return out


def _read(data: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(data / name)


def _write(data: Path, name: str, df: pd.DataFrame) -> None:
    df.to_parquet(data / name, index=False)


# --- the kinds -------------------------------------------------------------------------------
#
# An image kind turns one image URI into a bad one (it may create files); it is applied to a
# catalog row and to an interactions row. `lexical` kinds are refused when a manifest is
# read (every command names the catalog row); the others when the file is read (train names
# the interactions row: it reads query photos first). A table kind damages a manifest itself.


@dataclass
class Kind:
    name: str
    rule: str  # the validation rule id
    text: str  # regex the commands' error line matches
    manifest: str = CAT  # the manifest whose row the error names
    commands: tuple[str, ...] = ("train", "evaluate", "backfill")
    image: object = None  # (data, uri, ctx) -> new uri
    table: object = None  # (data, rows, ctx) -> the damaged row (None: no row)
    lexical: bool = False
    solo: bool = False  # changes a whole manifest: validated in a copy of its own
    same_row: bool = True  # False: the commands name another row of the same fault


def _replace(content: bytes):
    def apply(data, uri, ctx):
        (data / uri).write_bytes(content)
        return uri
    return apply


def _new_file(content_of, suffix=".png"):
    def apply(data, uri, ctx):
        new = uri.rsplit(".", 1)[0] + "_bad" + suffix
        content_of(data / new)
        return new
    return apply


def _as_uri(template: str):
    return lambda data, uri, ctx: template.format(uri=uri, port=ctx["port"], outside=ctx["outside"], data=data)


def _symlink_loop(data, uri, ctx):
    a, b = data / (uri + ".loop_a"), data / (uri + ".loop_b")
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    return uri + ".loop_a"


def _symlink_to(target_of):
    def apply(data, uri, ctx):
        link = data / (uri + ".link.png")
        link.symlink_to(target_of(data, uri, ctx))
        return uri + ".link.png"
    return apply


def _fifo(data, uri, ctx):
    os.mkfifo(data / (uri + ".fifo.png"))
    return uri + ".fifo.png"


def _directory(data, uri, ctx):
    (data / (uri + ".dir.png")).mkdir()
    return uri + ".dir.png"


def _sparse(path: Path):
    with open(path, "wb") as fh:
        fh.truncate(schema.MAX_IMAGE_BYTES + 1)


def _tiff(mode, array):
    def write(path: Path):
        Image.fromarray(array, mode).save(path, "TIFF")
    return write


def _truncated(data, uri, ctx):
    raw = (data / uri).read_bytes()
    (data / uri).write_bytes(raw[: len(raw) // 2])
    return uri


def _cell(manifest: str, column: str, value, row_key="c"):
    def apply(data, rows, ctx):
        df = _read(data, manifest)
        row = rows[row_key]
        if value is None:
            df[column] = df[column].astype(object)
        df.at[row, column] = value(df, row) if callable(value) else value
        _write(data, manifest, df)
        return row
    return apply


def _timestamp(value: str):
    def apply(data, rows, ctx):
        df = _read(data, INTER)
        df.at[rows["i"], "event_timestamp"] = pd.Timestamp(value, tz="UTC")
        _write(data, INTER, df)
        return rows["i"]
    return apply


def _zero_rows(manifest):
    def apply(data, rows, ctx):
        df = _read(data, manifest)
        _write(data, manifest, df.iloc[:0])
    return apply


def _ref_target_train(data, rows, ctx):
    ref, inter = _read(data, REF), _read(data, INTER)
    ref.at[rows["r"], "product_id"] = inter.loc[inter["split"] == "train", "product_id"].iloc[0]
    _write(data, REF, ref)
    return rows["r"]


def _ref_photo_train(data, rows, ctx):
    ref, inter = _read(data, REF), _read(data, INTER)
    ref.at[rows["r"], "query_image_uri"] = inter.loc[inter["split"] == "train", "query_image_uri"].iloc[-1]
    _write(data, REF, ref)
    return rows["r"]


def _two_splits(data, rows, ctx):
    inter = _read(data, INTER)
    rows_of = inter.groupby("product_id").indices
    pid = next(p for p, r in rows_of.items() if len(r) >= 2)
    row = int(rows_of[pid][-1])
    inter.at[row, "split"] = "test" if inter.at[row, "split"] != "test" else "train"
    _write(data, INTER, inter)
    return row


def _drop_column(manifest, column):
    def apply(data, rows, ctx):
        _write(data, manifest, _read(data, manifest).drop(columns=column))
    return apply


def _unlink(manifest):
    def apply(data, rows, ctx):
        (data / manifest).unlink()
    return apply


def _garbage(manifest):
    def apply(data, rows, ctx):
        (data / manifest).write_bytes(b"PAR1 not really parquet")
    return apply


def _timestamp_text(data, rows, ctx):
    inter = _read(data, INTER)
    inter["event_timestamp"] = inter["event_timestamp"].astype(str)
    _write(data, INTER, inter)


def _nan_attribute(data, rows, ctx):
    cat = _read(data, CAT)
    cat["price"] = np.linspace(5.0, 50.0, len(cat))
    cat.at[rows["c"], "price"] = float("nan")
    _write(data, CAT, cat)
    return rows["c"]


def _duplicate_photo(data, rows, ctx):
    inter = _read(data, INTER)
    other = (rows["i"] + 1) % len(inter)
    shutil.copyfile(data / inter.at[other, "query_image_uri"], data / inter.at[rows["i"], "query_image_uri"])
    return rows["i"]


NOT_ALLOWED = r"URL not allowed"
TRAIN_EVAL = ("train", "evaluate")
KINDS = [
    # where an image URI points (refused before anything is opened)
    Kind("file_url_outside_data", "uri_allowed", NOT_ALLOWED, image=_as_uri("file://{outside}"), lexical=True),
    Kind("file_url_dev_zero", "uri_allowed", NOT_ALLOWED, image=_as_uri("file:///dev/zero"), lexical=True),
    Kind("file_url_etc_passwd", "uri_allowed", NOT_ALLOWED, image=_as_uri("file:///etc/passwd"), lexical=True),
    Kind("http_url_loopback", "uri_allowed", NOT_ALLOWED, image=_as_uri("http://127.0.0.1:{port}/x.png"), lexical=True),
    Kind("https_url", "uri_allowed", NOT_ALLOWED, image=_as_uri("https://127.0.0.1:{port}/x.png"), lexical=True),
    Kind("s3_url_bucket_not_allowed", "uri_allowed", NOT_ALLOWED, image=_as_uri("s3://someone-elses-bucket/x.png"), lexical=True),
    Kind("ftp_url", "uri_allowed", NOT_ALLOWED, image=_as_uri("ftp://127.0.0.1:{port}/x.png"), lexical=True),
    Kind("absolute_path", "uri_allowed", "relative to the data folder", image=_as_uri("/etc/passwd"), lexical=True),
    Kind("absolute_path_to_a_real_image", "uri_allowed", "relative to the data folder", image=_as_uri("{data}/{uri}"), lexical=True),
    Kind("dotdot_escape", "uri_allowed", "outside the data folder", image=_as_uri("../{uri}"), lexical=True),
    Kind("dotdot_inside_path", "uri_allowed", "outside the data folder", image=_as_uri("images/../../x.png"), lexical=True),
    Kind("windows_drive_path", "uri_allowed", "relative to the data folder", image=_as_uri("C:\\images\\x.png"), lexical=True),
    Kind("unc_path", "uri_allowed", "relative to the data folder", image=_as_uri("\\\\server\\share\\x.png"), lexical=True),
    Kind("nul_byte_in_uri", "uri_allowed", "control characters", image=_as_uri("{uri}\x00.png"), lexical=True),
    Kind("newline_in_uri", "uri_allowed", "control characters", image=_as_uri("{uri}\n"), lexical=True),
    Kind("bidi_override_in_uri", "uri_allowed", "control characters", image=_as_uri("images/\u202egnp.x"), lexical=True),
    Kind("malformed_url", "uri_allowed", "malformed URL", image=_as_uri("images/x://y.png"), lexical=True),
    Kind("empty_uri", "non_empty_text", "must not be empty", image=_as_uri(""), lexical=True),
    Kind("null_uri", "not_null", "must be string, not null", image=lambda d, u, c: None, lexical=True),
    # what the URI names on disk (refused before it is read)
    Kind("symlink_loop", "uri_allowed", "symlink loop", image=_symlink_loop),
    Kind("symlink_escaping_the_data_folder", "uri_allowed", "outside the data folder",
         image=_symlink_to(lambda d, u, c: c["outside"])),
    Kind("symlink_to_dev_zero", "uri_allowed", "outside the data folder", image=_symlink_to(lambda d, u, c: "/dev/zero")),
    Kind("dangling_symlink", "uri_resolvable", "image file is missing", image=_symlink_to(lambda d, u, c: d / "images" / "gone.png")),
    Kind("fifo", "uri_resolvable", "not a regular file", image=_fifo),
    Kind("directory", "uri_resolvable", "not a regular file", image=_directory),
    Kind("missing_file", "uri_resolvable", "image file is missing", image=lambda d, u, c: (d / u).unlink() or u),
    Kind("file_over_the_byte_cap", "image_within_limits", "too large", image=_new_file(_sparse)),
    # what the bytes hold (refused before or while decoding)
    Kind("zero_byte_file", "image_nonempty", "empty", image=_replace(b"")),
    Kind("ninety_megapixels", "image_within_limits", "too many pixels",
         image=_new_file(lambda p: p.write_bytes(_png_header_only(9500, 9500, 9500)))),
    Kind("decompression_bomb_header", "image_within_limits", "too many pixels",
         image=_new_file(lambda p: p.write_bytes(_png_header_only(30000, 30000, 1)))),
    Kind("just_over_the_pixel_cap", "image_within_limits", "too many pixels",
         image=_new_file(lambda p: p.write_bytes(_png_header_only(4097, 4096, 4096)))),
    Kind("corrupt_png", "image_decodable", "cannot be decoded", image=_replace(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)),
    Kind("truncated_png", "image_decodable", "cannot be decoded", image=_truncated),
    Kind("text_file_named_png", "image_decodable", "cannot be decoded", image=_replace(b"hello, not an image\n")),
    Kind("html_named_png", "image_decodable", "cannot be decoded", image=_replace(b"<html><body>404</body></html>")),
    Kind("broken_gif", "image_decodable", "cannot be decoded", image=_replace(b"GIF89a broken")),
    Kind("float_pixels_tiff", "image_decodable", "mode F", image=_new_file(_tiff("F", np.full((32, 32), 0.5, np.float32)), ".tif")),
    Kind("int32_pixels_tiff", "image_decodable", "outside 16 bits",
         image=_new_file(_tiff("I", np.full((32, 32), 1 << 20, np.int32)), ".tif")),
    Kind("tiny_image", "image_min_size", "", image=_replace(_png((8, 8))), commands=()),
    # manifest cells
    Kind("nul_in_title", "text_printable", "control characters", table=_cell(CAT, "title", "mug\x00 red")),
    Kind("escape_sequence_in_title", "text_printable", "control characters", table=_cell(CAT, "title", "mug \x1b[31mred")),
    Kind("right_to_left_override_in_title", "text_printable", "control characters", table=_cell(CAT, "title", "mug \u202egnp.exe")),
    Kind("control_char_in_category", "text_printable", "control characters", table=_cell(CAT, "category", "mug\x07")),
    Kind("blank_title", "non_empty_text", "must not be empty", table=_cell(CAT, "title", "   ")),
    Kind("replacement_char_title", "text_utf8", "", table=_cell(CAT, "title", "caf\ufffd mug"), commands=()),
    Kind("overlong_title", "title_length", "", table=_cell(CAT, "title", "mug " * 200), commands=()),
    Kind("null_title", "not_null", "must be string, not null", table=_cell(CAT, "title", None)),
    Kind("duplicate_product_id", "unique_key", "must be unique", table=_cell(CAT, "product_id", lambda df, r: df.at[r - 1, "product_id"])),
    Kind("nan_numeric_attribute", "numeric_not_nan", "", table=_nan_attribute, commands=()),
    Kind("timestamp_in_year_2999", "timestamp_range", "between 1970-01-01 and now", manifest=INTER, table=_timestamp("2999-01-01"), commands=TRAIN_EVAL),
    Kind("timestamp_before_1970", "timestamp_range", "between 1970-01-01 and now", manifest=INTER, table=_timestamp("1900-06-01"), commands=TRAIN_EVAL),
    Kind("control_char_in_query_text", "text_printable", "control characters", manifest=INTER,
         table=_cell(INTER, "query_text", "red\x1b[2J", "i"), commands=TRAIN_EVAL),
    Kind("null_query_text", "not_null", "must be string, not null", manifest=INTER, table=_cell(INTER, "query_text", None, "i"), commands=TRAIN_EVAL),
    Kind("unknown_split", "allowed_values", "must be one of", manifest=INTER, table=_cell(INTER, "split", "training", "i"), commands=TRAIN_EVAL),
    Kind("duplicate_query_id", "unique_key", "must be unique", manifest=INTER,
         table=_cell(INTER, "query_id", lambda df, r: df.at[r - 1, "query_id"], "i"), commands=TRAIN_EVAL),
    Kind("unknown_clicked_product", "referential_integrity", "not in the catalog", manifest=INTER,
         table=_cell(INTER, "product_id", "p99999", "i"), commands=TRAIN_EVAL),
    Kind("duplicate_query_photo", "duplicate_query_image", "", manifest=INTER, table=_duplicate_photo, commands=()),
    Kind("reformulation_target_in_train", "reformulation_target_not_train", "target is a train-split product", manifest=REF,
         table=_ref_target_train, commands=TRAIN_EVAL),
    Kind("reformulation_photo_from_train", "reformulation_photo_not_train", "photo is a train-split photo", manifest=REF,
         table=_ref_photo_train, commands=TRAIN_EVAL),
    Kind("reformulation_target_unknown", "referential_integrity", "not in the catalog", manifest=REF,
         table=_cell(REF, "product_id", "nope", "r"), commands=TRAIN_EVAL),
    Kind("control_char_in_reformulation", "text_printable", "control characters", manifest=REF,
         table=_cell(REF, "reformulation_text", "in red\x00", "r"), commands=TRAIN_EVAL),
    # whole manifests
    Kind("zero_row_interactions", "row_count", "has no rows", manifest=INTER, table=_zero_rows(INTER), solo=True, commands=TRAIN_EVAL),
    Kind("zero_row_catalog", "row_count", "has no rows", table=_zero_rows(CAT), solo=True),
    Kind("missing_catalog", "manifest_readable", "manifest file is missing", table=_unlink(CAT), solo=True),
    Kind("corrupt_catalog", "manifest_readable", "not a readable parquet file", table=_garbage(CAT), solo=True),
    Kind("missing_interactions", "manifest_readable", "manifest file is missing", manifest=INTER, table=_unlink(INTER), solo=True,
         commands=TRAIN_EVAL),
    Kind("catalog_without_title_column", "columns_present", "missing required column", table=_drop_column(CAT, "title"), solo=True),
    Kind("timestamp_as_text", "column_type", "must be a timestamp", manifest=INTER, table=_timestamp_text, solo=True, commands=TRAIN_EVAL),
    Kind("product_in_two_splits", "split_leakage", "more than one split", manifest=INTER, table=_two_splits, solo=True, commands=TRAIN_EVAL,
         same_row=False),  # the commands name the product's first row, validate its odd one out
]
BY_NAME = {k.name: k for k in KINDS}


@pytest.fixture(scope="module")
def ctx(listener, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    outside.write_bytes(_png())
    return {"port": listener.server_address[1], "outside": str(outside)}


def _apply(kind: Kind, data: Path, rows: dict, ctx: dict) -> int | None:
    """Damage ``data`` with ``kind`` at ``rows`` (c: catalog, i: interactions, r: reformulations);
    returns the row the error must name (None: a whole-manifest error)."""
    if kind.table is not None:
        return kind.table(data, rows, ctx)
    for manifest, column, key in ((CAT, "image_uri", "c"), (INTER, "query_image_uri", "i")):
        df = _read(data, manifest)
        df[column] = df[column].astype(object)
        df.at[rows[key], column] = kind.image(data, df.at[rows[key], column], ctx)
        _write(data, manifest, df)
    return rows["i"] if kind.manifest == INTER else rows["c"]


# --- through validate: several kinds per copy, each on its own rows --------------------------


def _groups() -> list[list[Kind]]:
    """Kinds that can share a copy of the data: whole-manifest kinds pair a catalog one with
    an interactions one; the rest in groups of at most 20 (the catalog has 32 rows)."""
    solo_cat = [k for k in KINDS if k.solo and k.manifest == CAT]
    solo_other = [k for k in KINDS if k.solo and k.manifest != CAT]
    pairs = [[a, b] for a, b in zip(solo_cat, solo_other)]
    rest = solo_cat[len(pairs):] + solo_other[len(pairs):]
    shared = [k for k in KINDS if not k.solo]
    per = -(-len(shared) // -(-len(shared) // 20))  # even groups of at most 20
    return pairs + [[k] for k in rest] + [shared[i : i + per] for i in range(0, len(shared), per)]


GROUPS = _groups()


def _validate_lines(capsys, data: Path, out: Path) -> tuple[int, list[str]]:
    code = main(["data", "validate", "--data", str(data), "--out", str(out), "--workers", "1", "--no-data-docs"])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("group", GROUPS, ids=["+".join(k.name for k in g) if len(g) == 1 else f"group{i}" for i, g in enumerate(GROUPS)])
def test_validate_names_file_row_and_rule_of_every_kind(group, tiny_data, tmp_path, capsys, ctx, listener):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, symlinks=True)
    inter = _read(data, INTER)
    test_rows = inter.index[inter["split"] == "test"].tolist()
    expected = {}
    for n, kind in enumerate(group):
        # distinct rows per kind; interactions rows of the test split (no kind touches the
        # train split the reformulation rules compare against)
        rows = {"c": 1 + n, "i": test_rows[n] if n < len(test_rows) else 3 * n, "r": n % 8}
        expected[kind.name] = _apply(kind, data, rows, ctx)
    before = folder_state(data)
    hits = len(_Counter.hits)
    code, lines = _validate_lines(capsys, data, tmp_path / "report")
    assert code == 2
    assert folder_state(data) == before, "validate changed its input"
    assert len(_Counter.hits) == hits, f"validate made network requests: {_Counter.hits[hits:]}"
    assert all(len(line) <= MAX_LINE for line in lines), max(lines, key=len)
    report = json.loads((tmp_path / "report" / "validation.json").read_text())
    for kind in group:
        row = expected[kind.name]
        prefix = f"vsearch data validate: {kind.manifest}: {kind.rule}: "
        assert any(line.startswith(prefix) for line in lines), (kind.name, lines)
        if row is not None:  # the line shows 5 rows; the report keeps 20 per rule
            failed = [c for c in report["checks"] if c["manifest"] == kind.manifest and c["rule"] == kind.rule and not c["success"]]
            assert any(row in {ex["row"] for ex in c["examples"]} for c in failed), (kind.name, row, failed)


# --- through the commands that read data directly: one kind per copy ------------------------


def _command_cases():
    for kind in KINDS:
        for command in kind.commands:
            yield pytest.param(kind.name, command, id=f"{kind.name}-{command}")


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models["three_tower"]


@pytest.fixture(scope="module")
def rows_for_commands(tiny_data):
    """A catalog row of a test-split product (evaluation's gallery, backfill) and the first
    train interaction (training reads its photo first); reformulation row 0."""
    cat, inter = _read(tiny_data, CAT), _read(tiny_data, INTER)
    test_pid = inter.loc[inter["split"] == "test", "product_id"].iloc[0]
    return {"c": int((cat["product_id"] == test_pid).to_numpy().nonzero()[0][0]),
            "i": int((inter["split"] == "train").to_numpy().nonzero()[0][0]), "r": 0}


@pytest.mark.parametrize("name,command", list(_command_cases()))
def test_commands_stop_with_one_line_naming_file_row_and_rule(name, command, tiny_data, model, rows_for_commands, tmp_path, capsys, ctx):
    kind = BY_NAME[name]
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, symlinks=True)
    row = _apply(kind, data, rows_for_commands, ctx)
    if kind.image is not None and not kind.lexical and command == "train":
        manifest, row = INTER, rows_for_commands["i"]  # train decodes query photos first
    else:
        manifest = kind.manifest
    before = folder_state(data)
    hits = len(_Counter.hits)
    out = tmp_path / "out"
    argv = {
        "train": ["train", "--config", "tiny", "--data", str(data), "--out", str(out), "--quiet", "train.max_steps=1"],
        "evaluate": ["evaluate", "--model", str(model), "--data", str(data), "--out", str(out)],
        "backfill": ["index", "backfill", "--model", str(model), "--data", str(data), "--milvus-uri", str(tmp_path / "milvus.db"),
                     "--set", "backfill.num_workers=0"],
    }[command]
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1, lines
    line = lines[0]
    assert len(line) <= MAX_LINE, line
    assert manifest in line and re.search(kind.text, line), line
    if row is not None and kind.same_row and command != "evaluate":  # evaluate numbers rows within its gallery / test queries
        assert re.search(rf"\brow {row}\b", line), line
    assert folder_state(data) == before, f"{command} changed its input"
    assert len(_Counter.hits) == hits, f"{command} made network requests: {_Counter.hits[hits:]}"
    assert not out.exists() and not list(tmp_path.glob("out.partial*"))


def test_the_corpus_is_large_and_every_kind_is_validated():
    assert len(KINDS) >= 60
    assert {k.name for g in GROUPS for k in g} == set(BY_NAME)
    assert len({k.name for k in KINDS}) == len(KINDS)


# --- modes that lose content are converted faithfully (old code: white, black) ---------------


def image_to_rgb(raw: bytes, where: str):
    from vsearch.data.dataset import image_to_rgb as decode  # the boundary (imported late: torch)

    return decode(raw, where)


def _encode(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_16_bit_greyscale_keeps_its_content():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    raw = _encode(Image.fromarray(ramp))
    rgb = np.asarray(image_to_rgb(raw, "x.png"))
    assert rgb.shape == (64, 64, 3)
    expected = np.round(ramp / 257.0)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert rgb.min() == 0 and rgb.max() >= 253 and len(np.unique(rgb)) > 200  # not clipped to white


def test_palette_transparency_and_rgba_are_composited_on_white():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    rgb = np.asarray(image_to_rgb(_encode(pal, transparency=0), "p.png"))
    assert tuple(rgb[1, 1]) == (255, 255, 255) and tuple(rgb[0, 0]) == (255, 0, 0)
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert tuple(np.asarray(image_to_rgb(_encode(rgba), "a.png"))[0, 0]) == (255, 255, 255)


def test_cmyk_jpeg_converts_like_pil_and_validate_accepts_it(tmp_path):
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red
    rgb = np.asarray(image_to_rgb(_encode(cmyk, "JPEG", quality=95), "c.jpg"))
    assert rgb[16, 16, 0] > 200 and rgb[16, 16, 1] < 60 and rgb[16, 16, 2] < 60


def test_the_service_decodes_with_the_same_caps_and_modes():
    from vsearch.serving.search import DEFAULT_MAX_PIXELS, QueryError, decode_query_image

    assert DEFAULT_MAX_PIXELS == schema.MAX_IMAGE_PIXELS
    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 60).astype(np.uint16)
    assert len(np.unique(np.asarray(decode_query_image(_encode(Image.fromarray(ramp)))))) > 100
    with pytest.raises(QueryError) as err:
        decode_query_image(_png_header_only(9500, 9500, 1))
    assert err.value.status == 413


# --- the boundary itself ---------------------------------------------------------------------


def test_symlink_loop_and_nul_byte_are_data_errors_not_crashes(tmp_path):
    (tmp_path / "a.png").symlink_to("b.png")
    (tmp_path / "b.png").symlink_to("a.png")
    with pytest.raises(schema.DataError, match="symlink loop"):
        schema.resolve_uri(tmp_path, "a.png")
    with pytest.raises(schema.DataError, match="control characters"):
        schema.resolve_uri(tmp_path, "a\x00.png")


def test_allowed_prefixes_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(schema.ALLOWED_URI_PREFIXES_ENV, raising=False)
    with pytest.raises(schema.DataError, match="URL not allowed"):
        schema.resolve_uri(tmp_path, "s3://bucket/x.png")
    monkeypatch.setenv(schema.ALLOWED_URI_PREFIXES_ENV, "s3://bucket/images, gs://other/")
    assert schema.resolve_uri(tmp_path, "s3://bucket/images/x.png") == "s3://bucket/images/x.png"
    assert schema.resolve_uri(tmp_path, "S3://bucket/images/x.png") == "S3://bucket/images/x.png"
    for refused in ("s3://bucket/other/x.png", "s3://bucket-2/images/x.png", "s3://bucket/images/../secret.png",
                    "gs://other2/x.png", "file:///etc/passwd", "http://127.0.0.1/x.png"):
        with pytest.raises(schema.DataError):
            schema.resolve_uri(tmp_path, refused)
    monkeypatch.setenv(schema.ALLOWED_URI_PREFIXES_ENV, "s3://")
    with pytest.raises(schema.DataError, match="bucket"):
        schema.resolve_uri(tmp_path, "s3://any/x.png")


def test_an_allowed_file_prefix_is_a_local_folder_with_the_same_checks(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "img").mkdir(parents=True)
    (shared / "img" / "a.png").write_bytes(_png())
    (shared / "img" / "out.png").symlink_to(tmp_path / "elsewhere.png")
    monkeypatch.setenv(schema.ALLOWED_URI_PREFIXES_ENV, f"file://{shared}/")
    assert schema.resolve_uri(tmp_path / "data", f"file://{shared}/img/a.png") == str((shared / "img" / "a.png").resolve())
    with pytest.raises(schema.DataError, match="outside"):
        schema.resolve_uri(tmp_path / "data", f"file://{shared}/img/out.png")


def test_a_data_folder_on_object_storage_joins_relative_uris():
    assert schema.resolve_uri("s3://bucket/data", "images/a.png") == "s3://bucket/data/images/a.png"
    assert schema.resolve_uri("s3://bucket/data/", "./images//a.png") == "s3://bucket/data/images/a.png"
    with pytest.raises(schema.DataError, match="outside"):
        schema.resolve_uri("s3://bucket/data", "../other/a.png")


# --- through the service: every catalog kind, at start or at the catalog image route --------


def _catalog_kinds():
    return [k.name for k in KINDS if k.manifest == CAT or k.image is not None]


@pytest.mark.parametrize("name", _catalog_kinds())
def test_serve_refuses_bad_catalog_data_at_start_or_never_serves_it(name, tiny_data, model, rows_for_commands, tmp_path,
                                                                     capsys, ctx):
    """`vsearch serve` reads the catalog (hydration) and serves catalog images: a catalog kind
    either stops the start with one line naming file, row and rule (before Milvus or a model is
    touched), or the image route answers it with a 4xx JSON, never a 500, a hang or a fetch."""
    import asyncio

    import httpx

    from vsearch.serving import app as service
    from vsearch.serving.search import make_hydrator

    kind = BY_NAME[name]
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, symlinks=True)
    row = _apply(kind, data, rows_for_commands, ctx)
    before = folder_state(data)
    hits = len(_Counter.hits)
    try:
        hydrator = make_hydrator("catalog", data)
    except schema.DataError:
        milvus = tmp_path / "milvus.db"
        code = main(["serve", "--model", str(model), "--alias", "a", "--data", str(data), "--milvus-uri", str(milvus)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and len(lines[0]) <= MAX_LINE, lines
        assert CAT in lines[0] and re.search(kind.text, lines[0]), lines
        if row is not None and kind.same_row and kind.manifest == CAT:
            assert re.search(rf"\brow {row}\b", lines[0]), lines
        assert not milvus.exists()  # refused before Milvus was opened
    else:
        pid = _read(data, CAT).at[rows_for_commands["c"], "product_id"]
        state = service.ServiceState(searchers={}, hydrator=hydrator, data_dir=str(data))

        async def get():
            transport = httpx.ASGITransport(app=service.create_app(state))
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
                return await asyncio.wait_for(client.get(f"/products/{pid}/image"), timeout=10)

        response = asyncio.run(get())
        assert response.status_code in (200, 404), (response.status_code, response.text[:200])
        if response.status_code == 404:
            assert "error" in response.json()
    assert folder_state(data) == before, "serve changed its input"
    assert len(_Counter.hits) == hits, f"serve made network requests: {_Counter.hits[hits:]}"
