"""Test and demo utilities (like `transformers.testing_utils`): tiny random MAGE models built offline.

Sits just above `modeling_mage` and `processing_mage` and imports nothing else from the project.
"""
