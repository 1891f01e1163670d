"""Checks of the Azure Blob and Google Cloud Storage fields of a storage target (the
fields themselves are on StorageTargetSettings)."""

import json
from typing import Any, Protocol

from pydantic import ConfigDict, SecretStr

HIDE_INPUT = ConfigDict(extra="forbid", hide_input_in_errors=True)
SERVICE_ACCOUNT_FIELDS = ("client_email", "private_key", "token_uri")


class AzureFields(Protocol):
    azure_account_url: Any
    azure_container: str | None
    azure_account_key: SecretStr | None
    azure_sas_token: SecretStr | None


class GcsFields(Protocol):
    gcs_bucket: str | None
    gcs_credentials_json: SecretStr | None
    gcs_endpoint_url: Any


def check_azure_target(name: str, target: AzureFields) -> None:
    needs = [f for f in ("azure_account_url", "azure_container") if not getattr(target, f)]
    if not target.azure_account_key and not target.azure_sas_token:
        needs.append("azure_account_key or azure_sas_token")
    if needs:
        raise ValueError(f"storage target {name!r} (azure) needs {', '.join(needs)}")
    if getattr(target.azure_account_url, "query", None):
        raise ValueError(f"storage target {name!r} (azure): azure_account_url must have no "
                         "query string (a SAS token goes in azure_sas_token)")
    if target.azure_account_key and target.azure_sas_token:
        raise ValueError(f"storage target {name!r} (azure): set azure_account_key or "
                         "azure_sas_token, not both")


def service_account(raw: str) -> dict[str, Any]:
    """The parsed service-account key; errors name what is wrong, never a value."""
    try:
        info = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError("gcs_credentials_json is not JSON (the service account key "
                         "file's content is expected)") from exc
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError('gcs_credentials_json must be a service account key ("type": '
                         '"service_account")')
    missing = [f for f in SERVICE_ACCOUNT_FIELDS if not info.get(f)]
    if missing:
        raise ValueError(f"gcs_credentials_json lacks {', '.join(missing)}")
    return info


def check_gcs_target(name: str, target: GcsFields) -> None:
    if not target.gcs_bucket:
        raise ValueError(f"storage target {name!r} (gcs) needs gcs_bucket")
    if target.gcs_credentials_json is None:
        if target.gcs_endpoint_url is None:
            raise ValueError(f"storage target {name!r} (gcs) needs gcs_credentials_json "
                             "(only an emulator at gcs_endpoint_url runs without)")
        return
    try:
        service_account(target.gcs_credentials_json.get_secret_value())
    except ValueError as exc:
        raise ValueError(f"storage target {name!r} (gcs): {exc}") from None
