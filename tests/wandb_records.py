"""Reads back what an offline wandb run logged, from its ``run-*.wandb`` file (LevelDB-log framing of protobuf
``Record``s). wandb no longer ships a reader, and tests must check what a run logged without a server."""
import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

_HEADER, _BLOCK = 7, 32768


def _chunks(data: bytes):
    pos, record = _HEADER, b""
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # block trailer padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        pos += _HEADER
        if kind == 0 and length == 0:
            pos += _BLOCK - pos % _BLOCK
            continue
        record += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST
            yield record
            record = b""


def offline_runs(root: str | Path) -> list[Path]:
    return sorted(Path(root).rglob("offline-run-*/run-*.wandb"))


def records(wandb_file: str | Path):
    """Every protobuf ``Record`` of an offline run, in order."""
    data = Path(wandb_file).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{wandb_file} is not a wandb transaction log")
    for chunk in _chunks(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        yield record


def history(wandb_file: str | Path) -> list[dict]:
    """Every ``history`` row (one per wandb.log call) as {key: value}."""
    return [{(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item}
            for record in records(wandb_file) if record.WhichOneof("record_type") == "history"]


def run_info(wandb_file: str | Path) -> dict:
    """The run's display name and group, from its ``run`` record."""
    run = next(r.run for r in records(wandb_file) if r.WhichOneof("record_type") == "run")
    return {"name": run.display_name, "group": run.run_group}


def summary(wandb_file: str | Path) -> dict:
    """The run summary as the dashboard shows it (wandb keeps the last value of every logged key, and writes
    ``summary`` records with the updates)."""
    final = {}
    for record in records(wandb_file):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                final[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            for item in record.summary.remove:
                final.pop(item.key or "/".join(item.nested_key), None)
    return final


def image_keys(wandb_file: str | Path) -> set[str]:
    """Keys logged as images (``wandb.Image``): their history value is a dict of ``_type`` image-file or
    images/..., stored as nested keys (``<key>/_type``)."""
    keys = set()
    for row in history(wandb_file):
        for key, value in row.items():
            if key.endswith("/_type") and str(value).startswith("image"):
                keys.add(key.removesuffix("/_type"))
            elif isinstance(value, dict) and str(value.get("_type", "")).startswith("image"):
                keys.add(key)
    return keys
