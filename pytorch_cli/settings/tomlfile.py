"""A settings file (`--config`, a sweep's spec) read with care: a regular file of at most 1 MiB,
UTF-8 TOML; each way it can fail is one line naming the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pytorch_cli.platform import files
from pytorch_cli.platform.errors import UsageError

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a config of every setting is ~1 KiB; more is not a config


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's table, or one line saying why there is none."""
    if path == Path("."):  # `--config ''` (typer's Path of it), or `--config .`
        raise UsageError("--config names no file: pass a TOML file of settings (see configs/)")
    # a FIFO would block the read, /dev/zero never end: a regular file of at most 1 MiB
    text = files.read_text(path, MAX_CONFIG_BYTES, f"config file {path}", UsageError)
    try:
        return tomllib.loads(text)
    except RecursionError:  # arrays nested thousands deep
        raise UsageError(f"config file {path} is not valid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}") from None
    except ValueError:  # Python's own limit on integer literals
        raise UsageError(f"config file {path} holds an integer of more than 4300 digits") from None
