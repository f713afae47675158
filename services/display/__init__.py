"""The ICU central-station web display (``vigil display``): see docs/display.md."""
