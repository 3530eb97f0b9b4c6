"""Inference helpers shared by evaluation, tool use and serving: the one-turn chat prompt, left-padded encoding that
leaves the shared processor as it was, and greedy generation (`inference.generation`)."""

from .generation import chat_text, encode_left_padded, generate_text, generate_texts, greedy_answers

__all__ = ["chat_text", "encode_left_padded", "generate_text", "generate_texts", "greedy_answers"]
