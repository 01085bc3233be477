"""LiteLLM's own table definitions, turned into Postgres DDL from the ``schema.prisma`` that ships
in the installed litellm package (the proxy creates its tables from it with Prisma).

Only what the tests need: the column types Prisma maps to Postgres, nullability, ``@id``,
``@default`` and ``@map``. Used to create ``LiteLLM_SpendLogs`` exactly as the installed LiteLLM
defines it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path


def _litellm_dir() -> Path:
    spec = importlib.util.find_spec("litellm")  # without importing litellm (slow)
    if spec is None or spec.origin is None:
        raise LookupError("litellm is not installed")
    return Path(spec.origin).parent


PRISMA_SCHEMA = _litellm_dir() / "proxy" / "schema.prisma"
PG_TYPES = {
    "String": "TEXT",
    "Int": "INTEGER",
    "BigInt": "BIGINT",
    "Float": "DOUBLE PRECISION",
    "Decimal": "DECIMAL(65,30)",
    "Boolean": "BOOLEAN",
    "DateTime": "TIMESTAMP(3)",
    "Json": "JSONB",
}
FIELD = re.compile(r"^(\w+)\s+(\w+)(\[\])?(\?)?\s*(.*)$")
DEFAULT = re.compile(r"@default\s*\(((?:[^()]|\(\))*)\)")
MAP = re.compile(r'@map\s*\(\s*"([^"]+)"\s*\)')


def model_block(name: str, schema: Path = PRISMA_SCHEMA) -> list[str]:
    text = schema.read_text(encoding="utf-8")
    match = re.search(rf"^model {re.escape(name)} \{{\n(.*?)^\}}", text, re.S | re.M)
    if match is None:
        raise LookupError(f"{schema}: no model {name}")
    return [line.split("//")[0].strip() for line in match.group(1).splitlines()]


def _default(value: str, pg_type: str) -> str:
    value = value.strip()
    if value == "now()":
        return "CURRENT_TIMESTAMP"
    if value.startswith('"'):
        literal = "'" + value.strip('"').replace("'", "''") + "'"
        return f"{literal}::jsonb" if pg_type == "JSONB" else literal
    return value


def create_table_sql(name: str, *, schema_name: str = "public") -> str:
    """``CREATE TABLE "<schema>"."<name>" (...)`` for one Prisma model."""
    columns = []
    for line in model_block(name):
        match = FIELD.match(line)
        if not line or line.startswith("@@") or match is None:
            continue
        field, prisma_type, is_list, optional, attrs = match.groups()
        if prisma_type not in PG_TYPES:
            continue  # a relation to another model
        pg_type = PG_TYPES[prisma_type] + ("[]" if is_list else "")
        mapped = MAP.search(attrs)
        column = f'"{mapped.group(1) if mapped else field}" {pg_type}'
        if "@id" in attrs:
            column += " PRIMARY KEY"
        elif not optional and not is_list:
            column += " NOT NULL"
        default = DEFAULT.search(attrs)
        if default:
            column += " DEFAULT " + _default(default.group(1), pg_type)
        columns.append(column)
    return f'CREATE TABLE "{schema_name}"."{name}" (\n  ' + ",\n  ".join(columns) + "\n)"
