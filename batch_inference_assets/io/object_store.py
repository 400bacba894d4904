"""The object store role: a root folder or URL under which Parquet files and records live."""

from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr
from upath import UPath


class ObjectStoreError(RuntimeError):
    pass


class ObjectStore(dg.ConfigurableResource):
    """Where intermediate Parquet files and records live; subclasses say where that is."""

    _base: UPath | None = PrivateAttr(default=None)

    def _root(self) -> str:
        raise NotImplementedError

    @property
    def storage_options(self) -> dict[str, Any]:
        return {}

    @property
    def base(self) -> UPath:
        if self._base is None:
            self._base = UPath(self._root(), **self.storage_options)
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

    def relative(self, uri: str) -> str:
        """`uri` relative to the store's root (e.g. to address it through a Snowflake stage)."""
        root = str(self.base).rstrip("/") + "/"
        if not uri.startswith(root):
            raise ObjectStoreError(f"{uri} is not under the object store root {root}")
        return uri[len(root) :]


class LocalObjectStore(ObjectStore):
    """A local folder: the embedded default."""

    root: str = Field(description="Folder under which everything is written.")

    def _root(self) -> str:
        return self.root


class S3ObjectStore(ObjectStore):
    """An S3 bucket and prefix, through s3fs; `endpoint_url` for S3-compatible servers."""

    bucket: str
    prefix: str = Field(default="batch-inference")
    region: str | None = None
    endpoint_url: str | None = Field(default=None, description="e.g. a MinIO or moto server")
    access_key_id: str | None = Field(default=None, description="Omit to use the AWS chain.")
    secret_access_key: str | None = None
    session_token: str | None = None

    def _root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.strip('/')}".rstrip("/")

    @property
    def storage_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.access_key_id:
            options["key"] = self.access_key_id
            options["secret"] = self.secret_access_key
            if self.session_token:
                options["token"] = self.session_token
        if self.region:
            options["client_kwargs"] = {"region_name": self.region}
        return options

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.verify()

    def verify(self) -> None:
        """Fail fast, naming the setting to fix, when the bucket cannot be reached."""
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        fs = self.base.fs
        fs.invalidate_cache()
        try:
            fs.info(self.bucket)  # HEAD bucket: tells missing (404) from forbidden (403)
        except FileNotFoundError as err:
            raise ObjectStoreError(
                f"S3 bucket {self.bucket!r} does not exist{where}. Check object_store.bucket."
            ) from err
        except PermissionError as err:
            raise ObjectStoreError(
                f"S3 refused access to bucket {self.bucket!r}{where}: {err}. Check "
                "object_store.access_key_id and secret_access_key (or the instance role) and "
                "that they may list the bucket."
            ) from err
        except Exception as err:  # botocore/aiohttp raise many types for network failures
            raise ObjectStoreError(
                f"cannot reach S3 bucket {self.bucket!r}{where}: {type(err).__name__}: {err}. "
                "Check object_store.endpoint_url and region."
            ) from err
