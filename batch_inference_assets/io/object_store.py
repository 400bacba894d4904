"""The object store role: a root folder or URL under which Parquet files and records live."""

from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr
from upath import UPath


class ObjectStore(dg.ConfigurableResource):
    """A local folder in the embedded default, an s3:// prefix in production."""

    root: str = Field(description="Local folder or URL, e.g. /data/bi or s3://bucket/prefix.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options (endpoint_url, key, secret, ...)."
    )
    _base: UPath | None = PrivateAttr(default=None)

    @property
    def base(self) -> UPath:
        if self._base is None:
            self._base = UPath(self.root, **self.storage_options)
        return self._base

    def path(self, *parts: str) -> UPath:
        return self.base.joinpath(*parts)

    def open_path(self, uri: str) -> UPath:
        """A path recorded earlier (as a string) reopened with this store's credentials."""
        return UPath(uri, **self.storage_options)

    def remove_tree(self, path: UPath) -> None:
        if path.exists():
            path.fs.rm(path.path, recursive=True)

    @property
    def is_local(self) -> bool:
        return self.base.protocol in ("", "file", "local")
