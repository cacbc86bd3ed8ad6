"""Configuration, built once at the edge (CLI) from the environment and arguments; frozen afterwards."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from parsers.limits import DEFAULT_LIMITS, ParseLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ABUSEPIPE_", frozen=True, extra="ignore")

    trusted_networks: tuple[str, ...] = Field(
        default=(), description="CIDRs of the operator's own relays, trusted in the Received walk"
    )
    max_message_bytes: int = DEFAULT_LIMITS.max_message_bytes
    max_parts: int = DEFAULT_LIMITS.max_parts
    max_depth: int = DEFAULT_LIMITS.max_depth
    max_decoded_bytes: int = DEFAULT_LIMITS.max_decoded_bytes

    def parse_limits(self) -> ParseLimits:
        return ParseLimits(
            max_message_bytes=self.max_message_bytes,
            max_parts=self.max_parts,
            max_depth=self.max_depth,
            max_decoded_bytes=self.max_decoded_bytes,
        )
