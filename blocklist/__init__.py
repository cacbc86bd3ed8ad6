"""The blocked-senders list: the listing policy (`policy`), listings and their history (`listings`),
distribution (`export`), and enforcement at the MTA (`policyd`: a Postfix policy delegation server)."""
