"""``fedbus.yaml``: what a compute package holds and how to run it.

::

    name: wine-mlp
    model: wine_model:make_model          # module:callable -> torch.nn.Module
    data: wine_model:load_partition       # module:callable(partition, **data_args) -> (train, test)
    startup: wine_model:startup           # optional, run once per agent process
    train: wine_model:train               # optional; default: fedbus's own SGD trainer
    validate: wine_model:validate         # optional; default: loss and accuracy
    requirements: [numpy>=1.26]           # checked on the agent before any code runs

An entry point is either a Python callable (``module:callable``, imported from the unpacked
package) or, FEDn's single-input single-output form, a command (``{command: "python
train.py"}``) run in the package directory with the model file paths appended; see
:mod:`fedbus.packages.entry` for both contracts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedbus.packages import PackageSpecError
from fedbus.packages.requirements import parse as parse_requirement

SPEC_FILE = "fedbus.yaml"
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class CommandEntry(BaseModel):
    """The single-input single-output form: ``command IN OUT`` run in the package directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    command: str = Field(min_length=1)


EntryPoint = str | CommandEntry


class PackageSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    model: str | None = None
    data: str | None = None
    # A Flower client_fn (module:callable): the package's code is a Flower client, run
    # unchanged (fit for train, evaluate for validate); model and data are then not needed.
    flower_client: str | None = None
    startup: EntryPoint | None = None
    build: EntryPoint | None = None
    train: EntryPoint | None = None
    validate_: EntryPoint | None = Field(None, alias="validate")
    requirements: list[str] = Field(default_factory=list)

    @field_validator("model", "data", "flower_client")
    @classmethod
    def _callable(cls, value: str | None) -> str | None:
        if value is not None and not _CALLABLE.fullmatch(value):
            raise ValueError(f"{value!r} must look like 'module:callable'")
        return value

    @field_validator("startup", "build", "train", "validate_")
    @classmethod
    def _entry(cls, value: EntryPoint | None) -> EntryPoint | None:
        if isinstance(value, str) and not _CALLABLE.fullmatch(value):
            raise ValueError(f"{value!r} must look like 'module:callable' or be {{command: ...}}")
        return value

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: list[str]) -> list[str]:
        for requirement in value:
            parse_requirement(requirement)  # PEP 508, or a ValueError saying what is wrong
        return value

    @model_validator(mode="after")
    def _code(self) -> PackageSpec:
        if self.flower_client is None and (self.model is None or self.data is None):
            raise ValueError("a package names 'model' and 'data', or a 'flower_client'")
        return self

    @property
    def validate_entry(self) -> EntryPoint | None:
        return self.validate_

    @property
    def model_entry(self) -> str:
        """What a job's ``model`` defaults to (a Flower package: its client_fn)."""
        return self.model or str(self.flower_client)

    @property
    def data_entry(self) -> str:
        return self.data or str(self.flower_client)


def parse_spec(data: Any, source: str) -> PackageSpec:
    if not isinstance(data, dict):
        raise PackageSpecError(f"{source}: a package spec must be a mapping of fields")
    try:
        return PackageSpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]).replace("validate_", "validate")
            lines.append(f"{source}: field {where or '<spec>'}: {err['msg']}")
        raise PackageSpecError("\n".join(lines)) from exc


def load_spec(directory: str | Path) -> PackageSpec:
    """The spec of the package in ``directory``; errors name the file and the field."""
    path = Path(directory) / SPEC_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise PackageSpecError(f"{path}: cannot read the package spec: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PackageSpecError(f"{path}: not valid YAML: {exc}") from exc
    return parse_spec(data, str(path))
