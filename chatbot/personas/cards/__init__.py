"""Tavern character cards (V2 `chara_card_v2`, V3 `chara_card_v3`): reading them from their
containers (JSON, PNG, CHARX), validating them, and mapping them onto a persona."""
