"""The shapes eXeLearning's asset routes take and answer (its field names: camelCase).

An asset is answered with eXeLearning's fields (`id`, `filename`, `mimeType`, `size`,
`componentId`, `clientId`, `folderPath`, `createdAt`, `updatedAt`) and this API's own
(`name`, `sha256`, `content_type`, `created_at`), so either kind of client reads it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from services.gateway.asset_store import AssetOut
from services.gateway.exe_rules import CLIENT_ID_PATTERN
from services.gateway.projects import ProjectPath
from services.gateway.schema import Body, ReplyBody, Text, Timestamp
from shared.db.models import Asset

MAX_BULK_IDS = 1000


class ExeAsset(AssetOut):
    """eXeLearning's fields of an asset, beside this API's."""

    id: int
    filename: str
    mimeType: str
    componentId: None = None
    clientId: str | None
    folderPath: str
    createdAt: Timestamp | None
    updatedAt: Timestamp | None

    @classmethod
    def fields_of(cls, asset: Asset) -> dict[str, Any]:
        return {
            **super().fields_of(asset),
            "id": asset.id,
            "filename": asset.name,
            "mimeType": asset.content_type,
            "clientId": asset.client_id,
            "folderPath": asset.folder_path or "",
            "createdAt": asset.created_at,
            "updatedAt": asset.created_at,  # a replacement sets created_at: it is the last change
        }


class AssetStored(AssetOut):
    """An upload's answer: eXeLearning's `{success, data}` and this API's asset fields."""

    success: bool
    data: ExeAsset

    @classmethod
    def fields_of(cls, asset: Asset) -> dict[str, Any]:
        return {**super().fields_of(asset), "success": True, "data": ExeAsset.of(asset)}


class ClientIdPath(ProjectPath):
    client_id: str = Field(pattern=CLIENT_ID_PATTERN, description="eXeLearning's id of the file")


class AssetForm(BaseModel):
    """POST .../assets: the file, and eXeLearning's optional fields (before or after it)."""

    file: bytes
    clientId: str | None = Field(None, pattern=CLIENT_ID_PATTERN)
    folderPath: Text | None = Field(None, max_length=1024)


class Deleted(ReplyBody):
    success: bool
    deleted: int


class BulkDelete(Body):
    clientIds: list[Annotated[str, Field(pattern=CLIENT_ID_PATTERN)]] = Field(
        max_length=MAX_BULK_IDS
    )


class FileResult(ReplyBody):
    clientId: str
    success: bool
    serverId: int | None = None
    error: str | None = None


class SyncResult(ReplyBody):
    success: bool
    uploaded: int
    failed: int
    results: list[FileResult]


class FileMeta(Body):
    """One entry of a batch's `metadata` (names and types are checked as an upload's are)."""

    clientId: str
    filename: str | None = None
    mimeType: str | None = None
    contentHash: str | None = Field(None, max_length=128)
    folderPath: str | None = None


class SyncForm(BaseModel):
    """POST .../assets/sync and the upload-session batch: `files` matched with `metadata` by
    position."""

    files: list[bytes]
    metadata: str = Field(description="JSON: [{clientId, filename, mimeType, folderPath?}]")
