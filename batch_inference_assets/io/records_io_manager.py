"""An IO manager that stores the typed records passed between assets as JSON files."""

import json
from typing import Any

import dagster as dg
from pydantic import Field
from upath import UPath

from batch_inference_assets import records
from batch_inference_assets.io.object_store import ObjectStore

_RECORD_TYPES: dict[str, type[records.Record]] = {
    cls.__name__: cls
    for cls in vars(records).values()
    if isinstance(cls, type) and issubclass(cls, records.Record) and cls is not records.Record
}


def encode(obj: Any) -> Any:
    if isinstance(obj, records.Record):
        return {"record": type(obj).__name__, "data": obj.model_dump(mode="json")}
    if isinstance(obj, list):
        return {"list": [encode(o) for o in obj]}
    raise TypeError(f"the record IO manager stores Record objects and lists of them, not {obj!r}")


def decode(doc: Any) -> Any:
    if "list" in doc:
        return [decode(d) for d in doc["list"]]
    return _RECORD_TYPES[doc["record"]].model_validate(doc["data"])


class RecordIOManager(dg.UPathIOManager):
    extension = ".json"

    @property
    def storage_options(self) -> dict[str, Any]:
        # universal-pathlib 0.3 dropped the private `_kwargs` Dagster reads here.
        return dict(getattr(self._base_path, "storage_options", {}))

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(encode(obj)))

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        return decode(json.loads(path.read_text()))


class RecordIOManagerFactory(dg.ConfigurableIOManagerFactory):
    """Records under `<object_store>/<prefix>/<asset key>/<partition>.json`."""

    object_store: ObjectStore
    prefix: str = Field(default="records")

    def create_io_manager(self, context: dg.InitResourceContext) -> RecordIOManager:
        return RecordIOManager(base_path=self.object_store.path(self.prefix))
