"""The object store role: a root folder or URL under which Parquet files and records live."""

from typing import Any

import dagster as dg
from botocore.exceptions import NoCredentialsError
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

    def remove_run_folder(self, folder: UPath) -> None:
        """A run's folder (`.../<day>/<run_id>`), then its day's folder if nothing else is left
        in it."""
        self.remove_tree(folder)
        day = folder.parent
        if day.exists() and not any(day.iterdir()):
            self.remove_tree(day)

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
    """An S3 bucket and prefix, through s3fs. The connection settings carry dagster-aws's
    `S3Resource` names; `endpoint_url` for S3-compatible servers."""

    bucket: str
    prefix: str = Field(default="batch-inference")
    region_name: str | None = None
    endpoint_url: str | None = Field(default=None, description="e.g. a MinIO or moto server")
    profile_name: str | None = Field(default=None, description="A profile of ~/.aws/config.")
    max_attempts: int = Field(
        default=5, description="Attempts per S3 call (botocore's standard retry mode)."
    )
    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Per connection attempt; then botocore retries."
    )
    read_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Per read of a response; a hung S3 fails, not waits."
    )
    aws_access_key_id: str | None = Field(
        default=None, description="Omit (with the secret) to use the profile or the AWS chain."
    )
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None

    def _root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.strip('/')}".rstrip("/")

    def s3_resource(self) -> Any:
        """dagster-aws's S3Resource with these settings (their names are its own), for what
        dagster-aws does with it, such as its pickling IO manager."""
        from dagster_aws.s3 import S3Resource

        shared = ("region_name", "endpoint_url", "profile_name", "max_attempts",
                  "aws_access_key_id", "aws_secret_access_key", "aws_session_token")  # fmt: skip
        return S3Resource(**{k: getattr(self, k) for k in shared if getattr(self, k) is not None})

    @property
    def storage_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "config_kwargs": {
                "retries": {"max_attempts": self.max_attempts, "mode": "standard"},
                "connect_timeout": self.connect_timeout_seconds,
                "read_timeout": self.read_timeout_seconds,
            }
        }
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.profile_name:
            options["profile"] = self.profile_name
        if self.aws_access_key_id:
            options["key"] = self.aws_access_key_id
            options["secret"] = self.aws_secret_access_key
            if self.aws_session_token:
                options["token"] = self.aws_session_token
        if self.region_name:
            options["client_kwargs"] = {"region_name": self.region_name}
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
                "object_store.aws_access_key_id and aws_secret_access_key (or profile_name, or "
                "the instance role) and that they may list the bucket."
            ) from err
        except NoCredentialsError as err:
            raise ObjectStoreError(
                f"no AWS credentials found for S3 bucket {self.bucket!r}{where}. Set "
                "object_store.aws_access_key_id and aws_secret_access_key, or profile_name, or "
                "give the instance a role."
            ) from err
        except Exception as err:  # botocore/aiohttp raise many types for network failures
            raise ObjectStoreError(
                f"cannot reach S3 bucket {self.bucket!r}{where}: {type(err).__name__}: {err}. "
                "Check object_store.endpoint_url, region_name and profile_name."
            ) from err
