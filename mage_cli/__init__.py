"""The `mage` console script: one entry point, one sub-command per capability."""
